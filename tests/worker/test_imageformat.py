"""Unit tests of the image inspection: format detection, the safety checks, qemu-img's view.

``inspect_sources`` gets the object only through ranged reads; here they read a local file
made by real qemu-img (or crafted bytes where qemu-img cannot make the hostile thing).
Each refusal must be an ``UnsafeImage`` whose message is the one line a user reads.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from vdimport_local.diskimages import FORMATS, convert, make_ova
from vdimport_worker.imageformat import MAX_VIRTUAL_SIZE, SourceImage, UnsafeImage, check_qemu_info, inspect_sources

MIB = 1 << 20


def inspect_bytes(data: bytes, declared: str | None = None, size: int | None = None) -> SourceImage:
    def read(offset: int, length: int) -> bytes:
        return data[offset : offset + length]

    (image,) = inspect_sources(read, len(data) if size is None else size, declared)
    return image


def inspect_file(path: Path, declared: str | None = None) -> SourceImage:
    return inspect_bytes(path.read_bytes(), declared)


def refused(data: bytes, declared: str | None = None, size: int | None = None) -> str:
    """The one-line cause inspect_sources gives for ``data`` (fails the test if it accepts it)."""
    with pytest.raises(UnsafeImage) as caught:
        inspect_bytes(data, declared, size)
    message = str(caught.value)
    assert message and "\n" not in message
    return message


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("imageformat")


# --- detection of every supported format -------------------------------------------------------
DETECTED = {"raw": "raw", "qcow2": "qcow2", "qcow2-compressed": "qcow2", "vmdk": "vmdk", "vmdk-stream": "vmdk", "vmdk-vmware": "vmdk"}
DETECTED |= {"vhd": "vpc", "vhd-fixed": "vpc", "vhdx": "vhdx", "vhdx-hyperv": "vhdx", "vdi": "vdi"}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_detects_every_format_from_its_bytes(small_disk: Path, work: Path, fmt: str) -> None:
    """The qemu-img format and virtual size come from the content (the name is ignored)."""
    image = convert(small_disk, fmt, work / f"detect-{fmt}.bin")
    found = inspect_file(image)
    assert found.format == DETECTED[fmt]
    assert (found.offset, found.length, found.container) == (0, image.stat().st_size, None)
    if fmt in ("vhd",):  # CHS geometry rounds a dynamic VHD's size up
        assert found.virtual_size >= small_disk.stat().st_size
    else:
        assert found.virtual_size == small_disk.stat().st_size


def test_declared_format_must_match_the_content(small_disk: Path, work: Path) -> None:
    image = convert(small_disk, "qcow2", work / "declared.qcow2").read_bytes()
    assert inspect_bytes(image, "qcow2").format == "qcow2"
    assert refused(image, "vmdk") == "source_format says vmdk but the content is qcow2"
    assert refused(image, "raw") == "source_format says raw but the content is qcow2"
    assert refused(image, "ova") == "source_format says ova but the object is not a tar archive"
    assert inspect_bytes(small_disk.read_bytes(), "raw").format == "raw"


def test_ova_disk_is_found_in_place(small_disk: Path, work: Path) -> None:
    """The disk inside an .ova is located by its tar header: offset and length point at its bytes."""
    disk = convert(small_disk, "vmdk-stream", work / "disk1.vmdk")
    ova = make_ova(disk, work / "appliance.ova").read_bytes()
    found = inspect_bytes(ova)
    assert (found.format, found.container, found.member) == ("vmdk", "ova", "disk1.vmdk")
    assert ova[found.offset : found.offset + found.length] == disk.read_bytes()
    assert found.virtual_size == small_disk.stat().st_size
    assert inspect_bytes(ova, "ova").member == "disk1.vmdk"
    assert refused(ova, "vmdk") == "source_format says vmdk but the object is a tar archive (an .ova)"


def tar_of(members: list[tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for info, data in members:
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return out.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    if kind == tarfile.SYMTYPE:
        info.linkname = "/etc/shadow"
    return info


def test_ova_with_a_long_member_name(small_disk: Path, work: Path) -> None:
    """GNU long names (over 100 characters) are followed to the disk's real name."""
    disk = convert(small_disk, "vmdk", work / "long.vmdk").read_bytes()
    name = "a" * 120 + "/disk.vmdk"
    found = inspect_bytes(tar_of([(member("x.ovf"), b"<Envelope/>"), (member(name), disk)], tarfile.GNU_FORMAT))
    assert (found.member, found.format) == (name, "vmdk")


