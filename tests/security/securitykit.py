"""The security corpus: hostile and broken uploads and events, and how to run them through the local stack.

A :class:`Case` is one upload (a file built at test time, an object name, metadata) and what
must become of it: refused by the function, failed at a named step, or imported. A
:class:`EventCase` is one crafted CloudEvent posted straight to the function's invoke
endpoint. :func:`run_corpus` uploads every case at once and waits for every outcome the way
``vdimport-local import --json`` does (the same :class:`vdimport_local.importer.Importer`), so
each outcome's ``error`` is exactly the one line a user sees. :data:`TABLE` collects one row
per case for the Markdown table that ``conftest.py`` prints at the end of the session.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hostilekit as hk
from hostilekit import Builder, Host

from vdimport_local import fnhost
from vdimport_local.importer import Importer, ImportFailed, UploadedObject
from vdimport_local.stack import DAG_ID, LocalStack

TOKEN = os.urandom(4).hex()
CANARY_PREFIX = f"/tmp/vdimport-canary-{TOKEN}"
FINISHED = ("success", "failed")
FUNCTION = "function"  # Case.where: the function refuses the upload (no DAG run)
SUCCESS = "success"  # Case.where: the import succeeds
ONE_LINE_MAX = 400


def canary(case_id: str) -> str:
    """The file a case's shell syntax would create if anything ran it."""
    return f"{CANARY_PREFIX}-{case_id}"


def canaries_found() -> list[str]:
    return sorted(str(p) for p in Path("/tmp").glob(f"{Path(CANARY_PREFIX).name}*"))


def one_line(text: str | None) -> bool:
    return bool(text) and "\n" not in str(text) and "\r" not in str(text) and len(str(text)) <= ONE_LINE_MAX


# --- cases -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    group: str  # image | name | metadata
    what: str  # the input, for the table
    build: Builder
    name: str  # object name; "{canary}" is this case's canary file
    where: str  # FUNCTION, a step name, or SUCCESS
    cause: str = ""  # a regex the one-line cause must contain (searched)
    metadata: dict[str, str] = field(default_factory=dict)  # values (and keys) may hold "{canary}"
    expected_bytes: Callable[[Host, Path], bytes] | None = None  # SUCCESS: what the volume must start with

    def object_name(self) -> str:
        return self.name.replace("{canary}", canary(self.id))

    def object_metadata(self) -> dict[str, str]:
        return {k.replace("{canary}", canary(self.id)): v.replace("{canary}", canary(self.id)) for k, v in self.metadata.items()}


def host_disk_bytes(host: Host, image: Path) -> bytes:
    return host.disk.read_bytes()


def image_bytes(host: Host, image: Path) -> bytes:
    return image.read_bytes()


def qcow2_inside_qcow2(host: Host, out: Path) -> Path:
    """A qcow2 whose guest disk is, byte for byte, another qcow2 (one with a host backing file)."""
    inner = hk.qcow2_backing(host, out.with_name("inner.qcow2"))
    padded = inner.read_bytes()
    raw = out.with_name("inner-padded.raw")
    raw.write_bytes(padded + b"\0" * (-len(padded) % 65536))
    hk.qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(out))
    return out


def qcow2_inside_qcow2_guest(host: Host, image: Path) -> bytes:
    return image.with_name("inner-padded.raw").read_bytes()


def ova_in_ova(host: Host, out: Path) -> Path:
    inner = hk.ova_two_disks(host, out.with_name("inner.ova"))
    return hk.ova_of(out, [(inner, "disk1.img")])


def ova_absolute_member(host: Host, out: Path) -> Path:
    """An OVA whose disk member is named by an absolute host path (``tar.add`` would strip the ``/``)."""
    disk = hk.convert(host.disk, "vmdk-stream", out.with_name("disk1.vmdk"))
    ovf = out.with_name("appliance.ovf")
    ovf.write_text('<?xml version="1.0"?><Envelope/>\n')
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar, open(disk, "rb") as data:
        tar.add(ovf, arcname=ovf.name)
        member = tar.gettarinfo(str(disk), arcname="disk1.vmdk")
        member.name = "/var/tmp/disk1.vmdk"
        tar.addfile(member, data)
    return out


