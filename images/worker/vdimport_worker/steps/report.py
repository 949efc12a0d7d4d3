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
    volume = final_volume(ctx)
    already = (volume.freeform_tags or {}).get(STATE_TAG) == DELIVERED
    if already:
        log.info("Volume %s was delivered by this run already; this re-run changed nothing", volume.id)
    else:
        mark_delivered(ctx, volume.id)
    downloaded = ctx.state.get("download_image", {})
    fsck = ctx.state.get("fsck_volume", {})
    verified = ctx.state.get("verify_image", {})
    summary = {
        "volume_id": volume.id,
        "volume_name": volume.display_name,
        "volume_size_gb": volume.size_in_gbs,
        "vpus_per_gb": volume.vpus_per_gb,
        "availability_domain": volume.availability_domain,
        "volume_state": volume.lifecycle_state,
        "source": {
            "object": inspected["object"]["name"],
            "bucket": inspected["object"]["bucket"],
            "etag": inspected["object"]["etag"],
            "object_size": inspected["object"]["size"],
            "format": user_format(inspected["source"]["format"]),
            "qemu_format": inspected["source"]["format"],
            "container": inspected["source"].get("container"),
            "virtual_size": downloaded.get("virtual_size") or inspected["source"]["virtual_size"],
            "allocated_size": downloaded.get("actual_size"),
        },
        "checks": {
            "verify": "skipped" if verified.get("skipped") else "identical" if verified.get("identical") else "verified earlier",
            "fsck": fsck.get("partitions", []) if not fsck.get("skipped") else "skipped",
        },
        "backup_policy": ctx.state.get("assign_backup_policy", {}).get("policy"),
        "steps": [{"name": name, "seconds": result.get("seconds")} for name, result in ctx.state.items() if isinstance(result, dict)],
        "warnings": inspected.get("warnings", []),
        "already_delivered": already,
        "dag_run_id": ctx.run_id,
    }
    log.info("Import complete: volume %s (%s)", summary["volume_name"], summary["volume_id"])
    log.info("  %d GB, %d VPUs/GB, %s", summary["volume_size_gb"], summary["vpus_per_gb"], summary["availability_domain"])
    src = summary["source"]
    log.info("  from %s image %r: %s bytes virtual, %s allocated", src["format"], src["object"], src["virtual_size"], src["allocated_size"])
    log.info("  verify: %s", summary["checks"]["verify"])
    for part in fsck.get("partitions", []):
        log.info("  fsck partition %s: %s %s", part["number"], part["fs"], part["status"])
    for step in summary["steps"]:
        if step["seconds"] is not None:
            log.info("  %-22s %7.1f s", step["name"], step["seconds"])
    return summary