@pytest.mark.parametrize(
    ("members", "cause"),
    [
        (
            [("x.ovf", tarfile.REGTYPE), ("../disk.vmdk", tarfile.REGTYPE)],
            "unsafe ova: member name '../disk.vmdk' points outside the archive",
        ),
        ([("/abs/disk.vmdk", tarfile.REGTYPE)], "unsafe ova: member name '/abs/disk.vmdk' points outside the archive"),
        (
            [("x.ovf", tarfile.REGTYPE), ("disk.vmdk", tarfile.SYMTYPE)],
            "unsafe ova: member 'disk.vmdk' is a symbolic link (only plain files are allowed in an OVA)",
        ),
        (
            [("x.ovf", tarfile.REGTYPE), ("disk.vmdk", tarfile.CHRTYPE)],
            "unsafe ova: member 'disk.vmdk' is a character device (only plain files are allowed in an OVA)",
        ),
        ([("x.ovf", tarfile.REGTYPE), ("notes.txt", tarfile.REGTYPE)], "ova: the archive holds no disk image (.vmdk, .vhd, .qcow2, ...)"),
        (
            [(f"disk{n}.vmdk", tarfile.REGTYPE) for n in range(17)],
            "ova: the archive holds 17 disks, more than the 16 one import makes volumes for",
        ),
    ],
    ids=["parent-dir", "absolute", "symlink", "device", "no-disk", "17-disks"],
)
def test_ova_members_are_checked(small_disk: Path, work: Path, members: list[tuple[str, bytes]], cause: str) -> None:
    disk = convert(small_disk, "vmdk-stream", work / "ova-member.vmdk").read_bytes()
    data = tar_of([(member(name, kind), disk if name.endswith(".vmdk") else b"text") for name, kind in members])
    assert refused(data) == cause


def test_ova_with_too_many_members_or_cut_short(small_disk: Path) -> None:
    many = tar_of([(member(f"f{i}.txt"), b"") for i in range(300)])
    assert refused(many) == "ova: more than 256 members"
    ova = tar_of([(member("x.ovf"), b"<Envelope/>"), (member("disk.raw"), small_disk.read_bytes())])
    assert refused(ova[: len(ova) // 2]) == "malformed ova: a member runs past the end of the archive (truncated?)"


# --- what must never be imported -------------------------------------------------------------
def test_qcow2_backing_file_and_data_file(work: Path) -> None:
    host = work / "host-file.raw"
    host.write_bytes(b"secret" * 1000)
    backing = work / "backing.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(host), "-F", "raw", str(backing))
    message = "unsafe qcow2 image: it names a backing file, which would make qemu-img read another file"
    assert refused(backing.read_bytes()) == message
    assert refused(backing.read_bytes(), "raw") == message  # declaring raw does not make it raw
    assert refused(backing.read_bytes(), "qcow2") == message
    data_file = work / "datafile.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={work / 'data.raw'}", str(data_file), "1M")
    assert "external data file" in refused(data_file.read_bytes())


def test_vmdk_with_extents_outside_the_file(work: Path) -> None:
    descriptor = f'# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"\nRW 2048 FLAT "{work / "host.raw"}" 0\n'
    assert refused(descriptor.encode()).startswith("unsafe vmdk image: its VMDK descriptor is not a single self-contained extent")
    flat = work / "flat.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", str(flat), "1M")
    assert "vmdk" in refused(flat.read_bytes())


def test_sizes_out_of_range(work: Path) -> None:
    huge = work / "huge.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", str(huge), "1P")
    assert refused(huge.read_bytes()) == "virtual size 1125899906842624 bytes is larger than the largest block volume (32 TiB)"
    fine = work / "32t.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", str(fine), "32T")
    assert inspect_file(fine).virtual_size == MAX_VIRTUAL_SIZE


