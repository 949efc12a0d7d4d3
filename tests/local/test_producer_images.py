"""The producer-layout generators (issue 15) make what they claim, checked by independent readers.

Each generated image is read back by real qemu-img (``info``, ``check``, ``convert -O raw``
or ``compare`` against the raw disk it was made from) and, for the parts qemu does not
look at, parsed here from the specification: MS-VHDX for ``vhdxwriter``, VMware's Virtual
Disk Format 5.0 for ``vboxvmdk``, DSP0243 and the producers' manifest syntax for
``ovapack``. Python's ``tarfile`` reads every OVA. The images are a few MiB (sparse where
they are large), so this runs in seconds.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import subprocess
import tarfile
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vdimport_local import ovapack
from vdimport_local.diskimages import Partition, build_disk, make_producer_ova, sample_files
from vdimport_local.vboxvmdk import write_stream_optimized_vbox
from vdimport_local.vhdxwriter import PAYLOAD_BLOCK_ZERO, write_vhdx
from vdimport_worker.formatrules import Unsupported, check_vhdx, crc32c

MIB = 1 << 20
OVF = "{http://schemas.dmtf.org/ovf/envelope/1}"
OVF2 = "{http://schemas.dmtf.org/ovf/envelope/2}"
GD_AT_END = b"\xff" * 8


def qemu(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True)


def qemu_info(image: Path, fmt: str) -> dict:
    done = qemu("info", "-f", fmt, "--output=json", str(image))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_qemu_reads(image: Path, fmt: str, raw: Path, tmp: Path) -> None:
    """qemu-img says ``fmt`` of the raw disk's size, finds no error, and converts it back byte for byte."""
    info = qemu_info(image, fmt)
    assert (info["format"], info["virtual-size"]) == (fmt, raw.stat().st_size)
    check = qemu("check", "-f", fmt, str(image))
    assert check.returncode == 0 and "No errors were found" in check.stdout, check.stdout + check.stderr
    back = tmp / f"{image.name}.back.raw"
    done = qemu("convert", "-f", fmt, "-O", "raw", str(image), str(back))
    assert done.returncode == 0, done.stderr
    assert back.read_bytes() == raw.read_bytes(), f"qemu-img convert of {image.name} differs from the raw disk"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("producers")


@pytest.fixture(scope="module")
def disk(work: Path) -> Path:
    """A small real disk: GPT, ext4 with files (about 26 MiB)."""
    return build_disk(work / "disk.raw", [Partition("ext4", 24, sample_files(seed=31, size=2 * MIB))], table="gpt")


@pytest.fixture(scope="module")
def other_disk(work: Path) -> Path:
    """A second, different disk: MBR, FAT (about 18 MiB)."""
    return build_disk(work / "other.raw", [Partition("vfat", 16, {"DISK2.TXT": b"second disk\r\n"})], table="dos")


def sparse_raw(path: Path, size: int, writes: dict[int, bytes]) -> Path:
    """A sparse raw file of ``size`` with ``writes`` (offset -> bytes) and holes elsewhere."""
    with path.open("wb") as f:
        f.truncate(size)
        for at, data in writes.items():
            f.seek(at)
            f.write(data)
    return path


