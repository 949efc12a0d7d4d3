"""Recognise a disk image from its bytes and refuse the unsafe ones before anything runs.

The source is read through ranged reads (the pod never downloads the whole image):
an ``.ova`` is a tar, so its disk member is located from the tar headers and inspected in
place; the format is detected from the content with OpenStack's format inspectors
(``oslo.utils``), never from the name, and their safety checks reject backing files,
external data files and VMDK extents that would make qemu-img read host files
(CVE-2022-47951, CVE-2024-32498, CVE-2024-40767). A fixed VHD has only a footer, so the
last 512 bytes are checked too. After download, :func:`check_qemu_info` checks what
``qemu-img info -f FORMAT`` says on the worker against what was planned.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from oslo_utils.imageutils import format_inspector as fi

from . import formatrules, ovatar
from .formatrules import FormatRuleError
from .ovatar import OvaError

log = logging.getLogger("vdimport")

HEAD_BYTES = 8 << 20  # enough for every supported header, descriptor and table we check
MAX_VIRTUAL_SIZE = 32768 << 30  # the largest OCI block volume
MAX_OVA_DISKS = 16  # volumes one run may make from one OVA
DISK_SUFFIXES = (".vmdk", ".vhd", ".vhdx", ".qcow2", ".img", ".raw", ".vdi")
# oslo inspector name -> the qemu-img format we convert from
QEMU_FORMAT = {"raw": "raw", "gpt": "raw", "iso": "raw", "qcow2": "qcow2", "vhd": "vpc", "vhdx": "vhdx", "vmdk": "vmdk", "vdi": "vdi"}
# user-facing source_format -> qemu-img format
USER_TO_QEMU = {"qcow2": "qcow2", "vmdk": "vmdk", "vhd": "vpc", "vhdx": "vhdx", "vdi": "vdi", "raw": "raw"}
SAFETY_MESSAGES = {
    "backing_file": "it names a backing file, which would make qemu-img read another file",
    "data_file": "it uses an external data file, which would make qemu-img read another file",
    "unknown_features": "it uses qcow2 features this importer does not know",
    "descriptor": "its VMDK descriptor is not a single self-contained extent",
    "create_type": "its VMDK type is not monolithicSparse or streamOptimized",
    "extents": "its VMDK extents point outside the file",
    "footer": (
        "its streamOptimized footer (the real header VMware writes 1024 bytes before the end) is missing "
        "or does not match the header: the upload is cut short or altered"
    ),
}

# Magic numbers of the formats above: content that starts like one but was not recognised
# as one is a cut-off image, not "raw".
HEADER_MAGIC = (
    (0, b"QFI\xfb", "qcow2"),
    (0, b"KDMV", "vmdk"),
    (0, b"conectix", "vhd"),
    (0, b"vhdxfile", "vhdx"),
    (0x40, b"\x7f\x10\xda\xbe", "vdi"),
)

ReadRange = Callable[[int, int], bytes]


class UnsafeImage(ValueError):
    """The image must not be imported; the message is the one-line cause."""


@dataclass(frozen=True)
class SourceImage:
    format: str  # qemu-img format name: raw, qcow2, vpc, vhdx, vmdk, vdi
    offset: int  # where the disk's bytes start in the object (non-zero inside an .ova)
    length: int  # how many bytes the disk takes
    virtual_size: int
    container: str | None = None  # "ova" when the disk came out of an OVA
    member: str | None = None  # the OVA member's name
    digest: str | None = None  # "sha256:<hex>" from the OVA's manifest, checked by the worker after download

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def inspect_sources(read: ReadRange, size: int, declared: str | None = None) -> list[SourceImage]:
    """Find, identify and safety-check every disk image in an object of ``size`` bytes: one, or
    each disk of an OVA in archive order (at most MAX_OVA_DISKS).

    The only outcomes are :class:`SourceImage` s or :class:`UnsafeImage` with a cause: bytes the
    parsers choke on are a malformed image, never an internal error that a retry repeats. Only
    ``read``'s own errors (Object Storage unreachable, throttled) pass through as they are.
    """

    def guarded(offset: int, length: int) -> bytes:
        try:
            return read(offset, length)
        except Exception as exc:
            raise _ReadFailed(exc) from exc

    try:
        return _inspect_object(guarded, size, declared)
    except UnsafeImage:
        raise
    except (OvaError, FormatRuleError) as exc:
        raise UnsafeImage(str(exc)) from None
    except _ReadFailed as exc:
        raise exc.original from None
    except Exception as exc:  # any parser failure on these bytes means the image is malformed
        log.warning("The image's headers could not be parsed", exc_info=True)
        raise UnsafeImage(f"the image's headers are malformed and cannot be parsed ({type(exc).__name__}: {str(exc)[:120]})") from None


class _ReadFailed(Exception):
    """Reading the object failed: not the image's fault, so not a rejection."""

    def __init__(self, original: Exception):
        super().__init__(str(original))
        self.original = original


