"""A multi-disk OVA (a VM with data disks): one volume per disk, in one run, through the same steps.

The per-disk steps run once per disk, each time on a *disk view* of the step's context: a
:class:`~vdimport_worker.context.StepContext` whose state shows that disk's inspection (its
source, its volume's name and size) and that disk's results of the earlier per-disk steps, and
whose names see only that disk's volume (the ``vdimport-disk`` tag). So the step functions stay
what they are for one disk: they import "the" disk.

For a multi-disk import a per-disk step's result is ``{"disks": {"1": result, "2": ...}}``; an
import of one disk keeps the plain shapes, and its only view is the run's context itself. The
disks go one after the other, and a failed step is retried as a whole: each disk's part is
idempotent (a volume made, an attachment attached, a file downloaded are found again; a write
is redone), so a failure on disk 2 never leaves disk 1 in a state the next steps would trust.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import StepContext

log = logging.getLogger("vdimport")

PER_DISK = (
    "download_image",
    "create_volume",
    "attach_volume",
    "write_image",
    "verify_image",
    "fsck_volume",
    "detach_volume",
    "tune_volume",
    "assign_backup_policy",
)


def disk_entries(inspected: dict[str, Any] | None) -> list[dict[str, Any]]:
    """inspect_object's ``disks``: one entry per disk of a multi-disk OVA, else empty."""
    disks = (inspected or {}).get("disks")
    return [d for d in disks if isinstance(d, dict)] if isinstance(disks, list) else []


def project(state: dict[str, dict[str, Any]], disk: int) -> dict[str, dict[str, Any]]:
    """The state as disk ``disk``'s steps see it (``state`` is already merged, so no ``refreshed``)."""
    view: dict[str, dict[str, Any]] = {}
    for step, result in state.items():
        if step == "inspect_object":
            view[step] = inspection_of(result, disk)
        elif step in PER_DISK:
            mine = (result.get("disks") or {}).get(str(disk))
            if isinstance(mine, dict):
                view[step] = mine
        else:
            view[step] = {key: value for key, value in result.items() if key != "refreshed"}
    return view


def inspection_of(inspected: dict[str, Any], disk: int) -> dict[str, Any]:
    """inspect_object's result for one disk: that disk's source, volume name and size."""
    entries = disk_entries(inspected)
    if not 1 <= disk <= len(entries) or entries[disk - 1].get("number") != disk:
        from .context import Rejected

        raise Rejected(f"inspect_object's result has no disk {disk}: it is not one inspect_object wrote")
    entry = entries[disk - 1]
    plan = {**inspected["plan"], "volume_name": entry["volume_name"], "volume_size_gb": entry["volume_size_gb"]}
    return {**inspected, "source": entry["source"], "plan": plan}


def with_disk(combined: dict[str, Any] | None, disk: int, result: dict[str, Any]) -> dict[str, Any]:
    """A per-disk step's combined result with disk ``disk``'s part set to ``result``."""
    combined = {k: v for k, v in (combined or {}).items() if k not in ("refreshed", "seconds", "step")}
    return {**combined, "disks": {**(combined.get("disks") or {}), str(disk): result}}


def each_disk(step: str, ctx: StepContext, run_one: Callable[[StepContext], dict[str, Any]]) -> dict[str, Any]:
    """Run per-disk ``step`` for every disk of the run, one disk view after the other."""
    count = ctx.disk_count
    parts: dict[str, Any] = {}
    for disk in range(1, count + 1):
        log.info("Disk %d of %d", disk, count)
        view = ctx.disk_view(disk)
        parts[str(disk)] = {**run_one(view), "run_key": ctx.names.key}
        ctx.absorb(view, disk)
    return {"disks": parts}
