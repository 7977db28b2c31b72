"""`lmq gpu`: per LM Studio host group, the GPU budget and what admission holds of it."""

from __future__ import annotations

import click

from producers.cli import main
from producers.cli._context import cli_settings, echo_json
from workers.admission.status import GroupStatus, InstanceStatus, all_status, group_status

GIB = 1024**3
# Written out here: producers may read admission's status, not its budget module.
UNKNOWN_ADVICE = "host memory unknown: set LMQ_GPU_MEMORY to guard model loads"


def _gib(nbytes: int) -> str:
    return f"{nbytes / GIB:.2f} GiB"


def _per_model(counts: dict[str, int]) -> str:
    return ", ".join(f"{model}={n}" for model, n in sorted(counts.items())) or "-"


def _budget_lines(status: GroupStatus) -> list[str]:
    if not status.host_memory_known:
        return [f"  budget        {UNKNOWN_ADVICE}"]
    return [f"  budget        {_gib(status.budget_bytes)}  ({status.budget_bytes:,} bytes)"]


def render_instance(inst: InstanceStatus) -> list[str]:
    kv = "unified" if inst.unified else f"per sequence, {inst.seq_cells:,} each"
    return [
        f"  instance {inst.identifier} ({inst.model})",
        f"    KV cells    {inst.cells:,} ({kv}), {inst.parallel} parallel  ({inst.source})",
        f"    reserved    {inst.reserved_cells:,} cells, free {inst.free_cells:,}",
        f"    slots       {inst.slots_in_use} in use of {inst.parallel}, {inst.waiting} waiting",
    ]


def render(status: GroupStatus) -> list[str]:
    free = _gib(status.free_bytes) if status.host_memory_known else "unknown"
    return [
        f"group {status.group}",
        *_budget_lines(status),
        f"  reserved      {_gib(status.reserved_bytes)}  (weights "
        f"{_gib(status.weights_bytes)}, KV {_gib(status.kv_bytes)})",
        f"  free          {free}",
        f"  models        {_per_model({m: b // 2**20 for m, b in status.models.items()})}"
        + (" (MiB)" if status.models else ""),
        f"  slots in use  {sum(status.slots_in_use.values())}  "
        f"({_per_model(status.slots_in_use)})",
        f"  waiting jobs  {status.waiting_jobs}  ({_per_model(status.waiting)})",
        *[line for inst in status.instances for line in render_instance(inst)],
    ]


@main.command()
@click.option("--group", default=None, help="Only this host group (default: every group).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def gpu(group: str | None, as_json: bool) -> None:
    """Per host group: GPU budget, reserved and free memory, slots in use and waiting jobs;
    per loaded instance in it: KV cells, reserved and free cells, parallel slots."""
    url = cli_settings().store_url
    found = [group_status(url, group)] if group else all_status(url)
    if as_json:
        echo_json([status.to_dict() for status in found])
        return
    if not found:
        click.echo("no admission groups yet: no worker with LMQ_ADMISSION on has started")
        return
    for status in found:
        click.echo("\n".join(render(status)))
