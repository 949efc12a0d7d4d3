"""The temporary worker VM: launch it, wait until it can work, and always terminate it."""

from __future__ import annotations

import base64
import logging
from typing import Any

import oci

from ..clients import list_all
from ..context import StepContext, StepError
from ..disks import disk_entries
from ..waiting import wait_for_state

log = logging.getLogger("vdimport")

ALIVE = ("PROVISIONING", "STARTING", "RUNNING", "STOPPING", "STOPPED")
RUN_COMMAND_PLUGIN = "Compute Instance Run Command"
# Oracle Linux 8/9: qemu-img and the fsck tools from the distribution; sudo for the Run
# Command user ``ocarun`` (the agent runs scripts as that user). The other files keep the
# attached data volumes inert: they hold uploaded, possibly hostile images, and LVM or MD
# metadata in them must never reach the worker's kernel (device-mapper tables, md arrays,
# btrfs device scans). They are in place before any volume is attached (attach_volume runs
# after wait_worker_ready, whose ready.sh checks them) and hence before the image is written
# and fsck reads it; docs/security.md "Data volumes stay inert".
CLOUD_INIT = """#cloud-config
packages:
  - qemu-img
  - xfsprogs
  - dosfstools
  - e2fsprogs
  - util-linux
write_files:
  - path: /etc/sudoers.d/90-vdimport-ocarun
    permissions: "0440"
    content: |
      ocarun ALL=(ALL) NOPASSWD:ALL
  - path: /etc/lvm/lvmlocal.conf
    permissions: "0644"
    content: |
      # vdimport: read after lvm.conf, and its settings win (lvm.conf(5), "config cascade").
      global {
          # lvm.conf(5) global/event_activation: 0 turns off event based autoactivation, the
          # pvscan --cache -aay that udev runs for a new PV (lvmautoactivation(7)), so no
          # volume group found on a data volume is ever activated.
          event_activation = 0
      }
      devices {
          # lvm.conf(5) devices/global_filter: "Devices rejected by global_filter are not
          # opened by LVM", also by the LVM commands udev runs. Accepted: the boot volume and
          # its partitions (the root VG of Oracle Linux images lives there), by OCI's
          # consistent device name; rejected: everything else, so every data volume (vdimport
          # attaches each at a device path of its own, oraclevdb and up).
          global_filter = [ "a|^/dev/oracleoci/oraclevda[0-9]*$|", "r|.*|" ]
      }
  - path: /etc/mdadm.conf
    permissions: "0644"
    content: |
      # vdimport: mdadm.conf(5) AUTO, "-all": auto-assembly (mdadm --incremental from udev,
      # mdadm --assemble --scan) is disallowed for every metadata type; only arrays listed
      # in this file would be assembled, and none is. The first AUTO line wins.
      AUTO -all
  - path: /etc/udev/rules.d/61-vdimport-data-disks.rules
    permissions: "0644"
    content: |
      # vdimport: every disk but the boot volume (LUN 1, /dev/oracleoci/oraclevda) is an
      # attached data volume holding an uploaded image, and its partitions with it.
      ACTION=="remove", GOTO="vdimport_end"
      SUBSYSTEM!="block", GOTO="vdimport_end"
      KERNEL!="sd*", GOTO="vdimport_end"
      ENV{ID_PATH}=="*:1", GOTO="vdimport_end"
      # udev(7) OPTIONS "nowatch": no inotify watch, so closing the device after the image is
      # written synthesizes no "change" event: no re-probe, no partition re-read behind us.
      OPTIONS+="nowatch"
      # After 60-persistent-storage.rules (its probe stays: OCI's /dev/oracleoci names are
      # made from the ID_PATH and ID_SERIAL it sets) and before the rules that act on what the
      # probe found: 64-md-raid-assembly.rules (mdadm --incremental on linux_raid_member,
      # ddf, isw), 64-btrfs.rules (the kernel's btrfs device scan) and 69-dm-lvm(-metad).rules
      # (pvscan, autoactivation on LVM2_member) all need ID_FS_TYPE; without it none runs.
      ENV{ID_FS_TYPE}=""
      LABEL="vdimport_end"
"""


def _run_instances(ctx: StepContext) -> list[Any]:
    instances = list_all(ctx.clients.compute.list_instances, ctx.compartment_id, display_name=ctx.names.name("worker"))
    return [i for i in instances if ctx.names.owns(i.freeform_tags, "worker")]


def _worker_image(ctx: StepContext) -> str:
    if ctx.config.worker_image_id:
        return ctx.config.worker_image_id
    images = list_all(
        ctx.clients.compute.list_images,
        ctx.compartment_id,
        operating_system="Oracle Linux",
        shape=ctx.config.worker_shape,
        sort_by="TIMECREATED",
        sort_order="DESC",
        lifecycle_state="AVAILABLE",
    )
    for version in ("9", "8"):
        for image in images:
            if str(image.operating_system_version).startswith(version):
                return str(image.id)
    raise StepError(f"no Oracle Linux 8/9 image for shape {ctx.config.worker_shape}; set VDIMPORT_WORKER_IMAGE_ID")


