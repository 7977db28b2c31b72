"""`celery -A tests.faults.prefixed_workers worker`: the workers app under a broker key prefix.

A deployment sets kombu's `global_keyprefix` the same way: in the app's transport options.
"""

from __future__ import annotations

from tests.faults.support import KEY_PREFIX
from workers.celery import app

app.conf.broker_transport_options = {**app.conf.broker_transport_options,
                                     "global_keyprefix": KEY_PREFIX}
