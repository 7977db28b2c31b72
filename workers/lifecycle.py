"""Worker start-up and shutdown: the LM Studio session, admission gate and cancel watcher.

`LMStudioStep` is a worker bootstep that starts after the pool and before the consumer, so
the worker consumes no job until LM Studio serves its model. At start it:

0. restores the jobs a previous process with this hostname held, and takes its lease on the
   jobs it will hold (`workers.delivery.redelivery`, Redis brokers only);
1. requires LMQ_MODEL (exit 78 with a clear message otherwise);
2. sets the SDK timeout (`Session.set_timeout(LMQ_SDK_TIMEOUT_S)`: the longest wait for LM
   Studio's next message);
3. opens one scoped `lms.AsyncClient(LMQ_LMSTUDIO_HOST)` on the process's SDK event loop
   thread (`workers.lmstudio.loop`). LM Studio unreachable: one clear
   ERROR line, then retries with doubling backoff capped at LMQ_CONNECT_BACKOFF_MAX_S;
   SIGTERM/SIGINT still stop the worker while it waits;
4. finds the model in `system.listDownloadedModels`; not downloaded: exit 78 naming the
   available models; builds its load config (LMQ_LOAD_CONFIG checked by the SDK's schema,
   plus LMQ_CONTEXT_LENGTH / LMQ_GPU_OFFLOAD: `workers.lmstudio.load_config`); a wrong
   key or value: exit 78 naming it;
5. builds the admission gate (`workers.admission.build_gate`) behind this process's slot
   limit (`workers.admission.seam.SlotLimit`) and calls `before_load()`; host memory unknown
   (no LMQ_GPU_MEMORY, and no NVML / Apple / AMD reading): one WARNING line, and admission by
   slots only;
6. gets or loads the model with that load config (LM Studio refusing it: exit 78 with its
   one-line reason), warms the llm, embedding and system namespaces from this one thread,
   measures the prompt template's token overhead (`workers.jobs.prompt_bound`), and logs
   what it serves;
7. tells the gate what the model was loaded with (context length, KV cache types, as LM
   Studio reports them, else as sent), and checks the pool
   size (`worker_threads`): Celery created it with LMQ_CONCURRENCY or LMQ_SLOTS +
   LMQ_PREFETCH_THREADS threads; a smaller count from the rule would shrink it (the pool
   and the prefetch count) before the consumer starts. GPU memory lowers it only when the
   budget cannot hold LMQ_SLOTS short jobs (`workers.admission.thread_count`): the
   group's semaphore admits each job by its own KV. The pool gets LMQ_ADMISSION_LOOKAHEAD
   threads more, for the jobs the worker takes while its jobs wait for KV
   (`workers.admission.lookahead`: the prefetch grows by one per such job). From here the
   pool runs its jobs as greenlets on the SDK loop (`workers.delivery.pool`);
8. registers the worker as serving its model (`workers.served_registry`), so producers'
   served check is one Redis read.

While it serves, LM Studio lost for good (a job's retries exhausted) stops the consumer
until reconnecting succeeds (`workers.lmstudio.outage`).

At shutdown (`worker_shutdown`, after the pool finished its jobs) it stops the watcher,
closes the client (unloading the model if LMQ_UNLOAD_ON_SHUTDOWN) and closes the gate.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import redis
from celery import bootsteps
from celery.signals import worker_shutdown
from celery.worker import state as worker_state

from workers import redis_pool
from workers.admission import Lookahead, build_gate, thread_count
from workers.admission.seam import ModelFacts, SlotLimit
from workers.contract import queue_name
from workers.delivery import cancel, redelivery
from workers.error import (
    BadJobError,
    ConfigError,
    JobFailedError,
    LMStudioUnavailableError,
)
from workers.jobs.runtime import Runtime
from workers.jobs.runtime import install as install_runtime
from workers.lmstudio import load_config
from workers.lmstudio.outage import Outage
from workers.lmstudio.session import DownloadedModel, LoadedModel, Session
from workers.served_registry import Registration
from workers.settings import Settings, get_settings

log = logging.getLogger("workers.lifecycle")

EXIT_CONFIG = 78  # sysexits EX_CONFIG: fix the configuration, restarting will not help
_POLL_S = 0.1


class LMStudioStep(bootsteps.StartStopStep):
    """Connect to LM Studio before the consumer starts taking jobs."""

    requires = ("celery.worker.components:Pool",)
    label = "LM Studio"

    def start(self, parent: Any) -> None:
        # First: a previous process with this hostname may have died holding jobs.
        redelivery.start(parent.app, parent.hostname, get_settings().hold_lease_s)
        settings = get_settings()
        lookahead = Lookahead(settings.admission_lookahead if settings.admission else 0,
                              lambda extra: _set_extra_prefetch(parent, extra))
        rt = start_runtime(parent.hostname, app=parent.app, lookahead=lookahead)
        attach = getattr(parent.pool, "attach", None)  # not with `-P threads`
        if attach is not None:
            attach(rt.session.loop.loop)  # the jobs run on the SDK loop from now on
        _size_pool(parent, rt.threads, lookahead.limit)


def start_runtime(hostname: str, settings: Settings | None = None,
                  app: Any = None, lookahead: Lookahead | None = None) -> Runtime:
    settings = settings or get_settings()
    if not settings.model:
        _exit("LMQ_MODEL is not set: set it to the model key this worker serves "
              "(see `lmq models`), e.g. LMQ_MODEL=llama-3.2-1b-instruct")
    Session.set_timeout(settings.sdk_timeout_s)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per websocket otherwise
    session = connect_with_backoff(settings)
    model = _find_model(session, settings.model)  # type: ignore[arg-type]
    config = _load_config(settings, session, model)
    facts = _facts(settings, model, config)
    predictions = settings.slots if settings.concurrency else thread_count(settings, facts)
    gate = SlotLimit(build_gate(settings, facts, lookahead), predictions)
    try:
        gate.before_load()
        loaded = session.load(model, config)
        session.warm()
        session.measure_overhead()
    except BadJobError as exc:
        session.close()
        _exit(f"cannot serve {model.key}: {exc}")
    except JobFailedError as exc:  # LM Studio refused the load config (a key or a value)
        session.close()
        _exit(f"LM Studio did not load {model.key} with load config {config}: {exc}")
    facts = _loaded_facts(facts, session, loaded, config)
    gate.loaded(facts)
    threads = worker_threads(settings, facts, predictions)
    client, outage = _redis(settings), _outage(app, hostname, settings, session)
    rt = Runtime(settings=settings, session=session, gate=gate,
                 redis=client, watcher=cancel.watcher(settings.cancel_poll_s),
                 hostname=hostname, outage=outage, threads=threads,
                 registration=_register(client, settings.model, hostname, outage))
    install_runtime(rt)
    log.info("serving %s model %s as %r (context length %d) from LM Studio at %s",
             loaded.kind, loaded.key, loaded.identifier, loaded.context_length, session.host)
    return rt


def worker_threads(settings: Settings, facts: ModelFacts, predictions: int | None = None) -> int:
    """LMQ_CONCURRENCY, else predictions at once plus LMQ_PREFETCH_THREADS.

    Predictions at once: `workers.admission.thread_count` (LMQ_SLOTS, fewer on a budget too
    small for that many short jobs), or `predictions` when the caller has it already. The
    prefetch threads receive the next jobs meanwhile, and hold jobs behind those waiting
    for GPU memory.
    """
    if settings.concurrency:
        return settings.concurrency
    if predictions is None:
        predictions = thread_count(settings, facts)
    return predictions + settings.prefetch_threads


def _size_pool(worker: Any, threads: int, lookahead: int = 0) -> None:
    """Shrink the pool and the prefetch to `threads` (Celery sized them from settings), and
    let the pool run `lookahead` more: the jobs taken while jobs wait for KV
    (`workers.admission.lookahead`) need threads of their own, but the prefetch's base and
    the pool's reported size stay `threads`.

    Celery reads `worker_concurrency` before any bootstep runs, but the thread count needs
    the loaded model; the pool starts no thread before a job is applied, and the consumer
    reads `initial_prefetch_count` when it starts, after this step: both take the new size.
    """
    pool = getattr(worker, "pool", None)
    if threads < worker.concurrency and hasattr(pool, "resize"):
        pool.resize(threads)
        worker.concurrency = threads
        consumer = getattr(worker, "consumer", None)
        if consumer is not None and consumer.initial_prefetch_count:
            consumer.initial_prefetch_count = threads * consumer.prefetch_multiplier
    add_threads = getattr(pool, "add_threads", None)
    if lookahead and add_threads is not None:
        add_threads(lookahead)
    log.info("%d jobs at once in the pool (LMQ_CONCURRENCY, else LMQ_SLOTS + %d prefetch), and "
             "up to %d more while jobs wait for KV (LMQ_ADMISSION_LOOKAHEAD)", threads,
             get_settings().prefetch_threads, lookahead)


def _set_extra_prefetch(worker: Any, extra: int) -> None:
    """The consumer's prefetch count: its base plus `extra` jobs of the lookahead
    (`workers.admission.lookahead`). Set from a job's thread; the consumer's event loop
    applies it (woken through its hub), as it does Celery's own prefetch changes."""
    consumer = getattr(worker, "consumer", None)
    qos = getattr(consumer, "qos", None)
    if consumer is None or qos is None or not consumer.initial_prefetch_count:
        return  # not consuming yet, or prefetch off (unlimited)
    with qos._mutex:
        qos.value = consumer.initial_prefetch_count + extra * consumer.prefetch_multiplier
    hub = getattr(consumer, "hub", None)
    if hub is not None:
        hub.call_soon(qos.update)


