"""Every supported format, imported through all 14 steps against the emulator.

Two real disks are built once per session: a GPT disk (ext4 with files, xfs, vfat) and an
MBR disk (vfat, ext4 with files). Each case converts one of them with real qemu-img,
uploads it, runs the whole import (a few cases at a time, like concurrent DAG runs), and checks what a user would: the volume holds exactly
what ``qemu-img convert -O raw`` makes of the upload, the report names the right source
format and says every partition is clean with its own file system, and nothing is left
behind (worker terminated, no PAR, no attachment, exactly one volume). The producer cases do the
same for images laid out the way Hyper-V, ovftool and VirtualBox write them (issue 15), and for
an ovftool export of a VM with a data disk: one volume per disk, in one run.
"""

from __future__ import annotations

import json
import struct
import subprocess
import tarfile
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import pytest
from importkit import assert_disks_delivered, assert_nothing_leaked, concurrent_imports, new_run_id, selected_params

from vdimport_local.diskimages import FORMATS, Partition, build_disk, convert, make_ova, make_producer_ova, raw_bytes, sample_files
from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.pipeline import ImportOutcome

IMPORT_TIMEOUT = 600


@dataclass(frozen=True)
class Disk:
    raw: Path
    table: str  # what blkid reports: gpt | dos
    filesystems: tuple[str, ...]  # per partition, in order


@pytest.fixture(scope="session")
def disks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Disk]:
    """The two base disks (mostly sparse: ~406 MiB and ~106 MiB virtual)."""
    where = tmp_path_factory.mktemp("disks")
    gpt = build_disk(
        where / "gpt.raw",
        [
            Partition("ext4", 64, sample_files(seed=11, size=2 << 20)),
            Partition("xfs", 300),
            Partition("vfat", 40, {"README.TXT": b"vdimport format test\r\n", "DATA.BIN": bytes(range(256)) * 64}),
        ],
        table="gpt",
    )
    mbr = build_disk(
        where / "mbr.raw",
        [Partition("vfat", 40, {"BOOT.TXT": b"mbr disk\r\n"}), Partition("ext4", 64, sample_files(seed=12, size=1 << 20))],
        table="dos",
    )
    # Incompressible data past the 8 MiB the pod reads from the front: a VMware-layout VMDK's real
    # header (its footer) is then only at the end of the object.
    big = build_disk(where / "big.raw", [Partition("ext4", 48, sample_files(seed=13, size=12 << 20))], table="gpt")
    return {
        "gpt": Disk(gpt, "gpt", ("ext4", "xfs", "vfat")),
        "mbr": Disk(mbr, "dos", ("vfat", "ext4")),
        "big": Disk(big, "gpt", ("ext4",)),
    }


# Images in the layout a producer writes them, from its specification (issue 15): Hyper-V's dynamic
# VHDX (vhdxwriter.py), and OVAs as ovftool and VirtualBox export them (ovapack.py), each with its
# producer's streamOptimized VMDK. The small MBR disk keeps them quick.
PRODUCER_FORMATS = {"vhdx-hyperv": "vhdx", "ova-ovftool": "vmdk", "ova-virtualbox": "vmdk"}  # -> qemu format
PRODUCER_CASES = [("mbr", fmt) for fmt in PRODUCER_FORMATS]
# A VM with a data disk, as ovftool exports it: two different disks (the second past 8 MiB).
MULTI_DISK_CASES = [("mbr+big", "ova-ovftool")]

# (disk, format as diskimages names it): every format with the GPT disk, a few with MBR, and the
# VMware-layout streamOptimized VMDK (bare and in an OVA, as vSphere exports) larger than 8 MiB.
CASES = (
    [("gpt", fmt) for fmt in [*FORMATS, "ova"] if fmt not in PRODUCER_FORMATS]
    + [("mbr", "qcow2-compressed"), ("mbr", "vhd-fixed"), ("mbr", "vmdk")]
    + [("big", "vmdk-vmware"), ("big", "ova")]
)
EXTENSION = {fmt: fmt.split("-")[0] for fmt in FORMATS}
# What ``qemu-img info`` must say about each conversion, so a case tests what it claims to.
SUBFORMAT = {"vmdk": "monolithicSparse", "vmdk-stream": "streamOptimized", "vmdk-vmware": "streamOptimized"}