def _inspect_object(read: ReadRange, size: int, declared: str | None) -> list[SourceImage]:
    if size == 0:
        raise UnsafeImage("the object is empty")
    head = read(0, min(size, 512))
    if ovatar.is_tar(head):
        if declared not in (None, "ova"):
            raise UnsafeImage(f"source_format says {declared} but the object is a tar archive (an .ova)")
        return [
            SourceImage(image.format, disk.offset, disk.size, image.virtual_size, "ova", disk.name, _digest_text(disk.digest))
            for disk in _ova_disks(read, size)
            for image in [_inspect_disk(read, disk.offset, disk.size, None)]
        ]
    if declared == "ova":
        raise UnsafeImage("source_format says ova but the object is not a tar archive")
    return [_inspect_disk(read, 0, size, declared)]


def _digest_text(digest: tuple[str, str] | None) -> str | None:
    return f"{digest[0]}:{digest[1]}" if digest else None


def _inspect_disk(read: ReadRange, offset: int, length: int, declared: str | None) -> SourceImage:
    head = read(offset, min(length, HEAD_BYTES))
    if len(head) < min(length, HEAD_BYTES):
        raise UnsafeImage("the object is shorter than its reported size (truncated?)")
    inspectors = {cls(): name for name, cls in fi.ALL_FORMATS.items() if name != "raw"}
    broken: dict[str, str] = {}  # inspector name -> why it could not parse these bytes

    def drop(inspector: fi.FileInspector, exc: Exception) -> None:
        broken[inspectors.pop(inspector)] = f"{type(exc).__name__}: {str(exc)[:100]}"

    for chunk_start in range(0, len(head), 65536):
        chunk = head[chunk_start : chunk_start + 65536]
        for inspector in list(inspectors):
            try:
                inspector.eat_chunk(chunk)
            except Exception as exc:  # noqa: BLE001 - an inspector that cannot parse this is not a match
                drop(inspector, exc)
    if length > len(head):
        _capture_real_end(read, offset, length, inspectors)
    matches: list[fi.FileInspector] = []
    incomplete: list[str] = []
    for inspector in list(inspectors):
        try:
            inspector.finish()
            if inspector.format_match:
                (matches.append(inspector) if inspector.complete else incomplete.append(inspectors[inspector]))
        except Exception as exc:  # noqa: BLE001 - e.g. a text "descriptor" that is not ASCII
            drop(inspector, exc)
    names = sorted({inspectors[i] for i in matches})
    magic = next((name for at, value, name in HEADER_MAGIC if head[at : at + len(value)] == value), None)
    if magic and magic in broken and magic not in names:
        raise UnsafeImage(f"malformed {magic} image: its headers cannot be parsed ({broken[magic]})")
    if incomplete and not matches:
        raise UnsafeImage(f"the {incomplete[0]} headers could not be read completely (truncated or malformed image)")
    if "luks" in names:
        raise UnsafeImage("the image is LUKS-encrypted; decrypt it before importing")
    if "qed" in names:
        raise UnsafeImage("QED images are not supported; convert to qcow2 first")
    specific = [n for n in names if n not in ("gpt", "iso")]
    if len(specific) > 1:
        raise UnsafeImage(f"the content matches several formats ({', '.join(specific)}): refusing an ambiguous image")
    footer = read(offset + length - 512, 512) if length >= 512 else b""
    vhd_footer = _vhd_footer(footer)
    if specific:
        detected = specific[0]
        inspector = next(i for i in matches if inspectors[i] == detected)
        virtual_size = int(inspector.virtual_size)
        _apply_rules(detected, read, offset, length, head, virtual_size)  # ours first: their causes are more precise
        _safety_check(inspector, detected)
    elif vhd_footer is not None:
        detected, virtual_size = "vhd", _check_fixed_vhd(vhd_footer, length)
    else:
        if magic:
            raise UnsafeImage(f"the {magic} header is cut short (a truncated or malformed image)")
        if head.lstrip().startswith(b"# Disk DescriptorFile"):
            raise UnsafeImage("this is a VMDK descriptor without its data; upload a monolithicSparse or streamOptimized VMDK")
        if declared != "raw" and not _looks_like_raw_disk(head):
            raise UnsafeImage(
                "the content is not a recognised disk image (no image header, partition table or file system); "
                "set source_format=raw to import it as a raw disk anyway"
            )
        _check_partition_table(head, length)
        detected, virtual_size = "raw", length
    qemu_format = QEMU_FORMAT[detected]
    if declared is not None and USER_TO_QEMU[declared] != qemu_format:
        raise UnsafeImage(f"source_format says {declared} but the content is {user_format(qemu_format)}")
    if virtual_size <= 0:
        raise UnsafeImage(f"the {user_format(qemu_format)} header gives no usable virtual size")
    if virtual_size > MAX_VIRTUAL_SIZE:
        raise UnsafeImage(f"virtual size {virtual_size} bytes is larger than the largest block volume (32 TiB)")
    return SourceImage(qemu_format, offset, length, virtual_size)


