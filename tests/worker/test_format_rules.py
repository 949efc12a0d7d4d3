"""Our own format rules (formatrules.py, ovatar.py): what the inspector let through before.

Each hostile or odd image is made by real qemu-img and then altered the way an attacker or a
producer would, byte by byte, at the offsets the specifications give; what must pass is
checked with qemu-img too, so a rule never refuses what qemu reads as a good image.
"""

from __future__ import annotations

import hashlib
import io
import struct
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
from hostilekit import luks_qcow2
from test_imageformat import inspect_bytes, qemu_img, refused

from vdimport_local.diskimages import convert
from vdimport_worker import formatrules
from vdimport_worker.imageformat import inspect_sources

GIB = 1 << 30


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rules")


def qemu_reads(path: Path, fmt: str) -> bool:
    return subprocess.run(["qemu-img", "info", "-f", fmt, str(path)], capture_output=True).returncode == 0


# --- VMDK: the descriptor as qemu reads it -------------------------------------------------------
def sparse_vmdk(small_disk: Path, work: Path, name: str, subformat: str = "vmdk") -> bytearray:
    return bytearray(convert(small_disk, subformat, work / f"{name}.vmdk").read_bytes())


def descriptor(image: bytearray) -> str:
    return bytes(image[512 : 512 + 10240]).split(b"\0", 1)[0].decode()


def with_descriptor(image: bytearray, text: str) -> bytes:
    """The image with its embedded descriptor replaced (same 10 KiB area qemu reads)."""
    raw = text.encode()
    assert len(raw) < 10240
    out = bytearray(image)
    out[512 : 512 + 10240] = raw + b"\0" * (10240 - len(raw))
    return bytes(out)


def test_sparse_vmdk_descriptors_as_qemu_img_and_vmware_write_them_pass(small_disk: Path, work: Path) -> None:
    for subformat in ("vmdk", "vmdk-stream", "vmdk-vmware"):
        assert inspect_bytes(bytes(sparse_vmdk(small_disk, work, f"ok-{subformat}", subformat))).format == "vmdk"


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        (lambda d: d.replace("parentCID=ffffffff", 'parentCID=ffffffff\nparentFileNameHint="/etc/shadow"'), "parentFileNameHint"),
        (lambda d: d.replace("parentCID=ffffffff", "parentCID=12345678"), "names a parent disk (parentCID)"),
        (lambda d: d.replace('createType="monolithicSparse"', 'CreateType="monolithicFlat"\ncreateType="monolithicSparse"'), ""),
        (
            lambda d: d.replace('createType="monolithicSparse"', 'createType="monolithicSparse"\ncreateType="vmfs"'),
            "exactly one createType",
        ),
        (lambda d: '# createType="monolithicFlat"\n' + d, "VMDK descriptor"),
        (lambda d: d.replace('createType="monolithicSparse"', 'createType="MonolithicSparse"'), "not monolithicSparse or streamOptimized"),
        (lambda d: d.replace('createType="monolithicSparse"', 'createType="streamOptimized"'), "header says not compressed"),
        (lambda d: d.replace("# Extent description\n", '# Extent description\nRW 2048 FLAT "/etc/shadow" 0\n'), "VMDK descriptor"),
        (lambda d: d.replace(" SPARSE ", " SPARSE ", 1) + 'RW 2048 SPARSE "second.vmdk"\n', "lists 2 extents"),
        (lambda d: d.replace("RW ", "RW 1", 1), "extent covers"),
        (lambda d: d + "include /etc/passwd\n", "VMDK descriptor"),
    ],
    ids=[
        "parent-hint",
        "parent-cid",
        "case-variant",
        "first-vs-last",
        "comment-mention",
        "type-case",
        "type-vs-header",
        "flat-extent",
        "two-extents",
        "extent-size",
        "unknown-line",
    ],
)
def test_descriptor_tricks_are_refused_before_any_vm(small_disk: Path, work: Path, change, cause: str) -> None:
    image = sparse_vmdk(small_disk, work, "tricks")
    message = refused(with_descriptor(image, change(descriptor(image))))
    assert message.startswith(("unsafe vmdk image:", "malformed vmdk image:", "unsupported vmdk image:")), message
    assert cause in message


