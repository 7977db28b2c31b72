# shellcheck shell=sh
# Sourced by the entrypoint and the health check, so both agree on the worker's node name.

# The Celery node name of this container's worker: <model>@<container hostname>, with the
# model key made safe for a node name (qwen/qwen3-8b -> qwen-qwen3-8b). LMQ_WORKER_NAME
# overrides the part before the @.
lmq_node_name() {
    name="${LMQ_WORKER_NAME:-$(printf '%s' "${LMQ_MODEL:-worker}" | tr -c 'A-Za-z0-9_.-' '-')}"
    # Docker puts the container's hostname in HOSTNAME; hostname(1) covers other runtimes.
    # shellcheck disable=SC3028
    printf '%s@%s\n' "$name" "${HOSTNAME:-$(hostname)}"
}
