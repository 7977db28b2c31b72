"""Where an SDK-shaped client sends its jobs: settings, a broker URL, or the LMQ_* defaults.

Scripts written for LM Studio pass an LM Studio host (`lms.Client("localhost:1234")`,
`lms.configure_default_client("gpu-box:1234")`). On the pool the workers own that
connection, so a host without a URL scheme is accepted and left to them; a URL
(`redis://...`) names the pool's broker and result backend.
"""

from __future__ import annotations

import logging

from workers.settings import Settings, get_settings

log = logging.getLogger(__name__)

Target = Settings | str | None


def settings_for(target: Target) -> Settings:
    if isinstance(target, Settings):
        return target
    if target is None:
        return get_settings()
    if "://" in target:
        return Settings(broker_url=target, result_backend=target)
    log.info("%r looks like an LM Studio host: the pool's workers connect to LM Studio, "
             "this client uses LMQ_BROKER_URL", target)
    return get_settings()
