"""`lmq metrics show` and `lmq metrics serve`: the pool's metrics without Flower.

`serve` is a Prometheus exporter for the whole pool (every worker counts into Redis, see
`workers.metrics`): one scrape target. Flower's own `/metrics` carries the same `lmq_*`
series when `celery -A workers flower` runs, so deployments with Flower need no exporter.
"""

from __future__ import annotations

import threading

import click

from producers.cli import main
from producers.cli._context import cli_settings, echo_json
from workers.metrics import read_group_metrics, read_model_metrics

DEFAULT_PORT = 9808


@main.group()
def metrics() -> None:
    """The pool's job and GPU metrics (Prometheus)."""


def _avg(value: float | None, unit: str) -> str:
    return f"{value:.3f}{unit}" if value is not None else "-"


@metrics.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(as_json: bool) -> None:
    """Per model: queued, running, succeeded, failed, cancelled and averages."""
    url = cli_settings().store_url
    models, groups = read_model_metrics(url), read_group_metrics(url)
    if as_json:
        echo_json({"models": models, "groups": groups})
        return
    for model, snap in models.items():
        click.echo(
            f"{model}: queued {snap['queued']} running {snap['running']} "
            f"succeeded {snap['succeeded']} failed {snap['failed']} "
            f"cancelled {snap['cancelled']} | tok/s {_avg(snap['tokens_per_second']['avg'], '')} "
            f"ttft {_avg(snap['time_to_first_token_s']['avg'], ' s')} "
            f"queue wait {_avg(snap['queue_wait_s']['avg'], ' s')}"
        )
    for group, figures in groups.items():
        click.echo(
            f"group {group}: budget {figures['budget_bytes']:,} B reserved "
            f"{figures['reserved_bytes']:,} B free {figures['free_bytes']:,} B "
            f"slots in use {figures['slots_in_use']} waiting {figures['waiting']}"
        )


@metrics.command("serve")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True)
@click.option("--address", default="0.0.0.0", show_default=True)
def serve(port: int, address: str) -> None:
    """Serve the pool's metrics at http://ADDRESS:PORT/metrics until interrupted."""
    from prometheus_client import start_http_server

    from workers.prometheus import pool_registry

    server, _thread = start_http_server(port, addr=address,
                                        registry=pool_registry(cli_settings().store_url))
    click.echo(f"serving lmq metrics at http://{address}:{server.server_port}/metrics", err=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