NOT_A_DISK = "is not a disk image"
BACKING = "backing file, which would make qemu-img read another file"
INSPECT, DOWNLOAD = "inspect_object", "download_image"

IMAGE_CASES = [
    Case(
        "qcow2-backing-abs",
        "image",
        "qcow2, backing file = the host file (absolute path)",
        hk.qcow2_backing,
        "backing.qcow2",
        INSPECT,
        BACKING,
    ),
    Case(
        "qcow2-backing-relative",
        "image",
        "qcow2, backing file `../../../..<host file>` (relative to the worker's download)",
        hk.qcow2_backing_named(hk.relative_backing),
        "relative.qcow2",
        INSPECT,
        BACKING,
    ),
    Case(
        "qcow2-backing-json",
        "image",
        'qcow2, backing file `json:{"driver": "raw", "file": {... host file}}`',
        hk.qcow2_backing_named(hk.json_backing),
        "json.qcow2",
        INSPECT,
        BACKING,
    ),
    Case(
        "qcow2-backing-http",
        "image",
        "qcow2, backing file `http://127.0.0.1:9/...`",
        hk.qcow2_backing_named(hk.http_backing),
        "http.qcow2",
        INSPECT,
        BACKING,
    ),
    Case(
        "qcow2-data-file",
        "image",
        "qcow2 with an external data file (full of the marker)",
        hk.qcow2_data_file,
        "datafile.qcow2",
        INSPECT,
        "external data file",
    ),
    Case(
        "vmdk-flat-descriptor",
        "image",
        "VMDK descriptor (text), FLAT extent = the host file",
        hk.vmdk_descriptor("FLAT", "monolithicFlat"),
        "flat.vmdk",
        FUNCTION,
        f"{NOT_A_DISK}: a VMDK descriptor file",
    ),
    Case(
        "vmdk-vmfs-descriptor",
        "image",
        "VMDK descriptor (text), VMFS extent = the host file",
        hk.vmdk_descriptor("VMFS", "vmfs"),
        "vmfs.vmdk",
        FUNCTION,
        f"{NOT_A_DISK}: a VMDK descriptor file",
    ),
    Case(
        "vmdk-sparse-flat-extent",
        "image",
        "monolithicSparse VMDK whose embedded descriptor adds a FLAT extent on the host file",
        hk.vmdk_sparse_with_extent("FLAT"),
        "sparse.vmdk",
        INSPECT,
        "VMDK descriptor is not a single self-contained extent",
    ),
    Case(
        "vmdk-sparse-vmfs-extent",
        "image",
        "monolithicSparse VMDK whose embedded descriptor adds a VMFS extent on the host file",
        hk.vmdk_sparse_with_extent("VMFS"),
        "sparse-vmfs.vmdk",
        INSPECT,
        "VMDK descriptor is not a single self-contained extent",
    ),
    Case(
        "ova-vmdk-descriptor",
        "image",
        "OVA whose disk is a VMDK descriptor with a FLAT extent on the host file",
        hk.ova_holding(hk.vmdk_flat_descriptor, "disk1.vmdk"),
        "descriptor.ova",
        INSPECT,
        "VMDK descriptor is not a single self-contained extent",
    ),
    Case("raw-name-qcow2-backing", "image", "qcow2 with a backing file, named `.raw`", hk.qcow2_backing, "disk.raw", INSPECT, BACKING),
    Case(
        "vhd-looking-qcow2-backing",
        "image",
        "qcow2 with a backing file and a fixed-VHD footer appended, named `.vhd`",
        hk.qcow2_backing_with_vhd_footer,
        "fixed.vhd",
        INSPECT,
        BACKING,
    ),
    Case(
        "declared-raw-qcow2-backing",
        "image",
        "qcow2 with a backing file, metadata `source_format=raw`",
        hk.qcow2_backing,
        "declared.img",
        INSPECT,
        BACKING,
        {"source_format": "raw"},
    ),
    Case(
        "nested-qcow2-raw-ova",
        "image",
        "OVA > member `disk.raw` > qcow2 with a backing file",
        hk.ova_holding(hk.qcow2_backing, "disk.raw"),
        "nested.ova",
        INSPECT,
        BACKING,
    ),
    Case(
        "nested-ova-in-ova",
        "image",
        "OVA > member `disk1.img` > another OVA",
        ova_in_ova,
        "nested2.ova",
        INSPECT,
        "not a recognised disk image",
    ),
    Case(
        "nested-qcow2-in-qcow2",
        "image",
        "qcow2 whose guest disk is a qcow2 with a backing file: imported as data, not opened",
        qcow2_inside_qcow2,
        "matryoshka.qcow2",
        SUCCESS,
        expected_bytes=qcow2_inside_qcow2_guest,
    ),
    Case(
        "ova-parent-member",
        "image",
        "OVA with member `../../disk1.vmdk`",
        hk.ova_parent_member,
        "escape.ova",
        INSPECT,
        "points outside the archive",
    ),
    Case(
        "ova-absolute-member",
        "image",
        "OVA with a member named by an absolute host path",
        ova_absolute_member,
        "absolute.ova",
        INSPECT,
        "points outside the archive",
    ),
    Case(
        "ova-symlink-member",
        "image",
        "OVA whose disk member is a symlink to the host file",
        hk.ova_symlink_member,
        "link.ova",
        INSPECT,
        "only plain files are allowed in an OVA",
    ),
    Case(
        "ova-17-disks",
        "image",
        "OVA with 17 disks (one import makes at most 16 volumes)",
        hk.ova_too_many_disks,
        "many.ova",
        INSPECT,
        r"holds 17 disks, more than the 16 one import makes volumes for",
    ),
    Case(
        "qcow2-1PiB", "image", "qcow2 of virtual size 1 PiB", hk.qcow2_huge, "huge.qcow2", INSPECT, "larger than the largest block volume"
    ),
    Case(
        "qcow2-compressed-bomb",
        "image",
        "1 MB qcow2 of compressed clusters claiming 40 TiB",
        hk.qcow2_compressed_bomb,
        "bomb.qcow2",
        INSPECT,
        "larger than the largest block volume",
    ),
    Case(
        "vhd-understated-size",
        "image",
        "dynamic VHD: footer says 1 MiB, the CHS geometry qemu-img uses says 58 GiB",
        hk.vhd_understated_size,
        "grows.vhd",
        DOWNLOAD,
        "qemu-img reports a virtual size of 62668800000 bytes, more than the 50 GB volume planned",
    ),
    Case("truncated-qcow2", "image", "qcow2 cut to 60%", hk.truncated("qcow2"), "cut.qcow2", DOWNLOAD, "damaged or truncated"),
    Case("truncated-raw-gpt", "image", "raw GPT disk cut to 60%", hk.truncated("raw"), "cut.raw", INSPECT, "the image is truncated"),
    Case("empty-object", "image", "empty object (0 bytes)", hk.empty, "empty.qcow2", FUNCTION, f"{NOT_A_DISK}: the object is empty"),
    Case(
        "random-bytes",
        "image",
        "3 MiB of random bytes named `.qcow2`",
        hk.random_bytes,
        "random.qcow2",
        FUNCTION,
        f"{NOT_A_DISK}: no disk image signature",
    ),
    Case(
        "qcow2-magic-random",
        "image",
        "qcow2 magic followed by random bytes",
        hk.qcow2_magic_then_random,
        "magic.qcow2",
        INSPECT,
        "malformed qcow2 image",
    ),
]

