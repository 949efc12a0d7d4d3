"""The import steps, in the order the DAG runs them, and when an earlier result stops holding."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..context import StepContext
from .data import download_image, fsck_volume, stale_download, verify_image, write_image
from .data import stale_check as data_stale_check
from .inspect import inspect_object
from .outcome import tell_outcome
from .reaper import reap, reap_scan
from .report import report
from .volume import assign_backup_policy, attach_volume, create_volume, detach_volume, stale_attachment, stale_volume, tune_volume
from .worker import launch_worker, stale_ready, stale_worker, terminate_worker, wait_worker_ready

Step = Callable[[StepContext], dict[str, Any]]

STEPS: dict[str, Step] = {
    "inspect_object": inspect_object,
    "launch_worker": launch_worker,
    "wait_worker_ready": wait_worker_ready,
    "download_image": download_image,
    "create_volume": create_volume,
    "attach_volume": attach_volume,
    "write_image": write_image,
    "verify_image": verify_image,
    "fsck_volume": fsck_volume,
    "detach_volume": detach_volume,
    "terminate_worker": terminate_worker,
    "tune_volume": tune_volume,
    "assign_backup_policy": assign_backup_policy,
    "report": report,
}
STEP_NAMES = tuple(STEPS)
CLEANUP_STEP = "terminate_worker"
# The steps that make or use the worker and write the volume: once the volume is delivered
# (verified and detached) they report so and touch nothing.
DATA_PATH = STEP_NAMES[STEP_NAMES.index("launch_worker") : STEP_NAMES.index("detach_volume") + 1]

# Not import steps (no run key, no request): the import DAG's outcome and the reaper
# DAG's (``vdimport_reaper``) two steps, run with the same CLI and image.
MAINTENANCE: dict[str, Callable[..., dict[str, Any]]] = {"outcome": tell_outcome, "reap_scan": reap_scan, "reap": reap}

# Why an earlier step's result no longer holds (None: it does); see StepContext.need.
STALENESS: dict[str, Callable[[StepContext, dict[str, Any]], str | None]] = {
    "launch_worker": stale_worker,
    "wait_worker_ready": stale_ready,
    "download_image": stale_download,
    "create_volume": stale_volume,
    "attach_volume": stale_attachment,
    "write_image": data_stale_check,
    "verify_image": data_stale_check,
    "fsck_volume": data_stale_check,
}


def staleness(ctx: StepContext, step: str, result: dict[str, Any]) -> str | None:
    check = STALENESS.get(step)
    if check is None:
        raise ValueError(f"{step} is not a step whose result can be re-provisioned")
    return check(ctx, result)