def _apply_rules(name: str, read: ReadRange, offset: int, length: int, head: bytes, virtual_size: int) -> None:
    """Our own per-format checks (formatrules), after the inspector's."""
    try:
        if name == "qcow2":
            formatrules.check_qcow2(head)
        elif name == "vmdk":
            formatrules.check_vmdk(read, offset, length, head)
        elif name == "vhdx":
            size = formatrules.check_vhdx(read, offset, length)
            if size != virtual_size:
                raise formatrules.Malformed(f"its metadata says {size} bytes where the inspector read {virtual_size}")
        elif name == "vdi":
            formatrules.check_vdi(head, length)
        elif name == "vhd":
            formatrules.check_vhd_type(head[:512], "dynamic", 3)
    except FormatRuleError as exc:
        raise UnsafeImage(f"{exc.kind} {name} image: {exc}") from None


def _capture_real_end(read: ReadRange, offset: int, length: int, inspectors: dict[fi.FileInspector, str]) -> None:
    """Give end-of-stream regions the object's real end, not the end of the head they were fed.

    oslo's inspectors capture "the last N bytes of the stream" (``EndCaptureRegion``): a
    streamOptimized VMDK in VMware's layout (header ``gdOffset = GD_AT_END``) keeps its real
    header in a footer 1024 bytes before the end (VMware Virtual Disk Format 5.0), and is
    checked against it. Only the first ``HEAD_BYTES`` are streamed here, so without this a
    VMware export larger than that is compared with bytes from its middle and refused.
    """
    for inspector in inspectors:
        if inspector.has_region("footer") and isinstance(inspector.region("footer"), fi.EndCaptureRegion):
            if length < inspector.region("footer").length:
                continue
            region = inspector.region("footer")
            region.data = read(offset + length - region.length, region.length)
            region.offset = length - region.length


# Checks of the inspector that formatrules does instead: oslo refuses qcow2's extended L2
# entries (incompatible feature bit 4) as unknown, though qemu and the qcow2 spec define them.
OUR_CHECKS = {"qcow2": ("unknown_features",)}


def _safety_check(inspector: fi.FileInspector, name: str) -> None:
    try:
        inspector.safety_check()
    except fi.SafetyCheckFailed as exc:
        failures = {check: failure for check, failure in exc.failures.items() if check not in OUR_CHECKS.get(name, ())}
        if not failures:
            return
        reasons = [SAFETY_MESSAGES.get(check, f"{check}: {failure}") for check, failure in failures.items()]
        raise UnsafeImage(f"unsafe {name} image: {'; '.join(reasons)}") from None
    except fi.ImageFormatError as exc:
        raise UnsafeImage(f"malformed {name} image: {exc}") from None


def _looks_like_raw_disk(head: bytes) -> bool:
    """A raw disk starts with a partition table or a file system we can name."""
    signatures = (
        (510, b"\x55\xaa"),  # MBR (and the protective MBR of GPT), FAT boot sector
        (512, b"EFI PART"),  # GPT header
        (1080, b"\x53\xef"),  # ext2/3/4 superblock magic
        (0, b"XFSB"),
        (3, b"NTFS    "),
        (512, b"LABELONE"),  # LVM physical volume
        (32769, b"CD001"),  # ISO 9660
        (65600, b"_BHRfS_M"),  # btrfs
        (4086, b"SWAPSPACE2"),
    )
    return any(head[at : at + len(magic)] == magic for at, magic in signatures)