NAME_CASES = [
    Case(
        "name-shell-syntax",
        "name",
        "name with `'`, `\"`, `$(touch ...)`, backticks and `;touch ...;`",
        hk.plain_qcow2,
        'it\'s a "quoted" $(touch {canary}) `touch {canary}`;touch {canary};.qcow2',
        SUCCESS,
        expected_bytes=host_disk_bytes,
    ),
    Case(
        "name-newline-not-an-image",
        "name",
        "random bytes named `notes\\n$(touch ...)\\n.qcow2`: the function's reason stays on one line",
        hk.random_bytes,
        "notes\n$(touch {canary})\n.qcow2",
        FUNCTION,
        f"{NOT_A_DISK}: no disk image signature",
    ),
    Case(
        "name-newlines",
        "name",
        "name with newlines",
        hk.plain_qcow2,
        "first line\n$(touch {canary})\nsecond.qcow2",
        SUCCESS,
        expected_bytes=host_disk_bytes,
    ),
    Case(
        "name-dot-dot",
        "name",
        "name `../../../tmp/../disk.qcow2`",
        hk.plain_qcow2,
        "../../../tmp/../disk.qcow2",
        SUCCESS,
        expected_bytes=host_disk_bytes,
    ),
    Case(
        "name-1024-bytes",
        "name",
        "name of 1024 bytes (OCI's maximum), mostly Cyrillic",
        hk.plain_qcow2,
        "long-" + "д" * 506 + "x.qcow2",
        SUCCESS,
        expected_bytes=host_disk_bytes,
    ),
    Case(
        "name-unicode",
        "name",
        "unicode name: Cyrillic, emoji, a right-to-left override",
        hk.plain_qcow2,
        "образы/диск 💾 \u202egpj.qcow2",
        SUCCESS,
        expected_bytes=host_disk_bytes,
    ),
]


