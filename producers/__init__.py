"""lmstudio-queue producers: enqueue jobs, await results, the `lmq` CLI."""
