"""The import steps, in the order the DAG runs them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..context import StepContext
from .data import download_image, fsck_volume, verify_image, write_image
from .inspect import inspect_object
from .report import report
from .volume import assign_backup_policy, attach_volume, create_volume, detach_volume, tune_volume
from .worker import launch_worker, terminate_worker, wait_worker_ready

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