def tiny_qcow2(host: Host, out: Path) -> Path:
    hk.qemu_img("create", "-q", "-f", "qcow2", str(out), "1M")
    return out


BAD_OPTION = "inspect_object"


def _bad(case_id: str, what: str, key: str, value: str, cause: str) -> Case:
    return Case(
        case_id,
        "metadata",
        what,
        tiny_qcow2,
        f"options/{case_id}.qcow2",
        BAD_OPTION,
        f"^inspect_object: (bad import option: )?{cause}",
        {key: value},
    )


INJECT = "$(touch {canary})"
METADATA_CASES = [
    _bad("meta-ad-out-of-range", "`ad_number=4`", "ad_number", "4", r"ad_number: must be 1, 2 or 3 \(got \"4\"\)"),
    _bad("meta-vpus-out-of-range", "`vpus_per_gb=130`", "vpus_per_gb", "130", r"vpus_per_gb: must be one of 0, 10, 20, \.\.\. 120"),
    _bad("meta-vpus-negative", "`vpus_per_gb=-10`", "vpus_per_gb", "-10", r"vpus_per_gb: must be one of 0, 10, 20, \.\.\. 120"),
    _bad("meta-ad-wrong-type", "`ad_number=two`", "ad_number", "two", r"ad_number: must be 1, 2 or 3 \(got \"two\"\)"),
    _bad("meta-vpus-wrong-type", "`vpus_per_gb=10.5`", "vpus_per_gb", "10.5", "vpus_per_gb: must be one of"),
    _bad("meta-verify-wrong-type", "`verify=maybe`", "verify", "maybe", "verify: must be true or false"),
    _bad("meta-tags-list", "`tags=[1, 2]`", "tags", "[1, 2]", "tags: must be a JSON object of strings"),
    _bad("meta-tags-nested", '`tags={"a": {"b": 1}}`', "tags", '{"a": {"b": 1}}', 'tags: value of "a" must be a string'),
    _bad("meta-tags-reserved", '`tags={"vdimport-run": "x"}`', "tags", '{"vdimport-run": "x"}', 'tags: key "vdimport-run" is reserved'),
    _bad("inject-ad_number", "`ad_number=1; touch ...`", "ad_number", "1; touch {canary}", "ad_number: must be 1, 2 or 3"),
    _bad("inject-vpus_per_gb", "`vpus_per_gb=`touch ...``", "vpus_per_gb", "`touch {canary}`", "vpus_per_gb: must be one of"),
    _bad("inject-backup_policy", "`backup_policy=$(touch ...)`", "backup_policy", INJECT, "backup_policy: must be bronze, silver, gold"),
    _bad(
        "inject-compartment_id",
        "`compartment_id=ocid1.compartment.oc1..a$(touch ...)`",
        "compartment_id",
        "ocid1.compartment.oc1..a" + INJECT,
        "compartment_id: must be a compartment OCID",
    ),
    _bad("inject-source_format", "`source_format=qcow2 $(touch ...)`", "source_format", "qcow2 " + INJECT, "source_format: must be one of"),
    _bad(
        "inject-kms_key_id",
        "`kms_key_id=ocid1.key.oc1..a;touch ...`",
        "kms_key_id",
        "ocid1.key.oc1..a;touch {canary}",
        "kms_key_id: must be a Vault key OCID",
    ),
    _bad("inject-verify", "`verify=true && touch ...`", "verify", "true && touch {canary}", "verify: must be true or false"),
    _bad(
        "inject-keep_on_failure",
        "`keep_on_failure=false|touch ...`",
        "keep_on_failure",
        "false|touch {canary}",
        "keep_on_failure: must be true or false",
    ),
    _bad("inject-fsck", "`fsck=check'; touch ...; '`", "fsck", "check'; touch {canary}; '", "fsck: must be off, check or strict"),
    _bad("inject-tags", "`tags=$(touch ...)`", "tags", INJECT, "tags: must be a JSON object of strings"),
    _bad("inject-tags-key", '`tags={"$(touch ...)": "x"}`', "tags", '{"' + INJECT + '": "x"}', "tags: key .* must be 1-100 letters"),
    Case(
        "inject-accepted-values",
        "metadata",
        "`volume_name` and a tag value full of shell syntax, an unknown key `x$(touch${IFS}...)`: data, accepted",
        hk.plain_qcow2,
        "accepted.qcow2",
        SUCCESS,
        metadata={
            "volume_name": "$(touch {canary}); `touch {canary}` | rm -rf / & echo 'x' > \"y\"",
            "tags": '{"note": "$(touch {canary}); `touch {canary}`"}',
            "x$(touch${IFS}{canary})": "1",
        },
        expected_bytes=host_disk_bytes,
    ),
]

