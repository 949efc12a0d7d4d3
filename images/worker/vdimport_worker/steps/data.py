"""Moving and checking the bytes, all on the worker VM: download, write, verify, fsck."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import zlib
from typing import Any

import oci

from ..context import Rejected, StepContext, StepError
from ..imageformat import SourceImage, UnsafeImage, check_qemu_info
from ..remote import fits
from .worker import delete_run_pars

log = logging.getLogger("vdimport")

MAX_INFO_BYTES = 64 << 20  # qemu-img info of an image with thousands of snapshots is a few MB


def _source(ctx: StepContext) -> SourceImage:
    return SourceImage(**ctx.result_of("inspect_object")["source"])


def _manifest_digest(source: SourceImage) -> str:
    """``algorithm:hex`` of the disk from its OVA's manifest, checked again: it came through XCom."""
    digest = source.digest or ""
    if digest and not re.fullmatch(r"(sha1:[0-9a-f]{40}|sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})", digest):
        raise Rejected("inspect_object's manifest digest of the disk is not one it could have written")
    return digest


def _command_timeout(ctx: StepContext) -> int:
    return int(ctx.config.deadlines.command)


def _create_read_par(ctx: StepContext) -> tuple[str, str]:
    """A read-only PAR for exactly this object, alive as long as the download may take."""
    obj = ctx.result_of("inspect_object")["object"]
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=_command_timeout(ctx) + 3600)
    details = oci.object_storage.models.CreatePreauthenticatedRequestDetails(
        name=ctx.names.name("par"), object_name=obj["name"], access_type="ObjectRead", time_expires=expires
    )
    par = ctx.clients.object_storage.create_preauthenticated_request(obj["namespace"], obj["bucket"], details).data
    url = par.full_path or ctx.clients.object_storage.base_client.endpoint + par.access_uri
    return par.id, url


def _unpack_info(packed: str) -> dict[str, Any]:
    """download.sh's gzip+base64 ``qemu-img info``, inflated no further than MAX_INFO_BYTES: the
    worker parses hostile images, so what it sends back is bounded here too."""
    inflate = zlib.decompressobj(wbits=31)  # gzip
    text = inflate.decompress(base64.b64decode(packed), MAX_INFO_BYTES)
    if inflate.unconsumed_tail or not inflate.eof:
        raise Rejected(f"qemu-img info of the image is larger than {MAX_INFO_BYTES >> 20} MiB")
    info = json.loads(text)
    if not isinstance(info, dict):
        raise StepError("the worker sent back a qemu-img info that is not a JSON object")
    return info


def download_image(ctx: StepContext) -> dict[str, Any]:
    obj = ctx.result_of("inspect_object")["object"]
    source = _source(ctx)
    ctx.need("wait_worker_ready")
    par_id, url = _create_read_par(ctx)
    log.info("Created a read-only pre-authenticated request for the object (expires after the download)")
    try:
        log.info(
            "Worker downloads %d bytes%s in up to %d parallel streams",
            source.length,
            f" (disk {source.member!r} of the ova)" if source.member else "",
            ctx.config.download_streams,
        )
        variables: dict[str, str | int] = {
            "URL": url,
            "ETAG": obj["etag"],
            "OFFSET": source.offset,
            "LENGTH": source.length,
            "STREAMS": ctx.config.download_streams,
            "MD5": obj.get("md5") or "",
            "DIGEST": _manifest_digest(source),
            "FORMAT": source.format,
            "DISK": ctx.disk or 1,
        }
        shell = ctx.shell()
        if not fits("download", variables):
            # A long object name makes a long PAR URL: hand it over in a command of its own.
            shell.run("stash", {"NAME": "par-url", "VALUE": url}, 300, secret=True)
            variables["URL"] = ""
        result = shell.run("download", variables, _command_timeout(ctx), secret=True).result
    finally:
        ctx.clients.object_storage.delete_preauthenticated_request(obj["namespace"], obj["bucket"], par_id)
        log.info("Deleted the pre-authenticated request")
        # A killed earlier attempt may have left its PAR (its download may even be the one we
        # just waited for): the download is over, so no PAR of this run is needed any more.
        delete_run_pars(ctx)
    info = _unpack_info(str(result["info"]))
    try:
        check_qemu_info(info, source, result["path"], int(ctx.plan["volume_size_gb"]) << 30)
    except UnsafeImage as exc:
        raise Rejected(str(exc)) from None
    log.info(
        "qemu-img agrees: %s, virtual size %d bytes, %d bytes allocated", info["format"], info["virtual-size"], info.get("actual-size", 0)
    )
    return {
        "path": result["path"],
        "format": info["format"],
        "virtual_size": info["virtual-size"],
        "actual_size": info.get("actual-size"),
        "instance_id": ctx.worker_id(),
    }