# --- VHDX (MS-VHDX) ----------------------------------------------------------------------------
def vhdx_layout(image: Path) -> dict:
    """The VHDX structures, parsed from MS-VHDX §2.2-2.6 (not with the writer's code)."""
    data = image.read_bytes()[: 4 * MIB]
    out: dict = {"creator": data[8:520].decode("utf-16-le").split("\0")[0]}
    assert data[:8] == b"vhdxfile"
    headers = []
    for at in (64 << 10, 128 << 10):
        header = data[at : at + 4096]
        assert header[:4] == b"head"
        (stored,) = struct.unpack_from("<I", header, 4)
        assert crc32c(header[:4] + b"\0" * 4 + header[8:]) == stored, "header checksum"
        sequence, _, _, log_guid, log_version, version, log_length, log_offset = struct.unpack_from("<Q16s16s16sHHIQ", header, 8)
        headers.append({"sequence": sequence, "log_guid": log_guid, "log": (log_version, version, log_length, log_offset)})
    out["headers"] = headers
    tables = [data[at : at + (64 << 10)] for at in (192 << 10, 256 << 10)]
    assert tables[0] == tables[1], "the two region tables are identical"
    table = tables[0]
    assert table[:4] == b"regi" and crc32c(table[:4] + b"\0" * 4 + table[8:]) == struct.unpack_from("<I", table, 4)[0]
    regions = {}
    for i in range(struct.unpack_from("<I", table, 8)[0]):
        guid, at, length, required = struct.unpack_from("<16sQII", table, 16 + 32 * i)
        regions[str(uuid.UUID(bytes_le=guid)).upper()] = (at, length, required)
    out["regions"] = regions
    meta_at = regions["8B7CA206-4790-4B9A-B8FE-575F050F886E"][0]
    meta = image.read_bytes()[meta_at : meta_at + MIB]
    assert meta[:8] == b"metadata"
    items = {}
    for i in range(struct.unpack_from("<H", meta, 10)[0]):
        guid, at, length, flags = struct.unpack_from("<16sIII", meta, 32 + 32 * i)
        items[str(uuid.UUID(bytes_le=guid)).upper()] = (meta[at : at + length], flags)
    out["items"] = items
    return out


FILE_PARAMETERS, VIRTUAL_SIZE = "CAA16737-FA36-4D43-B3B6-33F0AA44E76B", "2FA54224-CD1B-4876-B211-5DBED83BF4B8"
PAGE83, LOGICAL, PHYSICAL = (
    "BECA12AB-B2E6-4523-93EF-C309E000C746",
    "8141BF1D-A96F-4709-BA47-F233A8FAAB5F",
    "CDA348C7-445D-4471-9CC9-E9885251C556",
)


def bat_of(image: Path, layout: dict) -> list[int]:
    at, length, _ = layout["regions"]["2DC27766-F623-4200-9D64-115E9BFD4A08"]
    with image.open("rb") as f:
        f.seek(at)
        raw = f.read(length)
    return list(struct.unpack(f"<{length // 8}Q", raw))