def qemu_format(fmt: str) -> str:
    """What qemu-img calls the format of a ``diskimages`` format (the report's ``qemu_format``)."""
    return "vmdk" if fmt == "ova" else FORMATS[fmt][0]


def check_conversion(image: Path, fmt: str) -> None:
    """The test image is really of the kind the case names (compressed, stream-optimized, fixed)."""
    qemu = FORMATS[fmt][0]
    info = json.loads(subprocess.run(["qemu-img", "info", "-f", qemu, "--output=json", str(image)], capture_output=True, check=True).stdout)
    if fmt in SUBFORMAT:
        assert info["format-specific"]["data"]["create-type"] == SUBFORMAT[fmt]
    if fmt == "vmdk-vmware":  # VMware's layout: the header defers to the footer (gdOffset = GD_AT_END)
        data = image.read_bytes()
        assert data[56:64] == b"\xff" * 8 and data[-1024:-1020] == b"KDMV"
    if fmt == "qcow2-compressed":
        check = subprocess.run(["qemu-img", "check", "-f", "qcow2", "--output=json", str(image)], capture_output=True, check=True)
        assert json.loads(check.stdout).get("compressed-clusters", 0) > 0
    if fmt in ("vhd", "vhd-fixed"):
        footer = image.read_bytes()[-512:]
        assert footer[:8] == b"conectix" and footer[63] == (2 if fmt == "vhd-fixed" else 3), "VHD disk type"


@dataclass
class Job:
    """One case's upload, its import running in the background, and how to know what it must give."""

    image: Path
    raw_source: Path  # the file whose ``qemu-img convert -O raw`` the volume must equal
    raw_format: str
    outcome: Future[ImportOutcome]
    raw_disks: tuple[Path, ...] = ()  # a multi-disk OVA: what each disk's volume must hold


@pytest.fixture(scope="module")
def imports(
    request: pytest.FixtureRequest, emulator: EmulatorHandle, disks: dict[str, Disk], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Job]]:
    """Every selected case's import, started up front and run a few at a time; each test waits for its own."""
    where = tmp_path_factory.mktemp("formats")
    jobs: dict[str, Job] = {}
    wanted = set(zip(selected_params(request, "disk_name"), selected_params(request, "fmt"), strict=True))
    with concurrent_imports(emulator) as submit:
        for disk_name, fmt in [*CASES, *PRODUCER_CASES, *MULTI_DISK_CASES]:
            if (disk_name, fmt) not in wanted:
                continue
            if "+" in disk_name:
                raws = tuple(disks[name].raw for name in disk_name.split("+"))
                image = make_producer_ova(list(raws), where / f"vm-{len(raws)}-disks.ova", fmt[4:])
                future = submit(image, f"formats/{image.name}", run_id=new_run_id(f"format-{len(raws)}-disks"))
                jobs[f"{disk_name}-{fmt}"] = Job(image, raws[0], "raw", future, raws)
                continue
            raw = disks[disk_name].raw
            if fmt.startswith("ova-"):  # the volume must hold the raw disk the producer packaged
                image, source, source_format = make_producer_ova([raw], where / f"{disk_name}-{fmt}.ova", fmt[4:]), raw, "raw"
            elif fmt == "ova":
                inner_format = "vmdk-vmware" if disk_name == "big" else "vmdk-stream"  # vSphere's OVA export
                inner = convert(raw, inner_format, where / f"{disk_name}-disk1.vmdk")
                image, source, source_format = make_ova(inner, where / f"{disk_name}-appliance.ova"), inner, "vmdk"
            else:
                image = convert(raw, fmt, where / f"{disk_name}-{fmt}.{EXTENSION[fmt]}")
                source, source_format = image, FORMATS[fmt][0]
            future = submit(image, f"formats/{image.name}", run_id=new_run_id(f"format-{disk_name}-{fmt}"))
            jobs[f"{disk_name}-{fmt}"] = Job(image, source, source_format, future)
        yield jobs


