#!/bin/sh
# Container health check.
#   lmq-healthcheck [worker]   the worker answers a Celery ping addressed to its node name
#                              within HEALTHCHECK_TIMEOUT_S (default 10) seconds
#   lmq-healthcheck flower     Flower answers GET /healthcheck (no auth needed for that path)
#   lmq-healthcheck gateway    `lmq serve` answers GET /health with 200 (Redis reachable)
set -eu
# shellcheck source=SCRIPTDIR/node-name.sh
. /usr/local/lib/lmq/node-name.sh

case "${1:-worker}" in
    worker)
        exec celery -A workers inspect ping --destination "$(lmq_node_name)" \
            --timeout "${HEALTHCHECK_TIMEOUT_S:-10}"
        ;;
    flower)
        exec python -c 'import sys, urllib.request
url = "http://127.0.0.1:%s/healthcheck" % sys.argv[1]
sys.exit(0 if urllib.request.urlopen(url, timeout=5).read() == b"OK" else 1)' \
            "${LMQ_FLOWER_PORT:-5555}"
        ;;
    gateway)
        exec python -c 'import sys, urllib.request
url = "http://127.0.0.1:%s/health" % sys.argv[1]
sys.exit(0 if urllib.request.urlopen(url, timeout=5).status == 200 else 1)' \
            "${LMQ_GATEWAY_PORT:-8080}"
        ;;
    *)
        echo "usage: lmq-healthcheck [worker|flower|gateway]" >&2
        exit 2
        ;;
esac
