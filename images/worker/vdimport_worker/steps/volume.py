"""The block volume: create, attach, detach, tune, back up; delete it when the import failed.

A volume is marked ``vdimport-state: verified`` by detach_volume once it holds a written,
checked image and this run's attachment is gone, and ``delivered`` by the report. A verified
volume is final: no step of any run attaches, writes, detaches or deletes it again (the data
path reports "already delivered"), and tune/backup leave a delivered one alone. Cleanup deletes
a run's volumes that never got the mark (unless the request asked to keep them), so a failed
import leaves nothing half-written behind. Only attachments this run made are ever detached:
its own display name on an instance carrying this run's tags, never "every attachment".
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import oci

from ..clients import list_all
from ..context import StepContext, StepError
from ..waiting import wait_for_state

log = logging.getLogger("vdimport")

DEVICES = [f"/dev/oracleoci/oraclevd{letter}" for letter in "bcdefghijklmnopqrstuvwxyz"]
STATE_TAG = "vdimport-state"
VERIFIED = "verified"
DELIVERED = "delivered"
FINAL = (VERIFIED, DELIVERED)
LIVE_ATTACHMENT = ("ATTACHING", "ATTACHED", "DETACHING")


GONE = ("TERMINATING", "TERMINATED")


def _run_volumes(ctx: StepContext, include_gone: bool = False) -> list[Any]:
    volumes = list_all(ctx.clients.blockstorage.list_volumes, compartment_id=ctx.compartment_id)
    return [v for v in volumes if ctx.names.owns(v.freeform_tags, "volume") and (include_gone or v.lifecycle_state not in GONE)]


def _wait_volume(ctx: StepContext, volume_id: str, what: str) -> Any:
    return wait_for_state(
        lambda: ctx.clients.blockstorage.get_volume(volume_id).data,
        "AVAILABLE",
        what,
        ctx.config.deadlines.volume,
        ctx.config.poll_max_seconds,
        bad=("FAULTY", "TERMINATING", "TERMINATED"),
    )


def delivered_volumes(ctx: StepContext) -> list[Any]:
    """The run's volumes that are verified or delivered: final, never touched by the data path again."""
    return [v for v in _run_volumes(ctx) if (v.freeform_tags or {}).get(STATE_TAG) in FINAL]


def stale_volume(ctx: StepContext, result: dict[str, Any]) -> str | None:
    volume = ctx.owned(str(result["volume_id"]), "volume", "create_volume")
    if volume is None:
        return f"the volume {result['volume_id']} no longer exists"
    if volume.lifecycle_state in GONE:
        return f"the volume {volume.id} is {volume.lifecycle_state} (the cleanup deleted the unfinished volume)"
    return None


def create_volume(ctx: StepContext) -> dict[str, Any]:
    plan = ctx.plan
    ad = ctx.need("launch_worker")["availability_domain"]
    mine = _run_volumes(ctx, include_gone=True)
    existing = [v for v in mine if v.availability_domain == ad and v.lifecycle_state not in GONE]
    # A run resumed after cleanup deleted its volume needs a new one, hence a new retry token.
    generation = sum(v.lifecycle_state in GONE for v in mine)
    if existing:
        volume = existing[0]
        log.info("Volume %s from an earlier attempt exists (%s); using it", volume.id, volume.lifecycle_state)
    else:
        write_vpus = max(plan["vpus_per_gb"], ctx.config.write_vpus_per_gb)
        details = oci.core.models.CreateVolumeDetails(
            availability_domain=ad,
            compartment_id=ctx.compartment_id,
            display_name=plan["volume_name"],
            size_in_gbs=plan["volume_size_gb"],
            vpus_per_gb=write_vpus,
            kms_key_id=plan.get("kms_key_id"),
            freeform_tags=ctx.names.tags("volume", plan.get("tags")),
        )
        log.info("Creating volume %r: %d GB at %d VPUs/GB for the write, in %s", details.display_name, details.size_in_gbs, write_vpus, ad)
        operation = f"volume-{generation}" if ctx.disk is None else f"volume-disk{ctx.disk}-{generation}"
        volume = ctx.clients.blockstorage.create_volume(details, opc_retry_token=ctx.names.retry_token(operation)).data
    volume = _wait_volume(ctx, volume.id, f"volume {volume.id}")
    log.info("Volume %s is AVAILABLE", volume.id)
    return {
        "volume_id": volume.id,
        "display_name": volume.display_name,
        "size_gb": volume.size_in_gbs,
        "availability_domain": volume.availability_domain,
    }


def _live_attachments(ctx: StepContext, volume_id: str) -> list[Any]:
    attachments = list_all(ctx.clients.compute.list_volume_attachments, ctx.compartment_id, volume_id=volume_id)
    return [a for a in attachments if a.lifecycle_state in LIVE_ATTACHMENT]