CASES = IMAGE_CASES + NAME_CASES + METADATA_CASES


# --- running the corpus ------------------------------------------------------------------------
@dataclass
class Outcome:
    case: Case
    image: Path
    uploaded: UploadedObject | None
    result: dict[str, Any]  # what `vdimport-local import --json` prints
    seconds: float

    @property
    def failed_step(self) -> str | None:
        return next((s["name"] for s in self.result.get("steps") or [] if s.get("state") == "failed"), None)

    @property
    def where(self) -> str:
        """FUNCTION, SUCCESS or the failed step: comparable with Case.where."""
        if self.result["state"] == "success":
            return SUCCESS
        if self.result.get("dag_run_id") is None and str(self.result.get("error") or "").startswith("not imported: the function"):
            return FUNCTION
        return self.failed_step or "?"


def _upload(stack: LocalStack, case: Case, image: Path) -> UploadedObject:
    importer = Importer(stack, io.StringIO())
    return importer.upload(image, case.object_name(), case.object_metadata())


def _settle(stack: LocalStack, obj: UploadedObject) -> dict[str, Any]:
    """The ``import --json`` answer for an upload whose run (or the function's refusal) is over."""
    importer = Importer(stack, io.StringIO())
    try:
        run_id = importer.wait_for_trigger(obj, timeout=2)
    except ImportFailed as exc:
        return importer.result(obj, None, None, str(exc))
    run = importer.airflow.dag_run(DAG_ID, run_id)
    error = f"run {run_id} still {run.get('state')} when the corpus timed out" if run.get("state") not in FINISHED else None
    return importer.result(obj, run_id, run, error)


