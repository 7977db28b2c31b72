"""Mutable fault-injection state, seeded from config and changed via the admin API."""

from __future__ import annotations

from collections import Counter
from typing import Any

from simulator.config import FailRule, FaultConfig


class Faults:
    def __init__(self, config: FaultConfig) -> None:
        self.reset(config)

    def reset(self, config: FaultConfig | None = None) -> None:
        config = config or FaultConfig()
        self.delay_s = config.delay_s
        self.delay_endpoints = list(config.delay_endpoints)
        self.fail_rules = list(config.fail)
        self.drop_after_fragments = config.drop_after_fragments
        self.drop_times = config.drop_times
        self.slow_prefill_s = config.slow_prefill_s
        self.reply_tokens = config.reply_tokens
        self.cancel_lag_fragments = config.cancel_lag_fragments
        self.seen: Counter[str] = Counter()

    def delay_for(self, endpoint: str) -> float:
        if self.delay_s > 0 and (not self.delay_endpoints or endpoint in self.delay_endpoints):
            return self.delay_s
        return 0.0

    def check_fail(self, endpoint: str) -> str | None:
        """Count a request; return an error title if a rule says this one fails."""
        self.seen[endpoint] += 1
        for rule in self.fail_rules:
            if rule.endpoint == endpoint and rule.nth == self.seen[endpoint]:
                return rule.title
        return None

    def add_fail(self, endpoint: str, nth: int, title: str = "Simulated failure") -> None:
        """Fail the nth request to endpoint counted from now."""
        self.seen[endpoint] = 0
        self.fail_rules.append(FailRule(endpoint=endpoint, nth=nth, title=title))

    def take_drop(self) -> int | None:
        """Fragments after which this prediction's socket is aborted, if any."""
        if self.drop_after_fragments is None or self.drop_times == 0:
            return None
        if self.drop_times is not None:
            self.drop_times -= 1
        return self.drop_after_fragments

    def snapshot(self) -> dict[str, Any]:
        return {
            "delay_s": self.delay_s, "delay_endpoints": self.delay_endpoints,
            "fail": [r.model_dump() for r in self.fail_rules],
            "drop_after_fragments": self.drop_after_fragments, "drop_times": self.drop_times,
            "slow_prefill_s": self.slow_prefill_s, "reply_tokens": self.reply_tokens,
            "cancel_lag_fragments": self.cancel_lag_fragments,
            "seen": dict(self.seen),
        }