def test_hyperv_vhdx_is_read_by_qemu_and_laid_out_as_ms_vhdx_says(disk: Path, work: Path) -> None:
    """Hyper-V's dynamic VHDX: 32 MiB blocks, 512e sectors, both headers and region tables valid,
    an empty log, the five required metadata items with their flags, only data blocks allocated."""
    image = write_vhdx(disk, work / "hyperv.vhdx")
    assert_qemu_reads(image, "vhdx", disk, work)
    assert check_vhdx(lambda o, n: image.read_bytes()[o : o + n], 0, image.stat().st_size) == disk.stat().st_size
    layout = vhdx_layout(image)
    assert layout["creator"].startswith("Microsoft Windows")
    first, second = layout["headers"]
    assert second["sequence"] == first["sequence"] + 1, "header 2 is current"
    assert first["log_guid"] == second["log_guid"] == bytes(16), "the log is empty"
    assert first["log"] == (0, 1, MIB, MIB)
    assert layout["regions"] == {
        "2DC27766-F623-4200-9D64-115E9BFD4A08": (3 * MIB, MIB, 1),  # BAT after the metadata, as Hyper-V places it
        "8B7CA206-4790-4B9A-B8FE-575F050F886E": (2 * MIB, MIB, 1),
    }
    items = layout["items"]
    required, virtual = 4, 2
    assert items[FILE_PARAMETERS] == (struct.pack("<II", 32 * MIB, 0), required)
    assert items[VIRTUAL_SIZE] == (struct.pack("<Q", disk.stat().st_size), required | virtual)
    assert len(items[PAGE83][0]) == 16 and items[PAGE83][1] == required | virtual
    assert items[LOGICAL] == (struct.pack("<I", 512), required | virtual)
    assert items[PHYSICAL] == (struct.pack("<I", 4096), required | virtual)
    bat = bat_of(image, layout)
    raw = disk.read_bytes()
    blocks = -(-len(raw) // (32 * MIB))
    offsets = []
    for block in range(blocks):
        entry = bat[block]  # fewer blocks than the chunk ratio (128): no sector-bitmap entry yet
        if raw[block * 32 * MIB : (block + 1) * 32 * MIB].strip(b"\0"):
            assert entry & 7 == 6, f"block {block} holds data: PAYLOAD_BLOCK_FULLY_PRESENT"
            offsets.append(entry >> 20 << 20)
        else:
            assert entry == 0, f"block {block} is zero: PAYLOAD_BLOCK_NOT_PRESENT"
    assert offsets and offsets[0] == 4 * MIB and all(o % MIB == 0 for o in offsets)
    assert image.stat().st_size == 4 * MIB + len(offsets) * 32 * MIB, "every allocated block is whole in the file"


def qemu_io_reads(image: Path, fmt: str, patterns: list[tuple[int, int, int]]) -> None:
    """qemu reads ``(offset, length, byte)``: each range holds only that byte (qemu-io's pattern check)."""
    commands = [arg for at, length, byte in patterns for arg in ("-c", f"read -q -P {byte:#x} {at} {length}")]
    done = subprocess.run(["qemu-io", "-r", "-f", fmt, *commands, str(image)], capture_output=True, text=True)
    assert done.returncode == 0 and "fail" not in (done.stdout + done.stderr).lower(), done.stdout + done.stderr


def test_vhdx_zero_blocks_and_sector_bitmap_entries(work: Path) -> None:
    """Past the chunk ratio (128 blocks of 32 MiB with 512-byte sectors, MS-VHDX §2.4) a
    sector-bitmap entry sits in the BAT: qemu must find block 128 after it; blocks left out
    are PAYLOAD_BLOCK_ZERO on request. The 4.1 GiB disk is sparse, so this costs little
    (qemu reads the written ranges and some zero ones, not all of it)."""
    block, size = 32 * MIB, 130 * 32 * MIB
    writes = {0: 0x11, 127 * block: 0x22, 128 * block + 4096: 0x33, size - 4096: 0x44}
    raw = sparse_raw(work / "wide.raw", size, {at: bytes([byte]) * 4096 for at, byte in writes.items()})
    image = write_vhdx(raw, work / "wide.vhdx", zero_blocks=PAYLOAD_BLOCK_ZERO)
    assert qemu_info(image, "vhdx")["virtual-size"] == size
    assert qemu("check", "-f", "vhdx", str(image)).returncode == 0
    zeros = [(4096, block - 4096, 0), (block, block, 0), (126 * block, block, 0), (127 * block + 4096, block - 4096, 0)]
    zeros += [(128 * block, 4096, 0), (128 * block + 8192, block - 8192, 0), (129 * block, block - 4096, 0)]
    qemu_io_reads(image, "vhdx", [(at, 4096, byte) for at, byte in writes.items()] + zeros)
    bat = bat_of(image, vhdx_layout(image))
    assert len(bat) >= 131 and not any(bat[131:]), "130 payload entries and one sector-bitmap entry"
    assert [bat[0] & 7, bat[127] & 7, bat[128], bat[129] & 7, bat[130] & 7] == [6, 6, 0, 6, 6]
    assert all(bat[i] & 7 == 2 for i in range(1, 127)), "the blocks left out read as zero"


def test_4kn_vhdx_is_well_formed_but_qemu_cannot_open_it(disk: Path, work: Path) -> None:
    """A 4 KiB-logical-sector (4Kn) VHDX is valid MS-VHDX, but qemu's vhdx driver only reads 512-byte
    logical sectors: qemu-img refuses it. If a newer qemu opens it, it must read it exactly."""
    image = write_vhdx(disk, work / "4kn.vhdx", logical_sector=4096)
    with pytest.raises(Unsupported, match="4096-byte logical sectors"):  # refused in the pod, as qemu cannot read it
        check_vhdx(lambda o, n: image.read_bytes()[o : o + n], 0, image.stat().st_size)
    assert vhdx_layout(image)["items"][LOGICAL][0] == struct.pack("<I", 4096)
    info = qemu("info", "-f", "vhdx", str(image))
    if info.returncode:
        assert "Operation not supported" in info.stderr, info.stderr
    else:
        assert_qemu_reads(image, "vhdx", disk, work)


def test_vhdx_needs_whole_logical_sectors(work: Path) -> None:
    raw = sparse_raw(work / "odd.raw", 4 * MIB + 512, {0: b"x"})
    write_vhdx(raw, work / "odd-512.vhdx")
    with pytest.raises(ValueError, match="4096-byte sectors"):
        write_vhdx(raw, work / "odd.vhdx", logical_sector=4096)


# --- VirtualBox's streamOptimized VMDK ----------------------------------------------------------
def vmdk_stream(image: Path) -> list[tuple[str, int, int]]:
    """The stream's records after the header and descriptor: (kind, sector, value), VMDK 5.0 markers."""
    data = image.read_bytes()
    overhead = struct.unpack_from("<Q", data, 4 + 4 + 4 + 8 + 8 + 8 + 8 + 4 + 8 + 8)[0]
    records, at = [], overhead * 512
    while at < len(data):
        value, size, kind = struct.unpack_from("<QII", data, at)
        if size:  # a grain: lba, compressed size, data
            records.append(("grain", at // 512, value))
            at += -(-(12 + size) // 512) * 512
        else:
            name = {0: "eos", 1: "gt", 2: "gd", 3: "footer"}[kind]
            records.append((name, at // 512 + 1, value))
            at += 512 + value * 512
    return records


def test_virtualbox_vmdk_interleaves_grain_tables_and_skips_empty_ones(work: Path) -> None:
    """VirtualBox's stream writer: GD_AT_END in the header, a grain table after each 32 MiB range's
    grains, no table for a range without data (its directory entry 0), then GD, footer, EOS."""
    size = 100 * MIB
    raw = sparse_raw(work / "vbox.raw", size, {0: b"boot" * 128, 5 * MIB: b"a" * 70000, 70 * MIB: b"b" * 10, size - 512: b"z"})
    image = write_stream_optimized_vbox(raw, work / "vbox-disk001.vmdk")
    assert_qemu_reads(image, "vmdk", raw, work)
    assert qemu_info(image, "vmdk")["format-specific"]["data"]["create-type"] == "streamOptimized"
    data = image.read_bytes()
    assert data[56:64] == GD_AT_END and data[-1024:-1020] == b"KDMV" and data[-1024 + 56 : -1024 + 64] != GD_AT_END
    descriptor = data[512 : struct.unpack_from("<Q", data, 36)[0] * 512 + 512].split(b"\0")[0].decode()
    assert 'RDONLY 204800 SPARSE "vbox-disk001.vmdk"' in descriptor and 'ddb.adapterType="ide"' in descriptor
    kinds = [kind for kind, _, _ in vmdk_stream(image)]
    assert kinds == ["grain", "grain", "grain", "gt", "grain", "gt", "grain", "gt", "gd", "footer", "eos"]
    gd_sector = next(sector for kind, sector, _ in vmdk_stream(image) if kind == "gd")
    directory = struct.unpack_from("<4I", data, gd_sector * 512)
    assert directory[0] and directory[1] == 0 and directory[2] and directory[3], "range 1 has no data, no grain table"


# --- OVAs ---------------------------------------------------------------------------------------
def members_of(ova: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(ova) as tar:
        return tar.getmembers()


def member_bytes(ova: Path, name: str) -> bytes:
    with tarfile.open(ova) as tar:
        handle = tar.extractfile(name)
        assert handle is not None
        return handle.read()


def extract(ova: Path, name: str, where: Path) -> Path:
    out = where / name
    out.write_bytes(member_bytes(ova, name))
    return out


def parse_manifest(text: str, pattern: str) -> dict[str, tuple[str, str]]:
    entries = {}
    for line in text.splitlines():
        match = re.fullmatch(pattern, line)
        assert match, f"manifest line {line!r} is not in the producer's syntax"
        entries[match["file"]] = (match["alg"].lower(), match["hex"])
    return entries


OVFTOOL_LINE = r"(?P<alg>SHA256|SHA1)\((?P<file>[^)]+)\)= (?P<hex>[0-9a-f]+)"  # no space before "(", one after "="
VBOX_LINE = r"(?P<alg>SHA256|SHA1) \((?P<file>[^)]+)\) = (?P<hex>[0-9a-f]+)"  # IPRT: "%s (%s) = %s\n"


def assert_manifest_matches(ova: Path, manifest: dict[str, tuple[str, str]]) -> None:
    names = [m.name for m in members_of(ova) if not m.name.endswith(".mf")]
    assert sorted(manifest) == sorted(names), "the manifest lists every other member"
    for name, (algorithm, digest) in manifest.items():
        assert hashlib.new(algorithm, member_bytes(ova, name)).hexdigest() == digest, name


def envelope(ova: Path, name: str) -> ET.Element:
    return ET.fromstring(member_bytes(ova, name))  # well-formed XML, or this raises


def assert_ustar(ova: Path) -> None:
    """Every header is POSIX ustar (magic "ustar\\0", version "00"), the archive whole 10 KiB records."""
    data = ova.read_bytes()
    for member in members_of(ova):
        assert data[member.offset + 257 : member.offset + 265] == b"ustar\x0000", member.name
    assert len(data) % 10240 == 0


def test_ovftool_ova_layout_manifest_and_descriptor(disk: Path, work: Path) -> None:
    """ovftool: .ovf, .mf, -disk1.vmdk (VMware's layout), .nvram; SHA256(file)= lines; every File with its size."""
    ova = ovapack.ovftool_ova([disk], work / "appliance.ova", nvram=b"\x01NVRAM" * 100)
    members = members_of(ova)
    assert [m.name for m in members] == ["appliance.ovf", "appliance.mf", "appliance-disk1.vmdk", "appliance.nvram"]
    assert {(m.mode, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0o644, 64, 64, "someone", "someone")}
    assert_ustar(ova)
    manifest = parse_manifest(member_bytes(ova, "appliance.mf").decode(), OVFTOOL_LINE)
    assert {alg for alg, _ in manifest.values()} == {"sha256"}
    assert list(manifest) == ["appliance.ovf", "appliance-disk1.vmdk", "appliance.nvram"]
    assert_manifest_matches(ova, manifest)
    root = envelope(ova, "appliance.ovf")
    sizes = {m.name: m.size for m in members}
    files = {f.get(f"{OVF}href"): (f.get(f"{OVF}id"), int(f.get(f"{OVF}size") or -1)) for f in root.iter(f"{OVF}File")}
    assert {href: size for href, (_, size) in files.items()} == {n: s for n, s in sizes.items() if n.endswith((".vmdk", ".nvram"))}
    (disk_element,) = root.iter(f"{OVF}Disk")
    units = {"byte * 2^20": MIB, "byte * 2^30": 1 << 30, None: 1}[disk_element.get(f"{OVF}capacityAllocationUnits")]
    assert int(disk_element.get(f"{OVF}capacity") or 0) * units == disk.stat().st_size
    assert disk_element.get(f"{OVF}format") == ovapack.STREAM_OPTIMIZED
    assert disk_element.get(f"{OVF}fileRef") == files["appliance-disk1.vmdk"][0]
    nvram_ref = f"ovf:/file/{files['appliance.nvram'][0]}"
    assert any(
        e.get("{http://www.vmware.com/schema/ovf}value") == nvram_ref for e in root.iter("{http://www.vmware.com/schema/ovf}ExtraConfig")
    )
    vmdk = extract(ova, "appliance-disk1.vmdk", work)
    assert vmdk.read_bytes()[56:64] == GD_AT_END, "VMware's layout: the header defers to the footer"
    assert_qemu_reads(vmdk, "vmdk", disk, work)


def test_ovftool_ova_with_sha1_manifest(disk: Path, work: Path) -> None:
    """``ovftool --shaAlgorithm=SHA1`` (and ovftool before 4.2): SHA1(file)= lines."""
    ova = ovapack.ovftool_ova([disk], work / "sha1.ova", algorithm="sha1")
    manifest = parse_manifest(member_bytes(ova, "sha1.mf").decode(), OVFTOOL_LINE)
    assert {alg for alg, _ in manifest.values()} == {"sha1"}
    assert_manifest_matches(ova, manifest)


def test_two_disk_ovftool_ova(disk: Path, other_disk: Path, work: Path) -> None:
    """Both disks in tar order after the manifest, both in References, DiskSection, the hardware and the manifest."""
    ova = make_producer_ova([disk, other_disk], work / "pair.ova")
    assert [m.name for m in members_of(ova)] == ["pair.ovf", "pair.mf", "pair-disk1.vmdk", "pair-disk2.vmdk"]
    assert_manifest_matches(ova, parse_manifest(member_bytes(ova, "pair.mf").decode(), OVFTOOL_LINE))
    root = envelope(ova, "pair.ovf")
    refs = {f.get(f"{OVF}id"): f.get(f"{OVF}href") for f in root.iter(f"{OVF}File")}
    disks = {d.get(f"{OVF}diskId"): refs[d.get(f"{OVF}fileRef")] for d in root.iter(f"{OVF}Disk")}
    assert disks == {"vmdisk1": "pair-disk1.vmdk", "vmdisk2": "pair-disk2.vmdk"}
    hosts = [e.text for e in root.iter("{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData}HostResource")]
    assert hosts == ["ovf:/disk/vmdisk1", "ovf:/disk/vmdisk2"]
    for name, raw in (("pair-disk1.vmdk", disk), ("pair-disk2.vmdk", other_disk)):
        assert_qemu_reads(extract(ova, name, work), "vmdk", raw, work)


@pytest.mark.parametrize(("ovf_version", "algorithm", "namespace"), [("1.0", "sha1", OVF), ("2.0", "sha256", OVF2)])
def test_virtualbox_ova(disk: Path, work: Path, ovf_version: str, algorithm: str, namespace: str) -> None:
    """VBoxManage export: .ovf, -disk001.vmdk (VirtualBox's layout), then the manifest; IPRT's
    "SHA1 (file) = hex" lines in sdbm-hash order; File without ovf:size, capacity in bytes."""
    ova = ovapack.virtualbox_ova(disk, work / f"vbox-{ovf_version}.ova", name="vbox", ovf_version=ovf_version)
    members = members_of(ova)
    assert [m.name for m in members] == ["vbox.ovf", "vbox-disk001.vmdk", "vbox.mf"]
    owner = ("vboxovf" + ovf_version.replace(".", ""), "vbox_v7.0.14r161095")
    assert {(m.mode, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0o640, 7, 0, *owner)}
    assert_ustar(ova)
    text = member_bytes(ova, "vbox.mf").decode()
    manifest = parse_manifest(text, VBOX_LINE)
    assert {alg for alg, _ in manifest.values()} == {algorithm}
    assert list(manifest) == sorted(manifest, key=ovapack.sdbm)
    assert_manifest_matches(ova, manifest)
    root = envelope(ova, "vbox.ovf")
    assert root.tag == f"{namespace}Envelope" and root.get(f"{namespace}version") == ovf_version
    (file_element,) = root.iter(f"{namespace}File")
    assert file_element.get(f"{namespace}href") == "vbox-disk001.vmdk" and file_element.get(f"{namespace}size") is None
    (disk_element,) = root.iter(f"{namespace}Disk")
    assert int(disk_element.get(f"{namespace}capacity") or 0) == disk.stat().st_size
    assert disk_element.get(f"{namespace}format") == ovapack.STREAM_OPTIMIZED
    vmdk = extract(ova, "vbox-disk001.vmdk", work)
    assert b"RDONLY" in vmdk.read_bytes()[512:2048]
    assert_qemu_reads(vmdk, "vmdk", disk, work)


def test_sdbm_is_iprts_string_hash() -> None:
    """hash(i) = hash(i - 1) * 65599 + str[i] (mod 2^32), the function IPRT's string space uses."""
    value = 0
    for byte in b"vbox.ovf":
        value = (value * 65599 + byte) % (1 << 32)
    assert ovapack.sdbm("vbox.ovf") == value


def test_tar_members_keep_their_holes(work: Path) -> None:
    """A sparse member stays sparse in the archive and reads back whole."""
    raw = sparse_raw(work / "holey.raw", 64 * MIB, {0: b"head", 63 * MIB: b"tail"})
    ova = ovapack.write_tar(
        work / "holey.tar",
        [ovapack.Member("a.txt", b"hello"), ovapack.Member("disk.img", raw)],
        tarfile.USTAR_FORMAT,
        ovapack.OVFTOOL_OWNER,
    )
    assert member_bytes(ova, "disk.img") == raw.read_bytes() and member_bytes(ova, "a.txt") == b"hello"
    assert ova.stat().st_blocks * 512 < 8 * MIB, "the disk's holes were written out"