def _run_attachments(ctx: StepContext, volume_id: str) -> tuple[list[Any], list[Any]]:
    """The volume's live attachments: (this run's, anybody else's). This run's carry its display
    name and are to an instance with this run's worker tags (checked through the API)."""
    mine: list[Any] = []
    others: list[Any] = []
    workers: dict[str, bool] = {}
    for attachment in _live_attachments(ctx, volume_id):
        if attachment.instance_id not in workers:
            tags = ctx.clients.compute.get_instance(attachment.instance_id).data.freeform_tags
            workers[attachment.instance_id] = ctx.names.owns(tags, "worker")
        own = workers[attachment.instance_id] and attachment.display_name == ctx.names.name("attachment")
        (mine if own else others).append(attachment)
    return mine, others


def stale_attachment(ctx: StepContext, result: dict[str, Any]) -> str | None:
    worker, volume = ctx.worker_id(), ctx.volume_id()
    if result.get("instance_id") != worker or result.get("volume_id") != volume:
        return "it attached another worker or volume than the run's current ones"
    attachment = ctx.clients.compute.get_volume_attachment(str(result["attachment_id"])).data
    if attachment.lifecycle_state != "ATTACHED":
        return f"the attachment {attachment.id} is {attachment.lifecycle_state}"
    if (attachment.instance_id, attachment.volume_id, attachment.device) != (worker, volume, result.get("device")):
        return "the attachment the API shows differs from the recorded one"
    return None


def attach_volume(ctx: StepContext) -> dict[str, Any]:
    ctx.need("wait_worker_ready")
    instance_id = ctx.worker_id()
    volume_id = ctx.volume_id()
    compute = ctx.clients.compute
    between = [
        a for a in list_all(compute.list_volume_attachments, ctx.compartment_id, volume_id=volume_id) if a.instance_id == instance_id
    ]
    mine = [a for a in between if a.lifecycle_state in LIVE_ATTACHMENT]
    if mine:
        attachment = mine[0]
        log.info("Volume is already attached at %s (%s)", attachment.device, attachment.lifecycle_state)
    else:
        used = {
            a.device
            for a in list_all(compute.list_volume_attachments, ctx.compartment_id, instance_id=instance_id)
            if a.lifecycle_state in LIVE_ATTACHMENT
        }
        device = next(d for d in DEVICES if d not in used)
        details = oci.core.models.AttachParavirtualizedVolumeDetails(
            instance_id=instance_id,
            volume_id=volume_id,
            device=device,
            display_name=ctx.names.name("attachment"),
            is_read_only=False,
        )
        log.info("Attaching volume %s to the worker at %s", volume_id, device)
        # Unique per worker, volume and earlier attachments between them, so a new worker or a
        # re-attach after a detach never replays an old attachment.
        pair = hashlib.sha256(f"{instance_id}/{volume_id}".encode()).hexdigest()[:8]
        token = ctx.names.retry_token(f"attach-{pair}-{len(between)}")
        attachment = compute.attach_volume(details, opc_retry_token=token).data
    attachment = wait_for_state(
        lambda: compute.get_volume_attachment(attachment.id).data,
        "ATTACHED",
        f"attaching volume {volume_id}",
        ctx.config.deadlines.attach,
        ctx.config.poll_max_seconds,
        bad=("DETACHING", "DETACHED"),
    )
    log.info("Volume attached at %s", attachment.device)
    return {"attachment_id": attachment.id, "device": attachment.device, "instance_id": instance_id, "volume_id": volume_id}


def _wait_detached(ctx: StepContext, attachment_id: str, what: str) -> None:
    wait_for_state(
        lambda: ctx.clients.compute.get_volume_attachment(attachment_id).data,
        "DETACHED",
        what,
        ctx.config.deadlines.detach,
        ctx.config.poll_max_seconds,
    )


def detach_volume(ctx: StepContext) -> dict[str, Any]:
    for step in ("write_image", "verify_image", "fsck_volume"):  # what "verified" will claim, for this volume
        ctx.need(step)
    volume_id = ctx.volume_id()
    compute = ctx.clients.compute
    recorded = (ctx.state.get("attach_volume") or {}).get("attachment_id")
    detached = {str(recorded)} if recorded else set()
    mine, others = _run_attachments(ctx, volume_id)
    for attachment in mine:
        if attachment.lifecycle_state != "DETACHING":
            log.info("Detaching volume %s from the worker (%s, attachment %s)", volume_id, attachment.device, attachment.id)
            compute.detach_volume(attachment.id)
        _wait_detached(ctx, attachment.id, f"detaching volume {volume_id}")
        detached.add(attachment.id)
    for attachment in others:
        log.warning(
            "Leaving attachment %s of volume %s to instance %s alone: this run did not make it",
            attachment.id,
            volume_id,
            attachment.instance_id,
        )
    if not mine:
        log.info("Volume %s is not attached to this run's worker", volume_id)
    _mark(ctx, volume_id, VERIFIED)
    return {"volume_id": volume_id, "detached": sorted(detached)}