def test_a_parent_hint_past_the_declared_descriptor_size_is_seen(small_disk: Path, work: Path) -> None:
    """qemu reads 10 KiB of descriptor whatever the header declares: so do we."""
    image = sparse_vmdk(small_disk, work, "hidden-hint")
    struct.pack_into("<Q", image, 36, 1)  # the header now declares a one-sector descriptor
    text = descriptor(image)
    hidden = text + " " * (600 - len(text)) + '\nparentFileNameHint="/etc/shadow"\n'
    data = with_descriptor(image, hidden)
    path = work / "hidden-hint-check.vmdk"
    path.write_bytes(data)
    info = subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True, text=True)
    assert "/etc/shadow" in info.stdout + info.stderr, "test setup: qemu must see the hidden hint"
    assert "parentFileNameHint" in refused(data)


def test_capacity_zero_would_open_the_descriptor_as_a_descriptor_file(small_disk: Path, work: Path) -> None:
    image = sparse_vmdk(small_disk, work, "capacity0")
    struct.pack_into("<Q", image, 12, 0)
    assert "capacity 0" in refused(bytes(image))


# --- qcow2 --------------------------------------------------------------------------------------
def test_encrypted_qcow2_is_refused_before_any_vm(small_disk: Path, work: Path) -> None:
    luks = luks_qcow2(work / "luks.qcow2")
    assert refused(luks.read_bytes()) == (
        "unsupported qcow2 image: the qcow2 image is encrypted (LUKS); decrypt it first (qemu-img convert with its key)"
    )
    aes = bytearray(convert(small_disk, "qcow2", work / "aes.qcow2").read_bytes())
    struct.pack_into(">I", aes, 32, 1)  # crypt_method = AES (qcow2.txt: header byte 32)
    assert "encrypted (AES)" in refused(bytes(aes))


@pytest.mark.parametrize(
    "options", ["compat=0.10", "compat=1.1", "compat=1.1,extended_l2=on,cluster_size=128k"], ids=["v2", "v3", "extended-l2"]
)
def test_qcow2_versions_and_extended_l2_are_accepted(small_disk: Path, work: Path, options: str) -> None:
    image = work / f"q-{options.replace(',', '_').replace('=', '-')}.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", "-o", options, str(small_disk), str(image))
    found = inspect_bytes(image.read_bytes())
    assert (found.format, found.virtual_size) == ("qcow2", small_disk.stat().st_size)


def test_qcow2_unknown_or_corrupt_features_are_refused(small_disk: Path, work: Path) -> None:
    image = bytearray(convert(small_disk, "qcow2", work / "features.qcow2").read_bytes())
    corrupt = bytearray(image)
    struct.pack_into(">Q", corrupt, 72, 1 << 1)
    assert "marked this qcow2 image corrupt" in refused(bytes(corrupt))
    unknown = bytearray(image)
    struct.pack_into(">Q", unknown, 72, 1 << 9)
    assert "incompatible features this importer does not know (bits 0x200)" in refused(bytes(unknown))


# --- VHDX ---------------------------------------------------------------------------------------
def test_crc32c_is_castagnoli() -> None:
    assert formatrules.crc32c(b"123456789") == 0xE3069283  # RFC 3720 B.4's check value


def vhdx_metadata_entries(image: bytearray) -> tuple[int, dict[uuid.UUID, int]]:
    """(metadata region offset, {item id: offset of its table entry})."""
    table = bytes(image[192 << 10 : 256 << 10])
    count = struct.unpack_from("<I", table, 8)[0]
    meta = next(
        struct.unpack_from("<Q", table, 16 + 32 * i + 16)[0]
        for i in range(count)
        if uuid.UUID(bytes_le=table[16 + 32 * i : 32 + 32 * i]) == formatrules.REGION_METADATA
    )
    entries = struct.unpack_from("<H", image, meta + 10)[0]
    return meta, {uuid.UUID(bytes_le=bytes(image[meta + 32 + 32 * i : meta + 48 + 32 * i])): meta + 32 + 32 * i for i in range(entries)}