def connect_with_backoff(settings: Settings) -> Session:
    """Open the session; while LM Studio is down, wait and retry (stop on shutdown)."""
    delay_s, down_since = 1.0, None
    while True:
        session = Session(settings.lmstudio_host)
        try:
            session.open()
        except LMStudioUnavailableError as exc:
            if down_since is None:
                down_since = time.monotonic()
                log.error("LM Studio is not reachable at %s: waiting for it, retrying with "
                          "backoff up to %.1fs and taking no jobs meanwhile (cause: %s)",
                          settings.lmstudio_host, settings.connect_backoff_max_s, exc)
            _sleep_unless_shutdown(delay_s)
            delay_s = min(delay_s * 2, settings.connect_backoff_max_s)
            continue
        if down_since is not None:
            log.info("LM Studio at %s is reachable after %.1fs", settings.lmstudio_host,
                     time.monotonic() - down_since)
        return session


def stop_runtime(**_: Any) -> None:
    """Close everything start_runtime opened (idempotent)."""
    rt = install_runtime(None)
    if rt is None:
        return
    rt.watcher.stop()
    if rt.registration is not None:
        rt.registration.stop()
    if rt.outage is not None:
        rt.outage.stop()
    try:
        rt.session.close(unload=rt.settings.unload_on_shutdown)
    finally:
        try:
            rt.gate.close()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Ctrl-C while Redis is down: one line, not Celery's chained tracebacks
            log.warning("shutdown: GPU leases not released, Redis unreachable (%s); they "
                        "expire after LMQ_LEASE_TTL_S", exc)
        if rt.redis is not None:
            rt.redis.close()
    log.info("closed the LM Studio session")