def test_not_an_image() -> None:
    not_image = "the content is not a recognised disk image (no image header, partition table or file system)"
    assert refused(os.urandom(MIB)).startswith(not_image)
    assert refused(b"hello world\n" * 1000).startswith(not_image)
    assert refused(b"") == "the object is empty"
    assert refused(b"\0" * MIB).startswith(not_image)
    assert inspect_bytes(os.urandom(MIB), "raw").format == "raw"  # the user said so: a raw disk of 1 MiB


def test_qed_and_luks_are_named(work: Path) -> None:
    qed = work / "x.qed"
    qemu_img("create", "-q", "-f", "qed", str(qed), "1M")
    assert refused(qed.read_bytes()) == "QED images are not supported; convert to qcow2 first"
    luks = struct.pack(">6sH32s32s32sII", b"LUKS\xba\xbe", 1, b"aes", b"xts-plain64", b"sha256", 4096, 64).ljust(MIB, b"\0")
    assert refused(luks) == "the image is LUKS-encrypted; decrypt it before importing"


def test_object_shorter_than_reported(small_disk: Path, work: Path) -> None:
    image = convert(small_disk, "qcow2", work / "short.qcow2").read_bytes()
    assert refused(image[:1000], size=len(image)) == "the object is shorter than its reported size (truncated?)"
    assert refused(image[:40]) == "the qcow2 header is cut short (a truncated or malformed image)"
    vhdx = convert(small_disk, "vhdx", work / "short.vhdx").read_bytes()
    assert "header" in refused(vhdx[:1000])
    vdi = convert(small_disk, "vdi", work / "short.vdi").read_bytes()
    assert refused(vdi[:300]) == "the vdi header is cut short (a truncated or malformed image)"


def vhd_footer(disk_type: int, current_size: int) -> bytes:
    footer = bytearray(512)
    footer[:8] = b"conectix"
    struct.pack_into(">Q", footer, 48, current_size)
    struct.pack_into(">I", footer, 60, disk_type)
    return bytes(footer)


def test_footer_only_vhds(small_disk: Path) -> None:
    raw = small_disk.read_bytes()
    assert inspect_bytes(raw + vhd_footer(2, len(raw))).format == "vpc"
    assert "differencing VHD" in refused(raw + vhd_footer(4, len(raw)))
    assert refused(raw + vhd_footer(2, len(raw) * 2)) == "malformed vhd image: its size is larger than the file (truncated?)"
    assert "footer-only VHD of type 3" in refused(raw + vhd_footer(3, len(raw)))


def test_truncated_raw_disks_are_refused(small_disk: Path, work: Path) -> None:
    """A cut-off raw disk would import "successfully" with its tail missing: GPT and MBR tell."""
    gpt = small_disk.read_bytes()
    assert inspect_bytes(gpt).format == "raw"
    assert "the image is truncated" in refused(gpt[: len(gpt) - 4096])
    assert "the image is truncated" in refused(gpt[: len(gpt) - 4096], "raw")
    mbr = work / "mbr.raw"
    with open(mbr, "wb") as f:
        f.truncate(8 * MIB)
    subprocess.run(["sfdisk", "-q", str(mbr)], input=b"label: dos\nsize=4MiB, type=83\n", check=True, capture_output=True)
    data = mbr.read_bytes()
    assert inspect_bytes(data).format == "raw"
    assert inspect_bytes(data[: 5 * MIB + 512]).format == "raw"  # the partition still fits
    assert "describes 5242880 bytes" in refused(data[: 4 * MIB])
    fat = work / "fat.raw"  # a file system without a partition table: the boot code is not a table
    with open(fat, "wb") as f:
        f.truncate(4 * MIB)
    subprocess.run(["mkfs.vfat", str(fat)], check=True, capture_output=True)
    assert inspect_file(fat).format == "raw"