@pytest.mark.parametrize(("disk_name", "fmt"), CASES, ids=[f"{d}-{f}" for d, f in CASES])
def test_format_imports_exactly(
    emulator: EmulatorHandle, imports: dict[str, Job], disks: dict[str, Disk], disk_name: str, fmt: str
) -> None:
    """User-visible: the volume equals the image's raw content byte for byte, the report shows
    the right format and a clean fsck per partition, and nothing but the volume remains."""
    disk, job = disks[disk_name], imports[f"{disk_name}-{fmt}"]
    check_conversion(job.raw_source, ("vmdk-vmware" if disk_name == "big" else "vmdk-stream") if fmt == "ova" else fmt)
    expected = raw_bytes(job.raw_source, job.raw_format)
    assert expected.startswith(disk.raw.read_bytes()), "test setup: the conversion changed the disk"
    if disk_name == "big":  # what the case is for: the footer lies beyond what the pod reads from the front
        assert job.raw_source.stat().st_size > 8 << 20, "test setup: the VMware-layout VMDK fits in the head"

    outcome = job.outcome.result(timeout=IMPORT_TIMEOUT)

    assert outcome.succeeded, f"{outcome.failed_step}: {outcome.error}"
    assert_nothing_leaked(emulator, outcome, expected)
    report = outcome.report or {}
    source = report["source"]
    assert source["qemu_format"] == qemu_format(fmt)
    assert source["format"] == ("vhd" if source["qemu_format"] == "vpc" else source["qemu_format"])  # the name users know
    assert source["container"] == ("ova" if fmt == "ova" else None)
    assert source["virtual_size"] == len(expected)
    assert report["volume_name"] == job.image.name.rsplit(".", 1)[0]
    assert report["checks"]["verify"] == "identical"
    fsck = [(p["number"], p["fs"], p["status"]) for p in report["checks"]["fsck"]]
    assert fsck == [(n, fs, "clean") for n, fs in enumerate(disk.filesystems, 1)]
    assert outcome.state["fsck_volume"]["table"] == disk.table


def check_producer_image(image: Path, fmt: str, raw: Path, where: Path) -> None:
    """The upload really is in the producer's layout (the generators' own tests check it in depth)."""
    if fmt == "vhdx-hyperv":
        data = image.read_bytes()[: 4 << 20]
        assert data[:8] == b"vhdxfile" and "Microsoft Windows" in data[8:520].decode("utf-16-le")
        regions = {struct.unpack_from("<Q", data, (192 << 10) + 16 + 32 * i + 16)[0] for i in range(2)}
        assert regions == {2 << 20, 3 << 20}, "metadata at 2 MiB and the BAT at 3 MiB, as Hyper-V lays them out"
        return
    with tarfile.open(image) as tar:
        names = tar.getnames()
        disk_name = next(n for n in names if n.endswith(".vmdk"))
        member = where / f"{image.stem}-{disk_name}"
        handle = tar.extractfile(disk_name)
        assert handle is not None
        member.write_bytes(handle.read())
    stem = image.stem
    if fmt == "ova-ovftool":
        assert names == [f"{stem}.ovf", f"{stem}.mf", f"{stem}-disk1.vmdk"]
    else:
        assert names == [f"{stem}.ovf", f"{stem}-disk001.vmdk", f"{stem}.mf"]
    assert member.read_bytes()[56:64] == b"\xff" * 8, "both producers' headers defer to the footer (GD_AT_END)"
    assert raw_bytes(member, "vmdk") == raw.read_bytes(), "test setup: the packaged VMDK does not hold the disk"