worker_shutdown.connect(stop_runtime, weak=False, dispatch_uid="lmq-lifecycle-stop")


def _find_model(session: Session, key: str) -> DownloadedModel:
    models = session.downloaded()
    for model in models:
        if model.key == key:
            return model
    available = ", ".join(sorted(m.key for m in models)) or "none"
    session.close()
    _exit(f"model {key!r} is not downloaded on LM Studio at {session.host}; "
          f"available models: {available}. Set LMQ_MODEL to one of them.")
    raise AssertionError("unreachable")


def _load_config(settings: Settings, session: Session, model: DownloadedModel
                 ) -> dict[str, Any]:
    try:
        return load_config.build(model.kind, settings.load_config, settings.context_length,
                                 settings.gpu_offload)
    except ConfigError as exc:
        session.close()
        _exit(f"cannot load {model.key}: {exc}")
        raise AssertionError("unreachable") from exc


def _facts(settings: Settings, model: DownloadedModel, config: dict[str, Any]) -> ModelFacts:
    offload = (config.get("gpu") or {}).get("ratio")
    ratio: float | None = ({"max": 1.0, "off": 0.0}[offload] if isinstance(offload, str)
                           else offload)
    kv = load_config.kv_facts(config)
    return ModelFacts(model_key=model.key, size_bytes=model.size_bytes, path=model.path,
                      architecture=model.architecture,
                      context_length=config.get("contextLength"),
                      offload_ratio=ratio, is_embedding=model.kind == "embedding",
                      k_cache_type=kv.k_cache_type, v_cache_type=kv.v_cache_type,
                      kv_on_gpu=kv.kv_on_gpu, engine=load_config.engine_of(model.format))


def _loaded_facts(facts: ModelFacts, session: Session, loaded: LoadedModel,
                  sent: dict[str, Any]) -> ModelFacts:
    """The facts as LM Studio loaded the model: its context length (not the model's max),
    the KV cache types it reports, else those we sent (a server that leaves them out), and
    its parallel predictions and unified KV (None when it does not say: admission then
    assumes LMQ_SLOTS and a per-sequence cache)."""
    kv = load_config.kv_facts({**sent, **loaded.load_config})
    parallel, unified = load_config.parallel_facts(session.instance_load_fields())
    return replace(facts, context_length=loaded.context_length,
                   k_cache_type=kv.k_cache_type, v_cache_type=kv.v_cache_type,
                   kv_on_gpu=kv.kv_on_gpu, identifier=loaded.identifier,
                   parallel=parallel, unified_kv=unified)


def _outage(app: Any, hostname: str, settings: Settings, session: Session) -> Outage | None:
    if app is None or not settings.model:
        return None
    return Outage(app, hostname, queue_name(settings.model),
                  lambda: session.recover(session.generation), settings.connect_backoff_max_s)


def _register(client: redis.Redis | None, model: str, hostname: str,
              outage: Outage | None) -> Registration | None:
    if client is None:
        return None
    serving = (lambda: not outage.down.is_set()) if outage is not None else (lambda: True)
    return Registration(client, model, hostname, serving).start()


def _redis(settings: Settings) -> redis.Redis | None:
    try:
        return redis_pool.client(settings.store_url, yields=True, socket_timeout=10,
                                 health_check_interval=30)
    except (ValueError, redis.RedisError) as exc:
        log.warning("no Redis for progress streams (%s): %s", settings.store_url, exc)
        return None


def _sleep_unless_shutdown(delay_s: float) -> None:
    deadline = time.monotonic() + delay_s
    while time.monotonic() < deadline:
        if worker_state.should_stop is not None or worker_state.should_terminate is not None:
            log.info("shutdown requested while waiting for LM Studio")
            raise SystemExit(0)
        time.sleep(_POLL_S)


def _exit(message: str) -> None:
    log.error(message)
    raise SystemExit(EXIT_CONFIG)
