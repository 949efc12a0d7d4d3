"""Hostile and broken images: refused before any byte reaches a volume, with a one-line cause.

The dangerous ones make qemu-img read a file of the machine it runs on (a qcow2 backing
file, a qcow2 external data file, a VMDK flat extent). Their target is a host file filled
with a random marker: the worker VM of the emulator runs on this machine, so a missed
check would copy the marker onto the volume. Each case checks what the user sees: the
import fails at inspect_object or download_image, ``outcome.error`` is one line naming
the cause, no volume was ever created for the run, and nothing is left behind; the last
test proves the marker is on no volume of the whole session.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hostilekit import (
    Host,
    empty,
    file_contains,
    make_host,
    ova_backing_qcow2,
    ova_disk_digest_mismatch,
    ova_manifest_mismatch,
    ova_parent_member,
    ova_symlink_member,
    ova_too_many_disks,
    plain_qcow2,
    qcow2_backing,
    qcow2_data_file,
    qcow2_huge,
    qcow2_luks,
    random_bytes,
    text_file,
    truncated,
    vmdk_capacity_zero,
    vmdk_create_type_case,
    vmdk_flat_descriptor,
    vmdk_parent_hint,
    vmdk_sparse_with_flat_extent,
)
from importkit import Importer, assert_no_volume_made, assert_nothing_leaked, new_run_id, volume_files

from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.pipeline import STEP_ORDER, run_import
from vdimport_worker.cli import EXIT_REJECTED


@pytest.fixture(scope="session")
def host(tmp_path_factory: pytest.TempPathFactory, small_disk: Path) -> Host:
    return make_host(tmp_path_factory.mktemp("hostile"), small_disk)


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Host, Path], Path]
    name: str  # the object name (its suffix is what a user might believe)
    step: str  # where it must fail
    cause: str  # a piece of the one-line cause
    metadata: dict[str, str] = field(default_factory=dict)


CASES = [
    Case("qcow2-backing-file", qcow2_backing, "backing.qcow2", "inspect_object", "backing file"),
    Case("qcow2-data-file", qcow2_data_file, "datafile.qcow2", "inspect_object", "external data file"),
    Case("vmdk-flat-descriptor", vmdk_flat_descriptor, "flat.vmdk", "inspect_object", "VMDK descriptor"),
    Case("vmdk-sparse-plus-flat-extent", vmdk_sparse_with_flat_extent, "sparse.vmdk", "inspect_object", "VMDK descriptor"),
    Case("raw-name-qcow2-backing", qcow2_backing, "disk.raw", "inspect_object", "backing file"),
    Case("declared-raw-qcow2-backing", qcow2_backing, "disk.img", "inspect_object", "backing file", {"source_format": "raw"}),
    Case(
        "declared-raw-qcow2",
        plain_qcow2,
        "disk-declared.img",
        "inspect_object",
        "source_format says raw but the content is qcow2",
        {"source_format": "raw"},
    ),
    Case("qcow2-1PiB", qcow2_huge, "huge.qcow2", "inspect_object", "larger than the largest block volume"),
    Case("truncated-qcow2", truncated("qcow2"), "cut.qcow2", "download_image", "damaged or truncated"),
    Case("truncated-vmdk", truncated("vmdk"), "cut.vmdk", "download_image", "damaged or truncated"),
    Case("truncated-vhd", truncated("vhd"), "cut.vhd", "download_image", "truncated"),
    Case("truncated-vhdx", truncated("vhdx"), "cut.vhdx", "download_image", "truncated"),
    Case("truncated-vdi", truncated("vdi"), "cut.vdi", "inspect_object", "truncated"),
    Case("truncated-raw-gpt", truncated("raw"), "cut.raw", "inspect_object", "truncated"),
    Case("truncated-vhd-fixed", truncated("vhd-fixed"), "cut-fixed.vhd", "inspect_object", "truncated"),
    Case("random-bytes", random_bytes, "random.qcow2", "inspect_object", "not a recognised disk image"),
    Case("text-file", text_file, "notes.vmdk", "inspect_object", "not a recognised disk image"),
    Case("empty-object", empty, "empty.qcow2", "inspect_object", "the object is empty"),
    Case("ova-17-disks", ova_too_many_disks, "many.ova", "inspect_object", "holds 17 disks, more than the 16"),
    Case("ova-parent-member", ova_parent_member, "escape.ova", "inspect_object", "points outside the archive"),
    Case("ova-qcow2-backing", ova_backing_qcow2, "backing.ova", "inspect_object", "backing file"),
    # What only qemu-img on the worker caught before (issue 15): now refused before any VM.
    Case("vmdk-parent-hint", vmdk_parent_hint, "child.vmdk", "inspect_object", "parentFileNameHint"),
    Case("vmdk-capacity-zero", vmdk_capacity_zero, "zero.vmdk", "inspect_object", "capacity 0"),
    Case("vmdk-createtype-case", vmdk_create_type_case, "twotypes.vmdk", "inspect_object", "VMDK descriptor line"),
    Case("qcow2-luks", qcow2_luks, "secret.qcow2", "inspect_object", "encrypted (LUKS)"),
    Case("ova-symlink", ova_symlink_member, "link.ova", "inspect_object", "is a symbolic link"),
    Case("ova-manifest-mismatch", ova_manifest_mismatch, "altered.ova", "inspect_object", "does not match its manifest"),
    Case("ova-disk-digest-mismatch", ova_disk_digest_mismatch, "altered-disk.ova", "download_image", "does not match the OVA's manifest"),
]


def _exit_code(outcome: Any, step: str) -> int:
    return int([run for run in outcome.runs if run.name == step][-1].exit_code)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_image_is_refused(importer: Importer, host: Host, tmp_path: Path, case: Case) -> None:
    """User-visible: the import fails at the named step with a one-line cause, no volume is
    ever created for the run, the worker (if any) is terminated and no PAR remains."""
    image = case.build(host, tmp_path / case.name)
    run_id = new_run_id(case.id)

    outcome = importer.run(image, f"hostile/{case.id}/{case.name}", case.metadata, run_id=run_id)

    assert not outcome.succeeded, "a hostile image was imported"
    assert outcome.failed_step == case.step, f"failed at {outcome.failed_step}: {outcome.error}"
    assert outcome.error is not None and case.cause in outcome.error
    assert "\n" not in outcome.error and len(outcome.error) < 400
    assert STEP_ORDER.index(outcome.failed_step) < STEP_ORDER.index("create_volume")
    assert _exit_code(outcome, case.step) == EXIT_REJECTED, "a refused image must not be retried"
    assert_nothing_leaked(importer.emu, outcome)
    assert_no_volume_made(importer.emu, run_id)


# --- defence in depth: download_image checks qemu-img's own view --------------------------------
BYPASS = [
    ("qcow2-backing-file", qcow2_backing, "qcow2", "backing file"),
    ("qcow2-data-file", qcow2_data_file, "qcow2", "external data file"),
    ("vmdk-flat-descriptor", vmdk_flat_descriptor, "vmdk", "monolithicFlat"),
    ("vmdk-parent-hint", vmdk_parent_hint, "vmdk", "backing file"),
    ("qcow2-luks", qcow2_luks, "qcow2", "encrypted"),
]


@pytest.mark.parametrize(("label", "build", "fmt", "cause"), BYPASS, ids=[b[0] for b in BYPASS])
def test_download_refuses_what_inspection_missed(
    importer: Importer, host: Host, tmp_path: Path, label: str, build: Callable[[Host, Path], Path], fmt: str, cause: str
) -> None:
    """User-visible: even with inspect_object's verdict forged to "safe", download_image refuses
    the image from ``qemu-img info`` on the worker, before any volume exists, and cleans up."""
    emu, bucket = importer.emu, importer.bucket
    benign = plain_qcow2(host, tmp_path / "benign.qcow2")
    first = importer.run(benign, f"bypass/{label}/benign.qcow2", steps=("inspect_object",))
    assert first.succeeded, first.error
    hostile = build(host, tmp_path / f"evil.{fmt}")
    name = f"bypass/{label}/evil.{fmt}"
    etag = bucket.put(name, hostile)
    info = json.loads(
        subprocess.run(["qemu-img", "info", "-f", fmt, "--output=json", str(hostile)], capture_output=True, check=True).stdout
    )
    inspected = first.state["inspect_object"]
    size = hostile.stat().st_size
    inspected["object"].update(name=name, etag=etag, size=size, md5=None)
    inspected["source"].update(format=fmt, offset=0, length=size, virtual_size=info["virtual-size"])
    request = {"namespace": bucket.namespace, "bucket": bucket.name, "object": name, "etag": etag, "size": size}
    run_id = new_run_id(f"bypass-{label}")
    steps = ("launch_worker", "wait_worker_ready", "download_image", "terminate_worker")

    outcome = run_import(emu, run_id, request, steps=steps, state={"inspect_object": inspected})

    assert outcome.failed_step == "download_image", f"{outcome.failed_step}: {outcome.error}"
    assert outcome.error is not None and cause in outcome.error and "\n" not in outcome.error
    assert _exit_code(outcome, "download_image") == EXIT_REJECTED
    assert_nothing_leaked(emu, outcome)
    assert_no_volume_made(emu, run_id)


def test_marker_is_on_no_volume(emu: EmulatorHandle, host: Host) -> None:
    """User-visible: after every import of the session so far (formats, names, hostile images),
    no volume's bytes contain the host file the hostile images pointed at."""
    files = volume_files(emu)
    assert len(files) >= len([v for v in emu.resources("volume") if v["lifecycleState"] == "AVAILABLE"])
    leaked = [p.name for p in files if file_contains(p, host.marker)]
    assert not leaked, f"host bytes reached volumes: {leaked}"


def test_marker_scan_finds_bytes_behind_holes(tmp_path: Path, host: Host) -> None:
    """The scan above is not vacuous: it finds the marker after a hole and across a read boundary."""
    sparse = tmp_path / "volume.img"
    with open(sparse, "wb") as f:
        f.truncate(3 << 30)
        f.seek(2 << 30)  # a data extent after a 2 GiB hole; the marker straddles its first 8 MiB read
        f.write(b"x" * ((8 << 20) - 10) + host.marker + b"y" * 4096)
    assert file_contains(sparse, host.marker)
    assert not file_contains(sparse, host.marker[::-1])
