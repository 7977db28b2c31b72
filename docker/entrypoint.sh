#!/bin/sh
# Entrypoint of the lmstudio-queue image.
#   worker [celery worker options]   a worker pinned to $LMQ_MODEL (the default command)
#   flower [flower options]          the Flower dashboard, basic auth from $LMQ_FLOWER_BASIC_AUTH
#   gateway [lmq serve options]      the OpenAI-compatible gateway, keys from $LMQ_API_KEYS
#   anything else                    run as given (e.g. `lmq doctor`, `lmq config show`)
# Each branch execs, so Celery receives the stop signal directly (compose adds `init: true`
# for zombie reaping): SIGTERM is Celery's warm shutdown.
set -eu
# shellcheck source=SCRIPTDIR/node-name.sh
. /usr/local/lib/lmq/node-name.sh

command="${1:-worker}"
if [ "$#" -gt 0 ]; then
    shift
fi

case "$command" in
    worker)
        : "${LMQ_MODEL:?set LMQ_MODEL to the LM Studio model key this worker serves}"
        exec celery -A workers worker --hostname "$(lmq_node_name)" --loglevel INFO "$@"
        ;;
    flower)
        : "${LMQ_FLOWER_BASIC_AUTH:?set LMQ_FLOWER_BASIC_AUTH (user:password): Flower ships with auth on}"
        exec celery -A workers flower --address=0.0.0.0 "$@"
        ;;
    gateway)
        # Without keys the gateway serves 127.0.0.1 only: unreachable from outside the
        # container, so a container gateway needs them.
        : "${LMQ_API_KEYS:?set LMQ_API_KEYS (KEY=TENANT[:PRIORITY],...): the gateway in a container needs keys}"
        exec lmq serve --host 0.0.0.0 "$@"
        ;;
    *)
        exec "$command" "$@"
        ;;
esac