def _decided(stack: LocalStack) -> set[tuple[str, str]]:
    """(object, etag) of every upload the function answered without a run (skipped or rejected)."""
    decided = set()
    for entry in fnhost.invocations(stack.function_dir):
        answer, event = entry.get("answer"), entry.get("event") or {}
        if entry.get("status") == 200 and isinstance(answer, dict) and answer.get("decision") in ("skipped", "rejected"):
            decided.add((str(event.get("object")), str(event.get("etag"))))
    return decided


def run_corpus(stack: LocalStack, cases: list[Case], host: Host, workdir: Path, timeout: float) -> dict[str, Outcome]:
    """Build every case's file, upload them all at once, wait for every outcome (runs in parallel)."""
    images = {}
    for case in cases:
        where = workdir / case.id
        where.mkdir(parents=True, exist_ok=True)
        images[case.id] = case.build(host, where / f"upload{Path(case.name).suffix}")
    started = time.monotonic()
    with ThreadPoolExecutor(4, thread_name_prefix="upload") as pool:
        uploads = {case.id: pool.submit(_upload, stack, case, images[case.id]) for case in cases}
        objects = {case_id: future.result() for case_id, future in uploads.items()}
    airflow = stack.airflow()
    pending = dict(objects)
    finished_at: dict[str, float] = {}
    deadline = started + timeout
    while pending and time.monotonic() < deadline:
        time.sleep(2)
        reply = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100&order_by=-run_after")
        states = {r["dag_run_id"]: r["state"] for r in reply.get("dag_runs", [])}
        decided = _decided(stack)
        for case_id, obj in list(pending.items()):
            if states.get(obj.run_id) in FINISHED or (obj.name, obj.etag) in decided:
                finished_at[case_id] = time.monotonic() - started
                del pending[case_id]
    outcomes = {}
    for case in cases:
        obj = objects[case.id]
        result = _settle(stack, obj)
        outcomes[case.id] = Outcome(case, images[case.id], obj, result, finished_at.get(case.id, timeout))
    return outcomes


# --- events -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EventContext:
    namespace: str
    bucket: str
    real_event: dict[str, Any]  # the createobject event of an object imported successfully
    skipped_event: dict[str, Any]  # the createobject event of an upload the function skipped (not an image)


def event_for(ctx: EventContext, **changes: Any) -> dict[str, Any]:
    """A copy of the real event; ``changes`` as dotted paths (``data.additionalDetails.eTag``) -> value (None deletes)."""
    event = json.loads(json.dumps(ctx.real_event))
    event["eventID"] = f"crafted-{os.urandom(4).hex()}"
    for path, value in changes.items():
        *parents, last = path.split(".")
        target = event
        for key in parents:
            target = target[key]
        if value is None:
            target.pop(last, None)
        else:
            target[last] = value
    return event


def _renamed(ctx: EventContext, name: str) -> dict[str, Any]:
    return event_for(ctx, **{"data.resourceName": name, "data.resourceId": f"/n/{ctx.namespace}/b/{ctx.bucket}/o/{name}"})


def _other_bucket(ctx: EventContext, bucket: str = "not-the-import-bucket") -> dict[str, Any]:
    name = ctx.real_event["data"]["resourceName"]
    return event_for(ctx, **{"data.additionalDetails.bucketName": bucket, "data.resourceId": f"/n/{ctx.namespace}/b/{bucket}/o/{name}"})