def test_vhdx_metadata_items_as_the_spec_allows(small_disk: Path, work: Path) -> None:
    image = bytearray(convert(small_disk, "vhdx", work / "meta.vhdx").read_bytes())
    assert inspect_bytes(bytes(image)).format == "vhdx"
    meta, entries = vhdx_metadata_entries(image)
    odd = bytearray(image)
    struct.pack_into("<I", odd, entries[formatrules.ITEM_LOGICAL_SECTOR] + 20, 3)  # an item of an odd length
    assert refused(bytes(odd)) == "malformed vhdx image: the VHDX Logical Sector Size item is 3 bytes, MS-VHDX says 4"
    parent = bytearray(image)
    item_at = meta + struct.unpack_from("<I", parent, entries[formatrules.ITEM_FILE_PARAMETERS] + 16)[0]
    parent[item_at + 4] |= 2  # File Parameters: HasParent
    assert "differencing VHDX (HasParent)" in refused(bytes(parent))
    required = bytearray(image)
    unknown_entry = entries[formatrules.ITEM_PAGE83]
    required[unknown_entry : unknown_entry + 16] = uuid.uuid4().bytes_le
    struct.pack_into("<I", required, unknown_entry + 24, 1 << 2)  # IsRequired
    assert "required metadata item this importer does not know" in refused(bytes(required))


def test_vhdx_with_a_log_to_replay_is_refused(small_disk: Path, work: Path) -> None:
    image = bytearray(convert(small_disk, "vhdx", work / "log.vhdx").read_bytes())
    for at in (64 << 10, 128 << 10):  # both headers name a log, with valid checksums
        image[at + 48 : at + 64] = uuid.uuid4().bytes_le
        struct.pack_into("<I", image, at + 4, 0)
        struct.pack_into("<I", image, at + 4, formatrules.crc32c(bytes(image[at : at + 4096])))
    assert "has a log to replay" in refused(bytes(image))


# --- inspector crashes are rejections -------------------------------------------------------------
@pytest.mark.parametrize(
    "data",
    [
        b"# Disk DescriptorFile\n" + "créateType=é\n".encode() * 50,  # text followed by UTF-8
        b'# Disk DescriptorFile\ncreateType="weird\xff"\n' + b"x" * 600,
        b"vhdxfile" + b"\xff" * 400000,
        b"KDMV" + b"\xff" * 2000,
        b"QFI\xfb" + b"\xff" * 2000,
    ],
    ids=["text-utf8", "text-binary", "vhdx-garbage", "vmdk-garbage", "qcow2-garbage"],
)
def test_garbage_is_a_rejection_with_a_cause(data: bytes) -> None:
    assert refused(data)


def test_read_errors_are_not_rejections() -> None:
    """Object Storage failing is not the image's fault: the error passes through (a retry may help)."""

    def read(offset: int, length: int) -> bytes:
        raise ConnectionError("reset by peer")

    with pytest.raises(ConnectionError):
        inspect_sources(read, 1 << 20)


# --- OVA: pax, GNU, manifest -----------------------------------------------------------------------
class SparseObject:
    """An object of ``size`` bytes that is zeros except where ``parts`` put bytes (an 8+ GiB OVA)."""

    def __init__(self, size: int, parts: dict[int, bytes]):
        self.size, self.parts = size, parts

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray(length)
        for at, data in self.parts.items():
            lo, hi = max(at, offset), min(at + len(data), offset + length)
            if lo < hi:
                out[lo - offset : hi - offset] = data[lo - at : hi - at]
        return bytes(out)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_ova_with_a_disk_member_over_8_gib(small_disk: Path, work: Path, fmt: int) -> None:
    """pax ``size``/``path`` records and GNU base-256 sizes locate a 9 GiB disk member."""
    qcow = convert(small_disk, "qcow2", work / "big-member.qcow2").read_bytes()
    ovf = tarfile.TarInfo("appliance.ovf")
    ovf.size = 11
    name = "vm-" + "x" * 110 + "-disk1.qcow2"  # longer than ustar's 100: pax path / GNU long name
    disk = tarfile.TarInfo(name)
    disk.size = 9 * GIB
    first = ovf.tobuf(fmt)
    disk_header = disk.tobuf(fmt)
    disk_at = len(first) + 512 + len(disk_header)
    size = disk_at + disk.size + 1024
    found = inspect_sources(
        SparseObject(size, {0: first, len(first): b"<Envelope/>", len(first) + 512: disk_header, disk_at: qcow}).read, size
    )
    assert [(f.member, f.offset, f.length, f.format) for f in found] == [(name, disk_at, 9 * GIB, "qcow2")]
    with tarfile.open(fileobj=io.BytesIO(first + b"<Envelope/>".ljust(512, b"\0") + disk_header)) as tar:
        assert fmt != tarfile.PAX_FORMAT or tar.pax_headers is not None  # the headers parse as Python writes them