@pytest.mark.parametrize(("disk_name", "fmt"), PRODUCER_CASES, ids=[f"{d}-{f}" for d, f in PRODUCER_CASES])
def test_producer_image_imports_exactly(
    emulator: EmulatorHandle, imports: dict[str, Job], disks: dict[str, Disk], disk_name: str, fmt: str, tmp_path: Path
) -> None:
    """User-visible, for an image made the way Hyper-V, ovftool or VirtualBox makes it: the volume
    equals the disk byte for byte, the report names the format (and the OVA), fsck is clean per
    partition, and nothing but the volume remains."""
    disk, job = disks[disk_name], imports[f"{disk_name}-{fmt}"]
    check_producer_image(job.image, fmt, disk.raw, tmp_path)
    expected = raw_bytes(job.raw_source, job.raw_format)
    assert expected.startswith(disk.raw.read_bytes()), "test setup: the conversion changed the disk"

    outcome = job.outcome.result(timeout=IMPORT_TIMEOUT)

    assert outcome.succeeded, f"{outcome.failed_step}: {outcome.error}"
    assert_nothing_leaked(emulator, outcome, expected)
    report = outcome.report or {}
    source = report["source"]
    assert (source["qemu_format"], source["format"]) == (PRODUCER_FORMATS[fmt], PRODUCER_FORMATS[fmt])
    assert source["container"] == ("ova" if fmt.startswith("ova-") else None)
    assert source["virtual_size"] == len(expected)
    assert report["volume_name"] == job.image.name.rsplit(".", 1)[0]
    assert report["checks"]["verify"] == "identical"
    fsck = [(p["number"], p["fs"], p["status"]) for p in report["checks"]["fsck"]]
    assert fsck == [(n, fs, "clean") for n, fs in enumerate(disk.filesystems, 1)]
    assert outcome.state["fsck_volume"]["table"] == disk.table


@pytest.mark.parametrize(("disk_name", "fmt"), MULTI_DISK_CASES, ids=[f"{d}-{f}" for d, f in MULTI_DISK_CASES])
def test_multi_disk_ova_imports_every_disk(
    emulator: EmulatorHandle, imports: dict[str, Job], disks: dict[str, Disk], disk_name: str, fmt: str
) -> None:
    """User-visible, for a VM with a data disk: one run makes one volume per disk, named
    ``<ova>-disk1``, ``-disk2`` in archive order, each equal to its own disk byte for byte, each
    fsck'd and verified, all listed in the report; nothing else remains."""
    job = imports[f"{disk_name}-{fmt}"]
    with tarfile.open(job.image) as tar:
        assert [n for n in tar.getnames() if n.endswith(".vmdk")] == ["vm-2-disks-disk1.vmdk", "vm-2-disks-disk2.vmdk"]
    base = [disks[name] for name in disk_name.split("+")]

    outcome = job.outcome.result(timeout=IMPORT_TIMEOUT)

    assert outcome.succeeded, f"{outcome.failed_step}: {outcome.error}"
    assert_disks_delivered(emulator, outcome, [raw.read_bytes() for raw in job.raw_disks])
    report = outcome.report or {}
    volumes = report["volumes"]
    assert [(v["disk"], v["volume_name"], v["source"]["member"]) for v in volumes] == [
        (1, "vm-2-disks-disk1", "vm-2-disks-disk1.vmdk"),
        (2, "vm-2-disks-disk2", "vm-2-disks-disk2.vmdk"),
    ]
    for volume, disk, raw in zip(volumes, base, job.raw_disks, strict=True):
        assert volume["source"]["virtual_size"] == raw.stat().st_size
        assert volume["checks"]["verify"] == "identical"
        fsck = [(p["number"], p["fs"], p["status"]) for p in volume["checks"]["fsck"]]
        assert fsck == [(n, fs, "clean") for n, fs in enumerate(disk.filesystems, 1)]
    tags = {
        v["id"]: v["freeformTags"].get("vdimport-disk")
        for v in emulator.resources("volume")
        if v["id"] in {x["volume_id"] for x in volumes}
    }
    assert sorted(tags.values()) == ["1", "2"]
    assert outcome.state["fsck_volume"]["disks"]["2"]["table"] == "gpt"