def _staged_bytes(ctx: StepContext) -> int:
    """What the worker downloads: the image, or every disk of an OVA (all are staged at once)."""
    inspected = ctx.result_of("inspect_object")
    sources = [disk["source"] for disk in disk_entries(inspected)] or [inspected["source"]]
    return sum(int(source["length"]) for source in sources)


def _boot_volume_gb(ctx: StepContext) -> int:
    """Room for the OS and the downloads with some headroom."""
    return max(50, -(-_staged_bytes(ctx) // (1 << 30)) + 20)


def _launch_details(ctx: StepContext, ad: str, image_id: str) -> Any:
    models = oci.core.models
    cfg = ctx.config
    shape_config = None
    if cfg.worker_shape.endswith(".Flex"):
        shape_config = models.LaunchInstanceShapeConfigDetails(ocpus=cfg.worker_ocpus, memory_in_gbs=cfg.worker_memory_gb)
    return models.LaunchInstanceDetails(
        availability_domain=ad,
        compartment_id=ctx.compartment_id,
        display_name=ctx.names.name("worker"),
        shape=cfg.worker_shape,
        shape_config=shape_config,
        source_details=models.InstanceSourceViaImageDetails(image_id=image_id, boot_volume_size_in_gbs=_boot_volume_gb(ctx)),
        create_vnic_details=models.CreateVnicDetails(subnet_id=cfg.subnet_id, assign_public_ip=False),
        metadata={"user_data": base64.b64encode(CLOUD_INIT.encode()).decode()},
        agent_config=models.LaunchInstanceAgentConfigDetails(
            is_management_disabled=False,
            is_monitoring_disabled=False,
            plugins_config=[models.InstanceAgentPluginConfigDetails(name=RUN_COMMAND_PLUGIN, desired_state="ENABLED")],
        ),
        # IMDS v2 only: v1 answers any process on the VM without a header, the classic SSRF path
        # to instance metadata (the worker parses hostile images)
        instance_options=models.InstanceOptions(are_legacy_imds_endpoints_disabled=True),
        freeform_tags=ctx.names.tags("worker"),
    )


def launch_worker(ctx: StepContext) -> dict[str, Any]:
    """Launch the run's worker, or adopt the one an earlier attempt launched.

    A launch that fails or is stopped half-way (an error after the request reached OCI, SIGTERM
    when the run is marked failed) terminates what it launched before it gives up: the DAG's
    teardown does not run for a setup that failed, so the setup cleans up after itself.
    """
    try:
        return _launch_or_adopt(ctx)
    except BaseException as exc:
        _terminate_half_launched(ctx, exc)
        raise


def _terminate_half_launched(ctx: StepContext, exc: BaseException) -> None:
    try:
        for instance in _run_instances(ctx):
            if instance.lifecycle_state not in ("TERMINATING", "TERMINATED"):
                log.warning("Launch did not complete (%s); terminating worker %s", type(exc).__name__, instance.id)
                ctx.clients.compute.terminate_instance(instance.id, preserve_boot_volume=False)
    except Exception as cleanup_error:  # noqa: BLE001 - best effort: the teardown or the reaper collects it then
        log.warning("Could not terminate the half-launched worker: %s", cleanup_error)


def _launch_or_adopt(ctx: StepContext) -> dict[str, Any]:
    instances = _run_instances(ctx)
    alive = [i for i in instances if i.lifecycle_state in ALIVE]
    if alive:
        worker = alive[0]
        log.info("Worker %s from an earlier attempt exists (%s); using it", worker.id, worker.lifecycle_state)
        return _launch_result(worker)
    plan = ctx.plan
    generation = len(instances)  # a run cleared after its worker was terminated gets a new one
    ads = [plan["availability_domain"]]
    if not plan["ad_pinned"]:
        ads += [ad for ad in plan["availability_domains"] if ad != plan["availability_domain"]]
    image_id = _worker_image(ctx)
    for ad in ads:
        details = _launch_details(ctx, ad, image_id)
        token = ctx.names.retry_token(f"launch-{generation}-{plan['availability_domains'].index(ad)}")
        log.info("Launching worker %s (%s) in %s", details.display_name, details.shape, ad)
        try:
            instance = ctx.clients.compute_launch.launch_instance(details, opc_retry_token=token).data
        except oci.exceptions.ServiceError as exc:
            if exc.status == 500 and "capacity" in (exc.message or "").lower():
                if plan["ad_pinned"]:
                    raise StepError(f"out of host capacity for {details.shape} in {ad} (pinned by ad_number); retry later") from None
                log.warning("Out of host capacity for %s in %s; trying the next availability domain", details.shape, ad)
                continue
            if exc.status == 400 and exc.code == "LimitExceeded":
                raise StepError(f"service limit reached for {details.shape}: {exc.message}") from None
            raise
        log.info("Worker %s is %s", instance.id, instance.lifecycle_state)
        return _launch_result(instance)
    raise StepError(f"out of host capacity for {ctx.config.worker_shape} in every availability domain; retry later")


def _launch_result(instance: Any) -> dict[str, Any]:
    """The same result whether the worker was launched now or found from an earlier attempt."""
    source = getattr(instance, "source_details", None)
    image_id = getattr(source, "image_id", None) or getattr(instance, "image_id", None)
    return {"instance_id": instance.id, "availability_domain": instance.availability_domain, "shape": instance.shape, "image_id": image_id}


def wait_worker_ready(ctx: StepContext) -> dict[str, Any]:
    instance_id = ctx.worker_id()
    compute = ctx.clients.compute
    log.info("Waiting for worker %s to be RUNNING", instance_id)
    wait_for_state(
        lambda: compute.get_instance(instance_id).data,
        "RUNNING",
        f"worker {instance_id}",
        ctx.config.deadlines.launch,
        ctx.config.poll_max_seconds,
        bad=("TERMINATING", "TERMINATED", "STOPPED"),
    )
    log.info("Worker is RUNNING; waiting for cloud-init and the Run Command agent")
    result = ctx.shell().run("ready", {"NEED": _staged_bytes(ctx)}, int(ctx.config.deadlines.ready)).result
    log.info("Worker ready: qemu-img %s, %.1f GB free", result.get("qemu_img"), result.get("free_bytes", 0) / 1e9)
    return {**result, "instance_id": instance_id}


def stale_worker(ctx: StepContext, result: dict[str, Any]) -> str | None:
    instance = ctx.owned(str(result["instance_id"]), "worker", "launch_worker")
    if instance is None:
        return f"the worker {result['instance_id']} no longer exists"
    if instance.lifecycle_state not in ALIVE:
        return f"the worker {instance.id} is {instance.lifecycle_state}"
    return None


def stale_ready(ctx: StepContext, result: dict[str, Any]) -> str | None:
    worker = ctx.worker_id()
    if result.get("instance_id") != worker:
        return f"it checked worker {result.get('instance_id')}, and the run's worker is now {worker}"
    return None


def terminate_worker(ctx: StepContext) -> dict[str, Any]:
    """Clean up whatever the run made, from whatever state exists: PARs, the worker, a failed volume."""
    from ..output import remove_run_outputs
    from .volume import delete_unfinished_volumes

    if not ctx.has_key:
        log.info("inspect_object did not complete, so this run made nothing to clean up")
        return {"terminated": [], "pars_deleted": 0, "volumes_deleted": [], "volumes_kept": []}
    pars = _delete_pars(ctx)
    instances = _run_instances(ctx)
    stopping = []
    for instance in instances:
        if instance.lifecycle_state == "TERMINATED":
            continue
        if instance.lifecycle_state != "TERMINATING":
            log.info("Terminating worker %s (%s)", instance.id, instance.lifecycle_state)
            ctx.clients.compute.terminate_instance(instance.id, preserve_boot_volume=False)
        stopping.append(instance.id)
    for instance_id in stopping:
        _wait_terminated(ctx, instance_id)
        log.info("Worker %s is TERMINATED", instance_id)
    if not instances:
        log.info("No worker of this run was launched")
    elif not stopping:
        log.info("The run's worker is terminated already")
    if ctx.config.work_bucket:  # a step stopped mid-command keeps its output PAR for a retry: not needed now
        outputs = remove_run_outputs(ctx.clients, ctx.names, ctx.config.work_bucket)
        if outputs:
            log.info("Deleted %d command output object(s) and PAR(s) in the work bucket %s", outputs, ctx.config.work_bucket)
    deleted, kept = delete_unfinished_volumes(ctx)
    # "terminated" names every worker of the run (all TERMINATED now), so a re-run returns the same.
    return {"terminated": sorted(i.id for i in instances), "pars_deleted": pars, "volumes_deleted": deleted, "volumes_kept": kept}


def _wait_terminated(ctx: StepContext, instance_id: str) -> None:
    wait_for_state(
        lambda: ctx.clients.compute.get_instance(instance_id).data,
        "TERMINATED",
        f"terminating worker {instance_id}",
        ctx.config.deadlines.terminate,
        ctx.config.poll_max_seconds,
    )


def delete_run_pars(ctx: StepContext) -> int:
    """Delete every pre-authenticated request this run made (they are named after the run)."""
    return _delete_pars(ctx)


def _delete_pars(ctx: StepContext) -> int:
    req = ctx.request
    os_client = ctx.clients.object_storage
    count = 0
    if not (req.namespace and req.bucket):
        log.warning("The request names no bucket, so no pre-authenticated request can be looked for")
        return 0
    pars = list_all(os_client.list_preauthenticated_requests, req.namespace, req.bucket)
    for par in pars:
        if par.name == ctx.names.name("par"):
            os_client.delete_preauthenticated_request(req.namespace, req.bucket, par.id)
            log.info("Deleted pre-authenticated request %s", par.name)
            count += 1
    return count