def test_truncated_and_differencing_vdi(small_disk: Path, work: Path) -> None:
    vdi = convert(small_disk, "vdi", work / "x.vdi").read_bytes()
    assert inspect_bytes(vdi).format == "vdi"
    assert "(truncated?)" in refused(vdi[: len(vdi) // 2])
    diff = bytearray(vdi)
    struct.pack_into("<I", diff, 0x4C, 4)
    assert "unsupported vdi image: type 4" in refused(bytes(diff))


# --- check_qemu_info: qemu-img's own view after download ----------------------------------------
PLANNED = SourceImage("qcow2", 0, 5 * MIB, 64 * MIB)
GOOD_INFO: dict[str, Any] = {"format": "qcow2", "virtual-size": 64 * MIB, "format-specific": {"type": "qcow2", "data": {"compat": "1.1"}}}


def with_info(**changes: Any) -> dict[str, Any]:
    return {**GOOD_INFO, **{k.replace("_", "-"): v for k, v in changes.items()}}


def test_qemu_info_that_matches_the_plan_passes() -> None:
    check_qemu_info(GOOD_INFO, PLANNED, "/var/tmp/image")
    vhd = SourceImage("vpc", 0, 5 * MIB, 64 * MIB)
    check_qemu_info({"format": "vpc", "virtual-size": 64 * MIB + 512 * 63}, vhd, "/var/tmp/image")  # CHS rounding
    vmdk = SourceImage("vmdk", 0, 5 * MIB, 64 * MIB)
    stream = {"type": "vmdk", "data": {"create-type": "streamOptimized", "extents": [{"filename": "/var/tmp/image"}]}}
    check_qemu_info({"format": "vmdk", "virtual-size": 64 * MIB, "format-specific": stream}, vmdk, "/var/tmp/image")


VMDK = SourceImage("vmdk", 0, 5 * MIB, 64 * MIB)


@pytest.mark.parametrize(
    ("info", "planned", "cause"),
    [
        (with_info(format="raw"), PLANNED, "qemu-img reads the image as raw, planned qcow2"),
        (with_info(backing_filename="/etc/shadow"), PLANNED, "unsafe image: qemu-img reports a backing file"),
        (with_info(full_backing_filename="/dev/sda"), PLANNED, "unsafe image: qemu-img reports a backing file"),
        (with_info(backing_filename_format="raw"), PLANNED, "unsafe image: qemu-img reports a backing file"),
        (with_info(encrypted=True), PLANNED, "the image is encrypted"),
        (
            with_info(format_specific={"type": "qcow2", "data": {"data-file": "/dev/sda"}}),
            PLANNED,
            "unsafe image: qemu-img reports an external data file",
        ),
        (
            with_info(format_specific={"type": "qcow2", "data": {"data-file-raw": True}}),
            PLANNED,
            "unsafe image: qemu-img reports an external data file",
        ),
        (
            {"format": "vmdk", "virtual-size": 64 * MIB, "format-specific": {"type": "vmdk", "data": {"create-type": "monolithicFlat"}}},
            VMDK,
            "unsafe vmdk image: type monolithicFlat (only monolithicSparse and streamOptimized)",
        ),
        (
            {
                "format": "vmdk",
                "virtual-size": 64 * MIB,
                "format-specific": {
                    "type": "vmdk",
                    "data": {"create-type": "monolithicSparse", "extents": [{"filename": "/var/tmp/image"}, {"filename": "/etc/shadow"}]},
                },
            },
            VMDK,
            "unsafe vmdk image: an extent points at another file",
        ),
        ({"format": "vmdk", "virtual-size": 64 * MIB}, VMDK, "unsafe vmdk image: type None"),
        (with_info(virtual_size=128 * MIB), PLANNED, f"qemu-img reports a virtual size of {128 * MIB} bytes, the header said {64 * MIB}"),
        (with_info(virtual_size=0), SourceImage("qcow2", 0, MIB, 0), "virtual size 0 bytes is out of range"),
        (
            with_info(virtual_size=MAX_VIRTUAL_SIZE + 1),
            SourceImage("qcow2", 0, MIB, MAX_VIRTUAL_SIZE + 1),
            f"virtual size {MAX_VIRTUAL_SIZE + 1} bytes is out of range",
        ),
    ],
    ids=[
        "format",
        "backing",
        "full-backing",
        "backing-format",
        "encrypted",
        "data-file",
        "data-file-raw",
        "vmdk-flat",
        "vmdk-extent",
        "vmdk-no-type",
        "size-mismatch",
        "size-zero",
        "size-huge",
    ],
)
def test_qemu_info_refusals(info: dict[str, Any], planned: SourceImage, cause: str) -> None:
    with pytest.raises(UnsafeImage) as caught:
        check_qemu_info(info, planned, "/var/tmp/image")
    assert str(caught.value).startswith(cause)


def test_qemu_info_of_real_images(small_disk: Path, work: Path) -> None:
    """What real qemu-img says about a hostile image is refused; about a good one, accepted."""
    good = convert(small_disk, "qcow2", work / "info-good.qcow2")
    bad = work / "info-bad.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(good), "-F", "qcow2", str(bad))

    def info(path: Path) -> dict[str, Any]:
        out = subprocess.run(["qemu-img", "info", "-f", "qcow2", "--output=json", str(path)], capture_output=True, check=True)
        return dict(json.loads(out.stdout))

    planned = inspect_file(good)
    check_qemu_info(info(good), planned, str(good))
    with pytest.raises(UnsafeImage, match="backing file"):
        check_qemu_info(info(bad), planned, str(bad))


def test_a_differencing_dynamic_vhd_is_refused(small_disk: Path, work: Path) -> None:
    """A dynamic VHD whose footer says type 4 (differencing) needs its parent: refused before
    anything runs, not imported without the parent's data."""
    image = bytearray(convert(small_disk, "vhd", work / "dynamic.vhd").read_bytes())
    assert inspect_bytes(bytes(image)).format == "vpc"
    for at in (60, len(image) - 512 + 60):  # the footer's copy at the start, and the footer
        struct.pack_into(">I", image, at, 4)
    assert refused(bytes(image)) == "unsafe vhd image: a differencing VHD reads its parent from another file"
    struct.pack_into(">I", image, 60, 2)
    assert refused(bytes(image)) == "malformed vhd image: dynamic VHD of type 2 (expected 3)"


# --- streamOptimized VMDK as VMware writes it (header gdOffset = GD_AT_END, footer at the end) --------
@pytest.fixture(scope="module")
def vmware_vmdk(work: Path) -> tuple[Path, Path]:
    """(raw disk, its VMware-layout streamOptimized VMDK), the VMDK larger than the 8 MiB read from the front."""
    raw = work / "vmware.raw"
    with raw.open("wb") as f:
        f.truncate(64 * MIB)
        f.seek(MIB)
        f.write(os.urandom(12 * MIB))
    return raw, convert(raw, "vmdk-vmware", work / "vmware.vmdk")


def test_a_vmware_layout_stream_vmdk_larger_than_the_head_is_accepted(vmware_vmdk: tuple[Path, Path], work: Path) -> None:
    raw, vmdk = vmware_vmdk
    data = vmdk.read_bytes()
    assert len(data) > 8 * MIB and data[56:64] == b"\xff" * 8, "test setup: not a GD_AT_END layout past the head"
    back = work / "vmware-back.raw"  # qemu-img, reading it as the spec says, gets the disk back
    qemu_img("convert", "-f", "vmdk", "-O", "raw", str(vmdk), str(back))
    assert back.read_bytes() == raw.read_bytes()
    image = inspect_bytes(data)
    assert (image.format, image.virtual_size, image.length) == ("vmdk", 64 * MIB, len(data))
    inside = make_ova(vmdk, work / "vmware.ova")  # as a vSphere OVA export holds it
    member = inspect_file(inside)
    assert (member.container, member.format, member.virtual_size) == ("ova", "vmdk", 64 * MIB)


@pytest.mark.parametrize(
    ("damage", "what"),
    [
        (lambda d: d[:-1024] + b"XXXX" + d[-1020:], "footer signature"),
        (lambda d: d[:-4096], "cut short"),
        (lambda d: d[:-1536] + bytes(1536), "no footer"),
    ],
    ids=["footer-altered", "truncated", "footer-zeroed"],
)
def test_a_vmware_layout_stream_vmdk_with_a_bad_footer_is_refused(vmware_vmdk: tuple[Path, Path], damage: Any, what: str) -> None:
    message = refused(damage(vmware_vmdk[1].read_bytes()))
    assert "footer" in message and "VMware" in message, (what, message)
