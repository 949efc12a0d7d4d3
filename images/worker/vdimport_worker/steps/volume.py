"""The block volume: create, attach, detach, tune, back up; delete it when the import failed.

A volume is marked ``vdimport-state: verified`` by detach_volume once it holds a written,
checked image; cleanup deletes a run's volumes that never got that mark (unless the
request asked to keep them), so a failed import leaves nothing half-written behind.
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


def create_volume(ctx: StepContext) -> dict[str, Any]:
    plan = ctx.plan
    ad = ctx.result_of("launch_worker")["availability_domain"]
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
        volume = ctx.clients.blockstorage.create_volume(details, opc_retry_token=ctx.names.retry_token(f"volume-{generation}")).data
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


def attach_volume(ctx: StepContext) -> dict[str, Any]:
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
    return {"attachment_id": attachment.id, "device": attachment.device}


def _wait_detached(ctx: StepContext, attachment_id: str, what: str) -> None:
    wait_for_state(
        lambda: ctx.clients.compute.get_volume_attachment(attachment_id).data,
        "DETACHED",
        what,
        ctx.config.deadlines.detach,
        ctx.config.poll_max_seconds,
    )


def detach_volume(ctx: StepContext) -> dict[str, Any]:
    volume_id = ctx.volume_id()
    compute = ctx.clients.compute
    # The run's attachment and any other live one: a re-run finds none live and returns the same.
    detached = {str(ctx.result_of("attach_volume")["attachment_id"])}
    live = _live_attachments(ctx, volume_id)
    for attachment in live:
        if attachment.lifecycle_state != "DETACHING":
            log.info("Detaching volume %s from %s", volume_id, attachment.device)
            compute.detach_volume(attachment.id)
        _wait_detached(ctx, attachment.id, f"detaching volume {volume_id}")
        detached.add(attachment.id)
    if not live:
        log.info("Volume %s is not attached", volume_id)
    _mark_verified(ctx, volume_id)
    return {"volume_id": volume_id, "detached": sorted(detached)}


def _mark_verified(ctx: StepContext, volume_id: str) -> None:
    """The volume holds a written, checked image: cleanup must keep it from now on."""
    for step in ("write_image", "verify_image", "fsck_volume"):
        ctx.result_of(step)
    volume = ctx.clients.blockstorage.get_volume(volume_id).data
    tags = dict(volume.freeform_tags or {})
    if tags.get(STATE_TAG) != VERIFIED:
        tags[STATE_TAG] = VERIFIED
        ctx.clients.blockstorage.update_volume(volume_id, oci.core.models.UpdateVolumeDetails(freeform_tags=tags))
        _wait_volume(ctx, volume_id, f"tagging volume {volume_id}")


def delete_unfinished_volumes(ctx: StepContext) -> tuple[list[str], list[str]]:
    """Delete this run's volumes that never passed the checks, unless asked to keep them.

    Runs after the worker is terminated, so their attachments are going away by themselves.
    Returns (deleted, kept) volume ids.
    """
    plan = (ctx.state.get("inspect_object") or {}).get("plan") or {}
    keep = plan.get("keep_on_failure", ctx.request.options.keep_on_failure)
    deleted, kept = [], []
    for volume in _run_volumes(ctx):
        if (volume.freeform_tags or {}).get(STATE_TAG) == VERIFIED:
            continue
        for attachment in _live_attachments(ctx, volume.id):
            _wait_detached(ctx, attachment.id, f"waiting for volume {volume.id} to detach")
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


def tune_volume(ctx: StepContext) -> dict[str, Any]:
    volume_id = ctx.volume_id()
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
    volume_id = ctx.volume_id()
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