def _check_partition_table(head: bytes, length: int) -> None:
    """A raw disk whose partition table describes more disk than the object holds is truncated.

    qemu-img reads past the end of a raw file as zeros, so a cut-off upload would otherwise
    import "successfully" with its tail missing. GPT: the backup header sits in the disk's
    last sector. MBR: no partition may end past the end (a FAT or NTFS boot sector, which
    also ends in 55 AA, holds no partition table).
    """
    need = 0
    if head[512:520] == b"EFI PART" and len(head) >= 1024:
        (backup_lba,) = struct.unpack_from("<Q", head, 512 + 32)
        need = (backup_lba + 1) * 512
    elif head[510:512] == b"\x55\xaa" and len(head) >= 512 and not _is_boot_sector(head):
        entries = [head[at : at + 16] for at in range(446, 510, 16)]
        if all(entry[0] in (0x00, 0x80) for entry in entries):
            for entry in entries:
                kind, (start, count) = entry[4], struct.unpack_from("<II", entry, 8)
                if kind not in (0x00, 0xEE) and count:
                    need = max(need, (start + count) * 512)
    if need > length:
        raise UnsafeImage(
            f"the disk's partition table describes {need} bytes but the object holds only {length}: "
            "the image is truncated (or not a raw disk)"
        )


def _is_boot_sector(head: bytes) -> bool:
    """A FAT/NTFS/exFAT volume boot record (a file system without a partition table)."""
    return head[0] in (0xEB, 0xE9) and (
        head[3:11] in (b"NTFS    ", b"EXFAT   ") or head[54:59] in (b"FAT12", b"FAT16") or head[82:87] == b"FAT32"
    )


def _vhd_footer(footer: bytes) -> bytes | None:
    return footer if len(footer) == 512 and footer[:8] == b"conectix" else None


def _check_fixed_vhd(footer: bytes, length: int) -> int:
    try:
        formatrules.check_vhd_type(footer, "footer-only", 2)
    except FormatRuleError as exc:
        raise UnsafeImage(f"{exc.kind} vhd image: {exc}") from None
    current_size = struct.unpack(">Q", footer[48:56])[0]
    if current_size + 512 > length:
        raise UnsafeImage("malformed vhd image: its size is larger than the file (truncated?)")
    return int(current_size)


# --- OVA (tar) --------------------------------------------------------------------------------
def _ova_disks(read: ReadRange, size: int) -> list[ovatar.Member]:
    """The OVA's disk members, in archive order, with their manifest digests when it has one."""
    found = ovatar.members(read, size)
    disks = [m for m in found if m.name.lower().endswith(DISK_SUFFIXES)]
    if not disks:
        raise UnsafeImage("ova: the archive holds no disk image (.vmdk, .vhd, .qcow2, ...)")
    if len(disks) > MAX_OVA_DISKS:
        raise UnsafeImage(f"ova: the archive holds {len(disks)} disks, more than the {MAX_OVA_DISKS} one import makes volumes for")
    return ovatar.check_manifest(read, found, disks)


# --- after download: qemu-img info on the worker --------------------------------------------
def check_qemu_info(info: dict[str, Any], planned: SourceImage, image_path: str, capacity: int | None = None) -> None:
    """Refuse anything qemu-img sees that the inspection did not plan for (``capacity``: the planned volume's bytes)."""
    if info.get("format") != planned.format:
        raise UnsafeImage(f"qemu-img reads the image as {info.get('format')}, planned {planned.format}")
    for key in ("backing-filename", "full-backing-filename", "backing-filename-format"):
        if info.get(key):
            raise UnsafeImage("unsafe image: qemu-img reports a backing file")
    if info.get("encrypted"):
        raise UnsafeImage("the image is encrypted")
    specific = (info.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file") or specific.get("data-file-raw"):
        raise UnsafeImage("unsafe image: qemu-img reports an external data file")
    if planned.format == "vmdk":
        create_type = specific.get("create-type")
        if create_type not in ("monolithicSparse", "streamOptimized"):
            raise UnsafeImage(f"unsafe vmdk image: type {create_type} (only monolithicSparse and streamOptimized)")
        for extent in specific.get("extents") or []:
            if extent.get("filename") not in (None, image_path):
                raise UnsafeImage("unsafe vmdk image: an extent points at another file")
    virtual_size = int(info.get("virtual-size") or 0)
    if virtual_size != planned.virtual_size and planned.format != "vpc":
        raise UnsafeImage(f"qemu-img reports a virtual size of {virtual_size} bytes, the header said {planned.virtual_size}")
    if virtual_size <= 0 or virtual_size > MAX_VIRTUAL_SIZE:
        raise UnsafeImage(f"virtual size {virtual_size} bytes is out of range")
    if capacity is not None and virtual_size > capacity:  # a VHD's CHS geometry can say more than its footer
        raise UnsafeImage(
            f"qemu-img reports a virtual size of {virtual_size} bytes, more than the {capacity >> 30} GB volume "
            f"planned from the image's header ({planned.virtual_size} bytes)"
        )


def user_format(qemu_format: str) -> str:
    return "vhd" if qemu_format == "vpc" else qemu_format