def stale_download(ctx: StepContext, result: dict[str, Any]) -> str | None:
    worker = ctx.worker_id()
    if result.get("instance_id") != worker:
        return f"the image was downloaded onto worker {result.get('instance_id')}, and the run's worker is now {worker}"
    return None


def stale_check(ctx: StepContext, result: dict[str, Any]) -> str | None:
    """write, verify and fsck hold for the volume they were done on."""
    volume = ctx.volume_id()
    if result.get("volume_id") != volume:
        return f"it was done on volume {result.get('volume_id')}, and the run's volume is now {volume}"
    return None


def _device(ctx: StepContext) -> str:
    """The device path of the run's attachment, as the attachment API reported it (checked in need)."""
    return str(ctx.need("attach_volume")["device"])


def write_image(ctx: StepContext) -> dict[str, Any]:
    downloaded = ctx.need("download_image")
    log.info("Writing the image onto the volume at %s", _device(ctx))
    result = (
        ctx.shell()
        .run(
            "write",
            {"DEVICE": _device(ctx), "FORMAT": downloaded["format"], "VSIZE": downloaded["virtual_size"], "DISK": ctx.disk or 1},
            _command_timeout(ctx),
        )
        .result
    )
    log.info("Image written and flushed (direct I/O: %s, zeroed ahead: %s)", result.get("direct_io"), result.get("zeroed_ahead"))
    for later in ("verify_image", "fsck_volume"):  # what they found was about the bytes before this write
        ctx.forget(later)
    return {**result, "volume_id": ctx.volume_id()}


def verify_image(ctx: StepContext) -> dict[str, Any]:
    if not ctx.plan["verify"]:
        log.info("Verification skipped (verify=false)")
        return {"skipped": True, "volume_id": ctx.volume_id()}
    ctx.need("write_image")
    downloaded = ctx.need("download_image")
    log.info("Comparing the volume with the source image (qemu-img compare)")
    ctx.shell().run(
        "verify",
        {"DEVICE": _device(ctx), "FORMAT": downloaded["format"], "VSIZE": downloaded["virtual_size"], "DISK": ctx.disk or 1},
        _command_timeout(ctx),
    )
    log.info("The volume holds exactly the image's content")
    return {"identical": True, "volume_id": ctx.volume_id()}


def fsck_volume(ctx: StepContext) -> dict[str, Any]:
    mode = ctx.plan["fsck"]
    if mode == "off":
        log.info("File system check skipped (fsck=off)")
        return {"skipped": True, "mode": mode, "volume_id": ctx.volume_id()}
    ctx.need("write_image")
    log.info("Checking each partition's file system read-only")
    result = ctx.shell().run("fsck", {"DEVICE": _device(ctx)}, _command_timeout(ctx)).result
    partitions = result.get("partitions", [])
    bad = [p for p in partitions if p["status"] == "errors"]
    for part in partitions:
        log.info("  partition %s: %s %s", part["number"], part["fs"], part["status"])
    if bad and mode == "strict":
        listed = ", ".join(f"{p['number']} ({p['fs']})" for p in bad)
        raise StepError(f"fsck found errors on partition {listed} (fsck=strict)")
    if bad:
        log.warning("fsck found errors on %d partition(s); reported, not fatal (fsck=check)", len(bad))
    return {"mode": mode, "table": result.get("table"), "partitions": partitions, "errors": len(bad), "volume_id": ctx.volume_id()}