def _mark(ctx: StepContext, volume_id: str, state: str) -> None:
    """Record the volume's state in its tags (verified: cleanup keeps it from now on)."""
    volume = ctx.clients.blockstorage.get_volume(volume_id).data
    tags = dict(volume.freeform_tags or {})
    if tags.get(STATE_TAG) != state:
        tags[STATE_TAG] = state
        ctx.clients.blockstorage.update_volume(volume_id, oci.core.models.UpdateVolumeDetails(freeform_tags=tags))
        _wait_volume(ctx, volume_id, f"tagging volume {volume_id}")


def mark_delivered(ctx: StepContext, volume_id: str) -> None:
    _mark(ctx, volume_id, DELIVERED)


def final_volume(ctx: StepContext) -> Any:
    """The run's verified volume, for the steps after the data path (tune, backup, report)."""
    volume = ctx.delivered_volume()
    if volume is None:
        raise StepError("this run has no verified volume: detach_volume has not completed")
    return volume


def delete_unfinished_volumes(ctx: StepContext) -> tuple[list[str], list[str]]:
    """Delete this run's volumes that never passed the checks, unless asked to keep them.

    Runs after the worker is terminated, so their attachments are going away by themselves.
    Returns (deleted, kept) volume ids.
    """
    plan = (ctx.state.get("inspect_object") or {}).get("plan") or {}
    keep = plan.get("keep_on_failure", ctx.request.options.keep_on_failure)
    deleted, kept = [], []
    for volume in _run_volumes(ctx):
        if (volume.freeform_tags or {}).get(STATE_TAG) in FINAL:
            continue
        mine, others = _run_attachments(ctx, volume.id)
        for attachment in mine:
            _wait_detached(ctx, attachment.id, f"waiting for volume {volume.id} to detach")
        if others:
            log.warning(
                "Not deleting unfinished volume %s: it is attached to %s, which this run did not make", volume.id, others[0].instance_id
            )
            kept.append(volume.id)
            continue
        if keep:
            log.warning(
                "Keeping unfinished volume %s (%s) as the request asked (keep_on_failure): its content is NOT a checked import",
                volume.id,
                volume.display_name,
            )
            kept.append(volume.id)
            continue
        log.info("Deleting unfinished volume %s (%s): the import did not complete", volume.id, volume.display_name)
        ctx.clients.blockstorage.delete_volume(volume.id)
        deleted.append(volume.id)
    return deleted, kept


def _already_delivered(volume: Any) -> bool:
    if (volume.freeform_tags or {}).get(STATE_TAG) == DELIVERED:
        log.info("Volume %s was delivered already; leaving it as it is", volume.id)
        return True
    return False


def tune_volume(ctx: StepContext) -> dict[str, Any]:
    volume = final_volume(ctx)
    volume_id = volume.id
    if _already_delivered(volume):
        return {"vpus_per_gb": volume.vpus_per_gb, "delivered": True}
    wanted = ctx.plan["vpus_per_gb"]
    # Wait first: an update from a killed earlier attempt may still be in progress.
    volume = _wait_volume(ctx, volume_id, f"volume {volume_id}")
    if volume.vpus_per_gb != wanted:
        log.info("Setting volume %s to %d VPUs/GB (was %d for the write)", volume_id, wanted, volume.vpus_per_gb)
        ctx.clients.blockstorage.update_volume(volume_id, oci.core.models.UpdateVolumeDetails(vpus_per_gb=wanted))
        volume = _wait_volume(ctx, volume_id, f"tuning volume {volume_id}")
        if volume.vpus_per_gb != wanted:
            raise StepError(f"volume {volume_id} is at {volume.vpus_per_gb} VPUs/GB after the update, not {wanted}")
    else:
        log.info("Volume %s is at %d VPUs/GB already", volume_id, wanted)
    return {"vpus_per_gb": volume.vpus_per_gb}


def assign_backup_policy(ctx: StepContext) -> dict[str, Any]:
    policy = ctx.plan.get("backup_policy")
    if not policy:
        log.info("No backup policy requested")
        return {"policy_id": None, "skipped": True}
    storage = ctx.clients.blockstorage
    volume = final_volume(ctx)
    volume_id = volume.id
    if _already_delivered(volume):
        return {"policy": policy, "delivered": True}
    if policy.startswith("ocid1."):
        policy_id = policy
    else:
        oracle_defined = list_all(storage.list_volume_backup_policies)
        match = [p for p in oracle_defined if p.display_name.lower() == policy]
        if not match:
            raise StepError(f"backup_policy: no Oracle-defined policy named {policy} in this region")
        policy_id = match[0].id
    current = storage.get_volume_backup_policy_asset_assignment(volume_id).data
    if any(a.policy_id == policy_id for a in current):
        log.info("Backup policy %s is already assigned", policy)
    else:
        log.info("Assigning backup policy %s to volume %s", policy, volume_id)
        storage.create_volume_backup_policy_assignment(
            oci.core.models.CreateVolumeBackupPolicyAssignmentDetails(asset_id=volume_id, policy_id=policy_id)
        )
    return {"policy_id": policy_id, "policy": policy}
