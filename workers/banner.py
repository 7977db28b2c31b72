"""`celery -A workers worker`'s start-up banner, with the broker as configured.

kombu's `Connection.as_uri()` masks a password even when the URL has none and names the
transport class instead of the scheme (`workers.delivery.held_transport:Transport://:**@
127.0.0.1:6379/0`), which reads as if a password were set. The banner shows the broker URL
instead, its password (if any) masked.
"""

from __future__ import annotations

from celery.apps.worker import Worker as CeleryWorker
from kombu.utils.url import maybe_sanitize_url


class Worker(CeleryWorker):  # type: ignore[misc]  # celery is untyped
    def startup_info(self, artlines: bool = True) -> str:
        info: str = super().startup_info(artlines)
        shown = self.app.connection().as_uri()
        return info.replace(shown, str(maybe_sanitize_url(self.app.conf.broker_url)))