def _other_namespace(ctx: EventContext) -> dict[str, Any]:
    name = ctx.real_event["data"]["resourceName"]
    return event_for(
        ctx, **{"data.additionalDetails.namespace": "someone-else", "data.resourceId": f"/n/someone-else/b/{ctx.bucket}/o/{name}"}
    )


Payload = Callable[[EventContext], bytes]


def _json(build: Callable[[EventContext], Any]) -> Payload:
    return lambda ctx: json.dumps(build(ctx)).encode()


@dataclass(frozen=True)
class EventCase:
    id: str
    what: str
    payload: Payload
    decision: str  # the function's answer: rejected | skipped | duplicate
    reason: str  # regex searched in the answer's reason


TYPE = "com.oraclecloud.objectstorage"
EVENT_CASES = [
    EventCase(
        "malformed-json", "truncated JSON", lambda ctx: json.dumps(ctx.real_event).encode()[:-7], "rejected", r"^payload is not JSON \("
    ),
    EventCase(
        "not-utf8", "bytes that are not UTF-8", lambda ctx: b"\xff\xfe\x00{" + os.urandom(64), "rejected", "^payload is not UTF-8 text$"
    ),
    EventCase("empty-payload", "empty body", lambda ctx: b"", "rejected", "^empty payload$"),
    EventCase("json-array", "a JSON array", lambda ctx: b"[1, 2, 3]", "rejected", "^payload is a JSON list, not an event object$"),
    EventCase("no-event-type", "no `eventType`", _json(lambda ctx: event_for(ctx, eventType=None)), "rejected", "^no eventType"),
    EventCase(
        "delete-event",
        "`deleteobject` event",
        _json(lambda ctx: event_for(ctx, eventType=f"{TYPE}.deleteobject")),
        "rejected",
        f"^event type '?{TYPE}.deleteobject'? is not handled",
    ),
    EventCase(
        "foreign-event-type",
        "event type `com.example.evil`",
        _json(lambda ctx: event_for(ctx, eventType="com.example.evil")),
        "rejected",
        "^event type '?com.example.evil'? is not handled",
    ),
    EventCase("no-data", "no `data`", _json(lambda ctx: event_for(ctx, data=None)), "rejected", "^missing field data$"),
    EventCase(
        "no-etag",
        "no `data.additionalDetails.eTag`",
        _json(lambda ctx: event_for(ctx, **{"data.additionalDetails.eTag": None})),
        "rejected",
        "^missing or empty field data.additionalDetails.eTag$",
    ),
    EventCase(
        "no-resource-name",
        "no `data.resourceName`",
        _json(lambda ctx: event_for(ctx, **{"data.resourceName": None})),
        "rejected",
        "^missing or empty field data.resourceName$",
    ),
    EventCase(
        "etag-wrong-type",
        "`eTag` is a number",
        _json(lambda ctx: event_for(ctx, **{"data.additionalDetails.eTag": 12345})),
        "rejected",
        "^missing or empty field data.additionalDetails.eTag$",
    ),
    EventCase(
        "details-wrong-type",
        "`additionalDetails` is a string",
        _json(lambda ctx: event_for(ctx, **{"data.additionalDetails": "x"})),
        "rejected",
        "^missing field data.additionalDetails$",
    ),
    EventCase(
        "other-bucket",
        "an upload to a bucket that is not the import bucket",
        _json(_other_bucket),
        "rejected",
        "^bucket '?not-the-import-bucket'? is not one this function imports from",
    ),
    EventCase(
        "resource-id-mismatch",
        "`resourceId` names another bucket than `bucketName`",
        _json(lambda ctx: event_for(ctx, **{"data.resourceId": f"/n/{ctx.namespace}/b/other/o/x.qcow2"})),
        "rejected",
        "does not match namespace, bucket and resourceName",
    ),
    EventCase("other-namespace", "another tenancy's namespace", _json(_other_namespace), "skipped", "no longer exists"),
    EventCase(
        "missing-object",
        "an object that does not exist",
        _json(lambda ctx: _renamed(ctx, "never-uploaded.qcow2")),
        "skipped",
        "^object '?never-uploaded.qcow2'? no longer exists$",
    ),
    EventCase(
        "newline-in-name",
        "a missing object named `x\\nINFO forged log line\\x1b[2J.qcow2`",
        _json(lambda ctx: _renamed(ctx, "x\nINFO forged log line\x1b[2J.qcow2")),
        "skipped",
        "no longer exists$",
    ),
    EventCase(
        "newline-in-bucket",
        "bucket `evil\\nbucket`",
        _json(lambda ctx: _other_bucket(ctx, "evil\nbucket")),
        "rejected",
        "is not one this function imports from",
    ),
    EventCase(
        "newline-in-event-type",
        "event type `com.example\\nevil`",
        _json(lambda ctx: event_for(ctx, eventType="com.example\nevil")),
        "rejected",
        "is not handled",
    ),
    EventCase(
        "newline-in-etag",
        "eTag `x\\nINFO forged`",
        _json(lambda ctx: event_for(ctx, **{"data.additionalDetails.eTag": "x\nINFO forged"})),
        "skipped",
        "changed since the event",
    ),
    EventCase(
        "stale-etag",
        "an old eTag of an existing object",
        _json(lambda ctx: event_for(ctx, **{"data.additionalDetails.eTag": "stale-etag"})),
        "skipped",
        "changed since the event",
    ),
    EventCase(
        "injection-in-name",
        "object name `$(touch ...)`; `touch ...`",
        _json(lambda ctx: _renamed(ctx, f"$(touch {canary('event')}); `touch {canary('event')}`")),
        "skipped",
        "no longer exists$",
    ),
    EventCase(
        "replayed",
        "the createobject event of an imported object, replayed",
        _json(lambda ctx: ctx.real_event),
        "duplicate",
        r"already has its run \(HTTP 409\)",
    ),
    EventCase(
        "replayed-skipped",
        "the event of a skipped (empty) upload, replayed",
        _json(lambda ctx: ctx.skipped_event),
        "skipped",
        "the object is empty",
    ),
]


