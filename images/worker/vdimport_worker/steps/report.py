"""Step 14, report: one summary of the import, as XCom and as a readable log."""

from __future__ import annotations

import logging
from typing import Any

from ..context import StepContext
from ..imageformat import user_format
from .volume import DELIVERED, STATE_TAG, final_volume, mark_delivered

log = logging.getLogger("vdimport")


def report(ctx: StepContext) -> dict[str, Any]:
    inspected = ctx.result_of("inspect_object")
    views = [ctx.disk_view(disk) for disk in range(1, ctx.disk_count + 1)] if ctx.disk_count > 1 else [ctx]
    volumes = [_volume(view) for view in views]
    first = volumes[0]
    summary = {
        **{key: first[key] for key in ("volume_id", "volume_name", "volume_size_gb", "vpus_per_gb", "availability_domain", "volume_state")},
        "source": {
            "object": inspected["object"]["name"],
            "bucket": inspected["object"]["bucket"],
            "etag": inspected["object"]["etag"],
            "object_size": inspected["object"]["size"],
            **first["source"],
        },
        "checks": first["checks"],
        "volumes": volumes,
        "backup_policy": first["backup_policy"],
        "steps": [{"name": name, "seconds": result.get("seconds")} for name, result in ctx.state.items() if isinstance(result, dict)],
        "warnings": inspected.get("warnings", []),
        "already_delivered": all(volume["already_delivered"] for volume in volumes),
        "dag_run_id": ctx.run_id,
    }
    if len(volumes) > 1:
        log.info("Import complete: %d volumes from the disks of %r", len(volumes), summary["source"]["object"])
    for volume in volumes:
        _log_volume(volume, len(volumes) > 1)
    for step in summary["steps"]:
        if step["seconds"] is not None:
            log.info("  %-22s %7.1f s", step["name"], step["seconds"])
    return summary


def _volume(ctx: StepContext) -> dict[str, Any]:
    """One delivered volume (the run's, or one disk's): marked delivered, with what was checked."""
    inspected = ctx.result_of("inspect_object")
    volume = final_volume(ctx)
    already = (volume.freeform_tags or {}).get(STATE_TAG) == DELIVERED
    if already:
        log.info("Volume %s was delivered by this run already; this re-run changed nothing", volume.id)
    else:
        mark_delivered(ctx, volume.id)
    downloaded = ctx.state.get("download_image", {})
    fsck = ctx.state.get("fsck_volume", {})
    verified = ctx.state.get("verify_image", {})
    return {
        "disk": ctx.disk or 1,
        "volume_id": volume.id,
        "volume_name": volume.display_name,
        "volume_size_gb": volume.size_in_gbs,
        "vpus_per_gb": volume.vpus_per_gb,
        "availability_domain": volume.availability_domain,
        "volume_state": volume.lifecycle_state,
        "source": {
            "format": user_format(inspected["source"]["format"]),
            "qemu_format": inspected["source"]["format"],
            "container": inspected["source"].get("container"),
            "member": inspected["source"].get("member"),
            "virtual_size": downloaded.get("virtual_size") or inspected["source"]["virtual_size"],
            "allocated_size": downloaded.get("actual_size"),
        },
        "checks": {
            "verify": "skipped" if verified.get("skipped") else "identical" if verified.get("identical") else "verified earlier",
            "fsck": fsck.get("partitions", []) if not fsck.get("skipped") else "skipped",
        },
        "backup_policy": ctx.state.get("assign_backup_policy", {}).get("policy"),
        "already_delivered": already,
    }


def _log_volume(volume: dict[str, Any], several: bool) -> None:
    src = volume["source"]
    disk = f"disk {volume['disk']} ({src['member']}): " if several else ""
    log.info("Import complete: %svolume %s (%s)", disk, volume["volume_name"], volume["volume_id"])
    log.info("  %d GB, %d VPUs/GB, %s", volume["volume_size_gb"], volume["vpus_per_gb"], volume["availability_domain"])
    log.info("  from %s image: %s bytes virtual, %s allocated", src["format"], src["virtual_size"], src["allocated_size"])
    log.info("  verify: %s", volume["checks"]["verify"])
    for part in volume["checks"]["fsck"] if isinstance(volume["checks"]["fsck"], list) else []:
        log.info("  fsck partition %s: %s %s", part["number"], part["fs"], part["status"])