def ova(members: list[tuple[str, bytes]], kind: dict[str, bytes] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.type = (kind or {}).get(name, tarfile.REGTYPE)
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            if info.type == tarfile.LNKTYPE:
                info.linkname = "appliance.ovf"
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return out.getvalue()


def manifest(files: dict[str, bytes], algorithm: str = "SHA256") -> bytes:
    return "".join(f"{algorithm}({n})= {hashlib.new(algorithm.lower(), d).hexdigest()}\n" for n, d in files.items()).encode()


def test_ova_manifest_is_checked(small_disk: Path, work: Path) -> None:
    disk = convert(small_disk, "vmdk-stream", work / "mf-disk1.vmdk").read_bytes()
    ovf = b"<Envelope/>"
    files = {"vm.ovf": ovf, "vm-disk1.vmdk": disk}
    good = inspect_sources(
        lambda o, n: data[o : o + n], len(data := ova([("vm.ovf", ovf), ("vm.mf", manifest(files)), ("vm-disk1.vmdk", disk)]))
    )
    assert good[0].digest == f"sha256:{hashlib.sha256(disk).hexdigest()}"  # the worker checks it after its download
    sha1 = ova([("vm.ovf", ovf), ("vm.mf", manifest(files, "SHA1")), ("vm-disk1.vmdk", disk)])
    assert inspect_bytes(sha1).digest == f"sha1:{hashlib.sha1(disk).hexdigest()}"
    altered = ova([("vm.ovf", b"<Envelope>changed</Envelope>"), ("vm.mf", manifest(files)), ("vm-disk1.vmdk", disk)])
    assert refused(altered).startswith("the ova does not match its manifest: 'vm.ovf' has sha256 ")
    unlisted = ova([("vm.ovf", ovf), ("vm.mf", manifest({"vm.ovf": ovf})), ("vm-disk1.vmdk", disk)])
    assert refused(unlisted) == "malformed ova: the manifest (.mf) does not list the disk 'vm-disk1.vmdk'"
    missing = ova([("vm.ovf", ovf), ("vm.mf", manifest({**files, "vm-disk2.vmdk": b""})), ("vm-disk1.vmdk", disk)])
    assert refused(missing) == "malformed ova: the manifest lists 'vm-disk2.vmdk', which is not in the archive"
    garbled = ova([("vm.ovf", ovf), ("vm.mf", b"SHA256 vm.ovf 1234\n"), ("vm-disk1.vmdk", disk)])
    assert refused(garbled) == "malformed ova: manifest line 1 is not 'SHA256(file)= digest'"


def test_ova_links_and_two_disks(small_disk: Path, work: Path) -> None:
    disk = convert(small_disk, "vmdk-stream", work / "two-disk1.vmdk").read_bytes()
    hard = ova([("vm.ovf", b"<Envelope/>"), ("vm-disk1.vmdk", b"")], {"vm-disk1.vmdk": tarfile.LNKTYPE})
    assert refused(hard) == "unsafe ova: member 'vm-disk1.vmdk' is a hard link (only plain files are allowed in an OVA)"
    two = ova([("vm.ovf", b"<Envelope/>"), ("vm-disk1.vmdk", disk), ("vm-disk2.vmdk", disk)])
    assert [d.member for d in inspect_sources(lambda o, n: two[o : o + n], len(two))] == ["vm-disk1.vmdk", "vm-disk2.vmdk"]


def test_a_damaged_tar_header_checksum_is_refused(small_disk: Path, work: Path) -> None:
    data = bytearray(ova([("vm.ovf", b"<Envelope/>"), ("disk.raw", small_disk.read_bytes())]))
    data[1024 + 10] ^= 0x01  # a byte of the second member's name: its checksum no longer holds
    assert refused(bytes(data)) == "malformed ova: the tar header at byte 1024 is damaged"


def test_a_4kn_vhdx_is_refused_before_any_vm(small_disk: Path, work: Path) -> None:
    """4 KiB logical sectors are valid MS-VHDX, but qemu's vhdx driver reads only 512-byte ones:
    refused in the pod, rather than after a VM was paid for."""
    from vdimport_local.vhdxwriter import write_vhdx

    image = write_vhdx(small_disk, work / "4kn.vhdx", logical_sector=4096)
    assert not qemu_reads(image, "vhdx"), "test setup: this qemu-img reads 4Kn VHDX now; accept them"
    assert "4096-byte logical sectors, which qemu-img cannot read" in refused(image.read_bytes())
    assert inspect_bytes(write_vhdx(small_disk, work / "512e.vhdx").read_bytes()).format == "vhdx"