def invoke(url: str, body: bytes) -> tuple[int, Any]:
    """POST an event to the function's invoke endpoint (what the Events service does)."""
    request = urllib.request.Request(url, data=body, method="POST", headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=150) as reply:
            status, raw = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (OSError, http.client.HTTPException) as exc:  # no answer at all: the case's test says so
        return 0, f"no answer: {type(exc).__name__}: {exc}"
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


# --- the table ----------------------------------------------------------------------------------
@dataclass
class Row:
    group: str
    case: str
    what: str
    expected: str
    actual: str
    passed: bool | None = None


TABLE: dict[str, Row] = {}
TIMINGS: dict[str, float] = {}  # wall seconds of `up`, of the corpus (build, upload, every outcome), of the events


def record(group: str, case: str, what: str, expected: str, actual: str) -> Row:
    row = TABLE.setdefault(case, Row(group, case, what, expected, actual))
    row.actual = actual
    return row


def _cell(text: str) -> str:
    text = re.sub(r"\s+", " ", text.replace("|", "\\|"))
    return text if len(text) <= 220 else text[:217] + "..."


def timings() -> str:
    return ", ".join(f"{name} {seconds:.0f} s" for name, seconds in TIMINGS.items())


def markdown_table() -> str:
    lines = ["| group | case | input | expected | actual (the one-line cause the user sees) | |", "|---|---|---|---|---|---|"]
    for row in TABLE.values():
        mark = {True: "pass", False: "FAIL", None: "-"}[row.passed]
        lines.append(f"| {row.group} | `{row.case}` | {_cell(row.what)} | {_cell(row.expected)} | {_cell(row.actual)} | {mark} |")
    return "\n".join(lines)
