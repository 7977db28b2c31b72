"""Helpers of `ops/bench` (the one-command benchmark report): stack, memory, figures."""
