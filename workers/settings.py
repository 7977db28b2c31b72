"""Every setting of lmstudio-queue, read from `LMQ_*` environment variables and `.env`.

This is the only module that reads the environment. Each field carries a description: the
README's settings table and `lmq config show` are generated from them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import ByteSize, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

GpuOffload = float | Literal["max", "off"]


class Settings(BaseSettings):
    """lmstudio-queue settings (environment prefix `LMQ_`)."""

    model_config = SettingsConfigDict(
        env_prefix="LMQ_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- Redis and Celery -------------------------------------------------------------
    broker_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Celery broker URL (redis://, rediss:// or amqp://).",
    )
    result_backend: str | None = Field(
        None, description="Celery result backend URL; defaults to the broker URL when it is Redis."
    )
    redis_url: str | None = Field(
        None,
        description="Redis for progress streams, admission leases and batch counters; "
        "defaults to the result backend.",
    )
    result_expires_s: int = Field(7 * 24 * 3600, description="How long job results are kept.")
    visibility_timeout_s: int = Field(
        4 * 3600,
        description="Redis redelivers an unacknowledged job after this long: keep it above "
        "the longest job.",
    )

    hold_lease_s: float = Field(
        8.0, gt=0, description="A worker's lease on the jobs it holds (Redis broker): when it "
        "stops renewing it (killed), a live worker puts those jobs back on their queue after "
        "this long, instead of after the visibility timeout."
    )

    tenant: str | None = Field(
        None, description="The tenant label of the jobs this process submits when a call "
        "names none. At equal priority, workers take next from the tenant with the least "
        "recent usage (fair share: its recent takes, older ones counting less), so one "
        "tenant's backlog does not hold another's few jobs behind it; jobs without a tenant "
        "are one tenant of their own. Redis broker only."
    )
    tenant_max_running: int | None = Field(
        None, ge=1, description="Worker: at most this many jobs of one tenant run at once "
        "across the pool (the worker skips a tenant at its cap and takes another's job); "
        "unset: no cap. Set it alike on every worker of a queue. Redis broker only."
    )
    priority_aging_s: float = Field(
        300.0, ge=0, description="A job that waited longer than this counts one priority "
        "level higher (low as normal, normal as high), so nothing starves; 0: no aging. "
        "Redis broker only."
    )

    # --- LM Studio ----------------------------------------------------------------------
    lmstudio_host: str = Field(
        "localhost:1234", description="LM Studio API host:port (the SDK never probes 1234)."
    )
    model: str | None = Field(
        None, description="The model key a worker is pinned to (one worker process per model)."
    )
    context_length: int | None = Field(
        None, description="Context length to load the model with (LM Studio default if unset)."
    )
    gpu_offload: GpuOffload | None = Field(
        None, description="GPU offload ratio 0..1, or 'max' / 'off' (LM Studio default if unset)."
    )
    # NoDecode: the worker parses the JSON itself, so a typo is one line at its start
    # (naming the key) rather than a settings traceback in every process.
    load_config: Annotated[dict[str, Any] | str | None, NoDecode] = Field(
        None, description="The model's load config, JSON in the SDK's LlmLoadModelConfig "
        "keys, e.g. {\"flashAttention\": true, \"llamaKCacheQuantizationType\": \"q8_0\"}; "
        "checked against the SDK's schema at worker start. LMQ_CONTEXT_LENGTH and "
        "LMQ_GPU_OFFLOAD fill in contextLength and gpu.ratio."
    )
    unload_on_shutdown: bool = Field(
        False, description="Unload the pinned model when the worker shuts down."
    )
    sdk_timeout_s: float = Field(
        120.0, description="Max wait for the next message from LM Studio (SDK, process-wide)."
    )
    connect_backoff_max_s: float = Field(
        30.0, description="Longest pause between attempts to reach LM Studio at worker start."
    )

    # --- Jobs ---------------------------------------------------------------------------
    job_max_retries: int = Field(
        3, description="Retries of a job after a transient LM Studio failure (dropped socket)."
    )
    job_retry_backoff_s: float = Field(1.0, description="First retry delay; doubles each time.")
    max_prompt_chars: int = Field(
        2_000_000, description="Largest prompt (characters, all messages) a job may carry."
    )
    max_embed_texts: int = Field(4096, description="Most texts one embedding job may carry.")
    embed_concurrency: int = Field(
        8, description="Embedding requests a worker keeps in flight for one job."
    )
    local_count_max_tokens: int = Field(
        1024, ge=0, description="Prompts whose local upper bound of tokens (UTF-8 bytes plus "
        "the template's overhead) is at most this, and fits the context and the GPU memory "
        "admission last saw free, skip LM Studio's exact count (2 RPCs); 0 counts every "
        "prompt through LM Studio."
    )
    concurrency: int | None = Field(
        None, description="Jobs a worker runs at once (each a greenlet on its SDK loop); when "
        "unset, LMQ_SLOTS plus LMQ_PREFETCH_THREADS (GPU memory is enforced per job by "
        "admission, not by fewer jobs)."
    )
    prefetch_threads: int = Field(
        2, ge=0, description="Jobs at once beyond the slots: they receive the next jobs while "
        "the slots predict (predictions stay at most LMQ_SLOTS per worker)."
    )

    # --- GPU-memory-aware admission ------------------------------------------------------
    admission: bool = Field(True, description="Admit predictions only when their KV cache fits.")
    gpu_memory: ByteSize | None = Field(
        None, description="GPU memory of the LM Studio host (e.g. 24GiB): guards model loads "
        "and, on engines that grow KV per token (MLX), each job's KV. Unset: NVML, Apple "
        "unified memory or AMD SMI when LM Studio runs on this host, else unknown (jobs are "
        "still admitted by the loaded instance's KV cells and slots; model loads unguarded)."
    )
    gpu_reserve: ByteSize | None = Field(
        None, description="GPU memory kept free; default the larger of 1 GiB and 10%."
    )
    slots: int = Field(
        4, ge=1, description="Concurrent predictions per model (LM Studio's Max Concurrent "
        "Predictions): the most one worker runs, and the loaded instance's parallel "
        "predictions when LM Studio does not report them."
    )
    kv_bytes_per_token: int | None = Field(
        None, description="KV-cache bytes per token when the model's GGUF file is unreadable."
    )
    admission_group: str | None = Field(
        None, description="Workers sharing one GPU budget; defaults to the LM Studio host."
    )
    lease_ttl_s: float = Field(
        15.0, description="Admission leases of a dead worker expire after this long."
    )
    wait_for_fit_on_load: bool = Field(
        False, description="Wait (instead of failing) when loading a model would not fit."
    )
    admission_lookahead: int = Field(
        24, ge=0, description="Jobs a worker takes beyond its threads while jobs of its wait "
        "because their KV does not fit (one per such job, at most this many): smaller jobs "
        "behind them can then run beside the running ones. 0: off."
    )

    # --- Cancellation and Flower ---------------------------------------------------------
    cancel_poll_s: float = Field(
        0.5, description="How often running jobs are checked against the revoked set when "
        "nothing wakes the check: a revoke the worker hears wakes it at once."
    )
    flower_basic_auth: SecretStr | None = Field(
        None, description="Flower basic auth, user:password[,user2:password2]. Flower refuses "
        "to start without auth (this, or Flower's own --basic-auth/--auth) unless "
        "LMQ_FLOWER_ALLOW_NO_AUTH is true."
    )
    flower_allow_no_auth: bool = Field(
        False, description="Local development only: let Flower start without any auth; it "
        "then listens on 127.0.0.1 and keeps its HTTP API (Revoke/Terminate) off."
    )
    flower_max_tasks: int = Field(10_000, description="Tasks Flower keeps in memory.")
    flower_port: int = Field(5555, description="Port Flower listens on.")

    # --- The OpenAI-compatible gateway (`lmq serve`) --------------------------------------
    api_keys: SecretStr | None = Field(
        None, description="API keys of `lmq serve`, comma-separated KEY=TENANT[:PRIORITY] "
        "(PRIORITY high, normal or low; default normal); KEY may be given as sha256:<hex> "
        "(`lmq serve --hash-key KEY` prints it) so the plain key need not be stored. Clients "
        "send `Authorization: Bearer KEY`. Unset: no auth, and the gateway listens on "
        "127.0.0.1 only."
    )
    max_queued: int = Field(
        10_000, ge=1, description="`lmq serve` answers 503 (with Retry-After) instead of "
        "queueing a request when more than this many jobs wait in the model's queue."
    )
    gateway_host: str = Field(
        "0.0.0.0", description="Address `lmq serve` listens on (127.0.0.1 when LMQ_API_KEYS "
        "is unset)."
    )
    gateway_port: int = Field(8080, description="Port `lmq serve` listens on.")
    gateway_fetch_private_images: bool = Field(
        False, description="Let `lmq serve` download image links whose host resolves to a "
        "loopback, private, link-local, multicast or otherwise reserved address (at any "
        "redirect hop). Off: such a link is a 400, so callers cannot make the gateway reach "
        "internal services (SSRF)."
    )

    @field_validator("lmstudio_host")
    @classmethod
    def _strip_scheme(cls, host: str) -> str:
        # Users paste URLs; the SDK wants host:port.
        for prefix in ("http://", "https://", "ws://"):
            host = host.removeprefix(prefix)
        return host.rstrip("/")

    @property
    def backend_url(self) -> str:
        if self.result_backend:
            return self.result_backend
        if self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return "redis://127.0.0.1:6379/0"

    @property
    def store_url(self) -> str:
        """Redis URL for our own keys (progress, admission, batches)."""
        return self.redis_url or self.backend_url

    @property
    def group(self) -> str:
        return self.admission_group or self.lmstudio_host


SECRET_FIELDS = ("broker_url", "result_backend", "redis_url", "flower_basic_auth", "api_keys")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
