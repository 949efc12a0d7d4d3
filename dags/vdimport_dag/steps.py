"""The import's steps as the DAG knows them: names, order, and how long each may take.

The order is the step runner's (``vdimport-step``; ``local/vdimport_local/pipeline.py`` has
the same list and a test keeps them equal). Execution timeouts sit above the runner's own
deadlines (``VDIMPORT_*_TIMEOUT_SECONDS`` in ``images/worker/README.md``: launch 900 s,
ready 1200 s, attach/detach 600 s, terminate/volume 900 s, one worker script 21600 s), so a
step normally fails with its own one-line cause before Airflow kills it.
"""

from __future__ import annotations

STEP_ORDER: tuple[str, ...] = (
    "inspect_object",
    "launch_worker",
    "wait_worker_ready",
    "download_image",
    "create_volume",
    "attach_volume",
    "write_image",
    "verify_image",
    "fsck_volume",
    "detach_volume",
    "terminate_worker",
    "tune_volume",
    "assign_backup_policy",
    "report",
)
# vdimport-step's exit status when the request or the image itself is wrong (bad metadata, an
# unsafe or oversized image): the task fails at once instead of being retried. The step
# runner image defines it too (vdimport_worker.cli.EXIT_REJECTED; a test keeps them equal).
EXIT_REJECTED = 3

FIRST_STEP = "inspect_object"
LAUNCH_STEP = "launch_worker"
CLEANUP_STEP = "terminate_worker"
LAST_VM_STEP = "detach_volume"  # the last step that needs the worker VM

_MINUTE = 60.0
_HOUR = 3600.0
# Seconds each step may run (one try), before settings' VDIMPORT_STEP_TIMEOUTS overrides.
STEP_TIMEOUTS: dict[str, float] = {
    "inspect_object": 15 * _MINUTE,  # HEAD and ranged reads of the object
    "launch_worker": 45 * _MINUTE,  # launch, possibly in each of three ADs on "out of capacity"
    "wait_worker_ready": 30 * _MINUTE,  # RUNNING + cloud-init (ready deadline 1200 s)
    "download_image": 7 * _HOUR,  # one worker script: up to 6 h
    "create_volume": 30 * _MINUTE,
    "attach_volume": 20 * _MINUTE,
    "write_image": 7 * _HOUR,  # qemu-img convert of up to 32 TB: one worker script
    "verify_image": 7 * _HOUR,  # qemu-img compare: one worker script
    "fsck_volume": 7 * _HOUR,
    "detach_volume": 20 * _MINUTE,
    "terminate_worker": 30 * _MINUTE,
    "tune_volume": 30 * _MINUTE,
    "assign_backup_policy": 15 * _MINUTE,
    "report": 10 * _MINUTE,
}


def step_description(step: str) -> str:
    """One line for the task's documentation in the UI."""
    return {
        "inspect_object": "HEAD the object, validate the request, detect the format, plan names, AD and size.",
        "launch_worker": "Launch the temporary worker VM (tagged with the run); reuses one from an earlier try.",
        "wait_worker_ready": "Wait until the worker is RUNNING, cloud-init is done and the Run Command agent answers.",
        "download_image": "The worker downloads the object through a short-lived read-only PAR and checks it.",
        "create_volume": "Create the block volume, named after the image, sized from its virtual size.",
        "attach_volume": "Attach the volume to the worker (paravirtualized, consistent device path).",
        "write_image": "qemu-img convert the image onto the volume, flushed.",
        "verify_image": "Compare the volume with the image.",
        "fsck_volume": "fsck every partition read-only.",
        "detach_volume": "Detach the volume and mark it verified.",
        "terminate_worker": (
            "Cleanup: delete the run's PARs, terminate its workers, delete unverified volumes. "
            "Runs whenever inspect_object succeeded (so launch_worker was attempted), even after failures."
        ),
        "tune_volume": "Set the requested VPUs/GB.",
        "assign_backup_policy": "Assign the requested backup policy, if any.",
        "report": "Summarise the import (volume OCID, sizes, format, checks, per-step timings).",
    }[step]


def upstream_steps(step: str) -> tuple[str, ...]:
    """The steps before ``step``: their results form its ``--state``."""
    return STEP_ORDER[: STEP_ORDER.index(step)]
