"""Our own checks of each format, read the way its specification and qemu read it.

oslo.utils' inspectors tell us the format and the virtual size and refuse the well-known
tricks; these checks close what they leave open, each where the inspector and qemu would
read the same bytes differently (docs/security.md §5 lists them):

- **VMDK** (VMware Virtual Disk Format 5.0 §"Hosted Sparse Extent Header", qemu block/vmdk.c):
  qemu looks for ``createType``, ``parentCID`` and ``parentFileNameHint`` with ``strstr`` over
  up to 10 KiB of descriptor text from byte 512, whatever the header says its size is, while
  the inspector reads the declared size and lower-cases it. The descriptor is therefore
  checked over exactly what qemu reads, against an allowlist: one case-exact
  ``createType`` matching the header (streamOptimized iff compressed), ``parentCID=ffffffff``,
  no ``parentFileNameHint`` anywhere, exactly one ``SPARSE`` extent of the header's capacity.
  A sparse header of capacity 0 makes qemu open the embedded descriptor as a descriptor
  *file* (its extents may name host files): refused.
- **qcow2** (qemu docs/interop/qcow2.txt): encryption (AES or LUKS, ``crypt_method``) is
  refused before any VM; incompatible features are allowed exactly as the spec defines them
  (dirty, compression type, extended L2), except an external data file and the corrupt bit.
- **VHDX** (MS-VHDX §2.2-2.6): the current header (valid CRC-32C, highest sequence number) must
  have no log to replay; the metadata items must have the lengths and values the spec allows;
  a differencing disk (HasParent) or an unknown *required* item is refused.
- **VDI**, **VHD**: image types that need another file (differencing) are refused, and the
  allocated blocks must lie inside the file.
"""

from __future__ import annotations

import re
import struct
import uuid
from collections.abc import Callable

ReadRange = Callable[[int, int], bytes]


class FormatRuleError(ValueError):
    """The image breaks one of our format rules; the message is the one-line cause.

    ``kind`` says what kind of problem, for the message: it would make qemu read what it must not.
    """

    kind = "unsafe"


class Malformed(FormatRuleError):
    """Damaged, truncated or not as the specification defines the format."""

    kind = "malformed"


class Unsupported(FormatRuleError):
    """Well-formed, but a variant we do not import (encrypted, an unknown version)."""

    kind = "unsupported"


# --- VMDK -------------------------------------------------------------------------------------
VMDK_DESC_OFFSET = 512
VMDK_DESC_READ = 20 * 512  # qemu's DESC_SIZE: what vmdk_parent_open and vmdk_read_cid read
VMDK_FLAG_COMPRESSED = 1 << 16
VMDK_COMPRESSION_DEFLATE = 1
SUBFORMATS = ("monolithicSparse", "streamOptimized")
_HEADER_LINE = re.compile(r'([A-Za-z][A-Za-z0-9_.]*)\s*=\s*("[^"\n]*"|[^\s"]*)\s*')
_DDB_LINE = re.compile(r'ddb\.[A-Za-z0-9_.]+\s*=\s*"[^"\n]*"\s*')
_EXTENT_LINE = re.compile(r"(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\w+)\s*(.*)")
_OWN_EXTENT = re.compile(r'"[^"/\\\n]+"')  # a SPARSE extent's file: a bare name (the file itself)
SELF_CONTAINED = "its VMDK descriptor is not a single self-contained extent"
# changeTrackPath (vSphere CBT) names a file qemu never opens.
_DESCRIPTOR_KEYS = {"version", "encoding", "CID", "parentCID", "isNativeSnapshot", "createType", "changeTrackPath"}


def vmdk_descriptor_text(read: ReadRange, offset: int, length: int) -> str:
    """The embedded descriptor as qemu sees it: from byte 512 up to the first NUL, at most 10 KiB."""
    raw = read(offset + VMDK_DESC_OFFSET, max(0, min(VMDK_DESC_READ, length - VMDK_DESC_OFFSET)))
    text = raw.split(b"\0", 1)[0]
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:  # encoding="windows-1252": every keyword we check is ASCII either way
        decoded = text.decode("latin-1")
    if any(ord(c) < 32 and c not in "\t\r\n" for c in decoded):
        raise Malformed("its VMDK descriptor holds control characters")
    return decoded


def check_vmdk(read: ReadRange, offset: int, length: int, head: bytes) -> None:
    """A monolithicSparse or streamOptimized VMDK whose descriptor only describes itself."""
    if head[:4] != b"KDMV":
        raise FormatRuleError(f"{SELF_CONTAINED} (a descriptor file: its extents are other files)")
    if len(head) < 512:
        raise Malformed("its VMDK header is incomplete")
    version, flags, capacity, grain, desc_sector, desc_sectors = struct.unpack_from("<IIQQQQ", head, 4)
    compression = struct.unpack_from("<H", head, 77)[0]
    if version not in (1, 2, 3):
        raise Malformed(f"VMDK header version {version} is not one VMware defines (1-3)")
    if capacity == 0:
        raise FormatRuleError("its sparse header has capacity 0, which makes qemu read the descriptor's extents as files")
    if desc_sector != 1 or not 1 <= desc_sectors <= 20:
        raise Malformed("its VMDK descriptor is not embedded right after the header")
    if grain == 0 or grain & (grain - 1) or grain > 0x200000:
        raise Malformed(f"its VMDK grain size of {grain} sectors is not a power of two up to 1 GiB")
    compressed = bool(flags & VMDK_FLAG_COMPRESSED) or compression == VMDK_COMPRESSION_DEFLATE
    if compression not in (0, VMDK_COMPRESSION_DEFLATE):
        raise Malformed(f"its VMDK compression algorithm {compression} is unknown (only deflate)")
    text = vmdk_descriptor_text(read, offset, length)
    if "parentFileNameHint" in text:
        raise FormatRuleError("its VMDK descriptor names a parent file (parentFileNameHint), which qemu would open")
    create_types: list[str] = []
    extents: list[tuple[str, int, str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if _DDB_LINE.fullmatch(line):
            continue
        if match := _EXTENT_LINE.fullmatch(line):
            extents.append((match[1], int(match[2]), match[3], match[4]))
            continue
        match = _HEADER_LINE.fullmatch(line)
        if match is None or match[1] not in _DESCRIPTOR_KEYS:
            shown = line[:60].encode("unicode_escape").decode()
            raise Malformed(f"its VMDK descriptor line {number} is not one a sparse VMDK has: {shown!r}")
        key, value = match[1], match[2].strip('"')
        if key == "createType":
            create_types.append(value)
        elif key == "parentCID" and value.lower() != "ffffffff":
            raise FormatRuleError("its VMDK descriptor names a parent disk (parentCID), whose data is not in the file")
    # qemu takes the first "createType" anywhere in the text; we take the one line: they must agree.
    if len(re.findall("createtype", text, re.IGNORECASE)) != 1 or len(create_types) != 1:
        raise Malformed("its VMDK descriptor must have exactly one createType line, spelt as VMware writes it")
    if text.count("parentCID") > 1:
        raise Malformed("its VMDK descriptor has more than one parentCID line")
    subformat = create_types[0]
    if subformat not in SUBFORMATS:
        raise Unsupported(f"its VMDK type is {subformat[:40]!r}, not monolithicSparse or streamOptimized")
    if (subformat == "streamOptimized") != compressed:
        raise Malformed(f"its VMDK descriptor says {subformat} but its header says {'' if compressed else 'not '}compressed")
    if len(extents) != 1:
        raise FormatRuleError(f"{SELF_CONTAINED}: it lists {len(extents)} extents")
    if extents[0][2] != "SPARSE" or not _OWN_EXTENT.fullmatch(extents[0][3].strip()):
        raise FormatRuleError(f"{SELF_CONTAINED}: its extent is {extents[0][2][:20]!r}, not a SPARSE extent of this file")
    sectors = extents[0][1]
    if sectors != capacity:
        raise Malformed(f"its VMDK extent covers {sectors} sectors but the header says {capacity}")


# --- qcow2 ------------------------------------------------------------------------------------
QCOW2_CRYPT = {1: "AES", 2: "LUKS"}
QCOW2_INCOMPATIBLE = {0: "dirty", 1: "corrupt", 2: "external data file", 3: "compression type", 4: "extended L2 entries"}


def check_qcow2(head: bytes) -> None:
    """Version 2 or 3, not encrypted, only the incompatible features qemu defines and we can read."""
    if len(head) < 72:
        raise Malformed("its qcow2 header is incomplete")
    version, crypt = struct.unpack_from(">I", head, 4)[0], struct.unpack_from(">I", head, 32)[0]
    if version == 1:
        raise Unsupported("qcow2 version 1 is not supported (only 2 and 3); convert it with qemu-img first")
    if version not in (2, 3):
        raise Malformed(f"its qcow2 header says version {version}, which does not exist (a damaged image)")
    if crypt:
        method = QCOW2_CRYPT.get(crypt, f"method {crypt}")
        raise Unsupported(f"the qcow2 image is encrypted ({method}); decrypt it first (qemu-img convert with its key)")
    if version == 2:
        return
    if len(head) < 104:
        raise Malformed("its qcow2 v3 header is incomplete")
    (incompatible,) = struct.unpack_from(">Q", head, 72)
    unknown = incompatible & ~((1 << len(QCOW2_INCOMPATIBLE)) - 1)
    if unknown:
        raise Unsupported(f"it uses qcow2 incompatible features this importer does not know (bits {unknown:#x})")
    if incompatible & (1 << 1):
        raise Unsupported("qemu marked this qcow2 image corrupt; repair it with qemu-img check -r all first")
    if incompatible & (1 << 2):
        raise FormatRuleError("it uses an external data file, which would make qemu-img read another file")


# --- VHDX -------------------------------------------------------------------------------------
VHDX_HEADERS = (64 << 10, 128 << 10)
VHDX_REGION_TABLES = (192 << 10, 256 << 10)
REGION_METADATA = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
REGION_BAT = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
ITEM_FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
ITEM_VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
ITEM_PAGE83 = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
ITEM_LOGICAL_SECTOR = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
ITEM_PHYSICAL_SECTOR = uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556")
ITEM_PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
ITEM_LENGTHS = {ITEM_FILE_PARAMETERS: 8, ITEM_VIRTUAL_DISK_SIZE: 8, ITEM_PAGE83: 16, ITEM_LOGICAL_SECTOR: 4, ITEM_PHYSICAL_SECTOR: 4}
ITEM_NAMES = {
    ITEM_FILE_PARAMETERS: "File Parameters",
    ITEM_VIRTUAL_DISK_SIZE: "Virtual Disk Size",
    ITEM_PAGE83: "Page 83 Data",
    ITEM_LOGICAL_SECTOR: "Logical Sector Size",
    ITEM_PHYSICAL_SECTOR: "Physical Sector Size",
}
IS_REQUIRED = 1 << 2
MAX_VHDX_SIZE = 64 << 40


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of VHDX headers and region tables (MS-VHDX §2.2.2)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _checksummed(block: bytes, signature: bytes) -> bool:
    if len(block) < 8 or block[:4] != signature:
        return False
    (stored,) = struct.unpack_from("<I", block, 4)
    return crc32c(block[:4] + b"\0\0\0\0" + block[8:]) == stored


def check_vhdx(read: ReadRange, offset: int, length: int) -> int:
    """The virtual size, once the headers, region table and metadata are as MS-VHDX allows."""
    if length < 320 << 10:
        raise Malformed("the VHDX file is shorter than its fixed header area (truncated?)")
    headers = [read(offset + at, 4096) for at in VHDX_HEADERS]
    valid = [(struct.unpack_from("<Q", h, 8)[0], h) for h in headers if _checksummed(h, b"head")]
    if not valid:
        raise Malformed("neither VHDX header has a valid checksum (damaged image)")
    current = max(valid, key=lambda item: item[0])[1]
    log_guid = current[48:64]
    if log_guid != bytes(16):
        raise Unsupported(
            "the VHDX has a log to replay (it was not cleanly closed by Hyper-V); attach it once in Hyper-V or run qemu-img check -r all"
        )
    table = next((t for t in (read(offset + at, 64 << 10) for at in VHDX_REGION_TABLES) if _checksummed(t, b"regi")), None)
    if table is None:
        raise Malformed("neither VHDX region table has a valid checksum (damaged image)")
    (count,) = struct.unpack_from("<I", table, 8)
    if count > 2047:
        raise Malformed(f"the VHDX region table lists {count} regions (at most 2047)")
    regions: dict[uuid.UUID, tuple[int, int]] = {}
    for i in range(count):
        entry = table[16 + 32 * i : 48 + 32 * i]
        guid = uuid.UUID(bytes_le=entry[:16])
        file_offset, region_length, required = struct.unpack_from("<QII", entry, 16)
        if guid not in (REGION_METADATA, REGION_BAT) and required & 1:
            raise Unsupported(f"the VHDX has a required region this importer does not know ({guid})")
        if file_offset % (1 << 20) or region_length % (1 << 20) or file_offset + region_length > length:
            raise Malformed("a VHDX region lies outside the file or off its 1 MiB alignment (truncated or damaged)")
        regions[guid] = (file_offset, region_length)
    if REGION_METADATA not in regions or REGION_BAT not in regions:
        raise Malformed("the VHDX region table lacks its metadata or BAT region")
    meta_at, meta_length = regions[REGION_METADATA]
    items = _vhdx_metadata(read, offset + meta_at, meta_length)
    block_size, bits = struct.unpack("<II", items[ITEM_FILE_PARAMETERS])
    if bits & 2:
        raise FormatRuleError("this is a differencing VHDX (HasParent): its parent's data is in another file")
    if block_size < 1 << 20 or block_size > 256 << 20 or block_size & (block_size - 1):
        raise Malformed(f"the VHDX block size {block_size} is not a power of two from 1 MiB to 256 MiB")
    (size,) = struct.unpack("<Q", items[ITEM_VIRTUAL_DISK_SIZE])
    (logical,) = struct.unpack("<I", items[ITEM_LOGICAL_SECTOR])
    (physical,) = struct.unpack("<I", items[ITEM_PHYSICAL_SECTOR])
    if logical not in (512, 4096) or physical not in (512, 4096):
        raise Malformed(f"the VHDX sector sizes ({logical}/{physical}) are not 512 or 4096 bytes")
    if logical != 512:  # qemu's vhdx driver: "only supports 512 byte sector sizes" (ENOTSUP)
        raise Unsupported(
            "the VHDX has 4096-byte logical sectors, which qemu-img cannot read; "
            "convert it to a 512-byte-sector VHDX or to VHD/raw first (Hyper-V Convert-VHD, or qemu-img on a 512e copy)"
        )
    if size == 0 or size > MAX_VHDX_SIZE or size % logical:
        raise Malformed(f"the VHDX virtual size {size} is not a positive multiple of its {logical}-byte sectors up to 64 TiB")
    return int(size)


def _vhdx_metadata(read: ReadRange, at: int, region_length: int) -> dict[uuid.UUID, bytes]:
    table = read(at, 64 << 10)
    if table[:8] != b"metadata":
        raise Malformed("the VHDX metadata table has no signature (damaged image)")
    (count,) = struct.unpack_from("<H", table, 10)
    if count > 2047:
        raise Malformed(f"the VHDX metadata table lists {count} items (at most 2047)")
    items: dict[uuid.UUID, bytes] = {}
    for i in range(count):
        entry = table[32 + 32 * i : 64 + 32 * i]
        guid = uuid.UUID(bytes_le=entry[:16])
        item_offset, item_length, flags = struct.unpack_from("<III", entry, 16)
        if flags & 1:  # IsUser: user metadata, never needed to read the disk
            continue
        if guid == ITEM_PARENT_LOCATOR:
            raise FormatRuleError("this is a differencing VHDX (it has a parent locator): its parent's data is in another file")
        if guid not in ITEM_LENGTHS:
            if flags & IS_REQUIRED:
                raise Unsupported(f"the VHDX has a required metadata item this importer does not know ({guid})")
            continue
        if guid in items:
            raise Malformed(f"the VHDX lists its {ITEM_NAMES[guid]} item twice")
        if item_length != ITEM_LENGTHS[guid]:
            raise Malformed(f"the VHDX {ITEM_NAMES[guid]} item is {item_length} bytes, MS-VHDX says {ITEM_LENGTHS[guid]}")
        if item_offset < 64 << 10 or item_offset + item_length > region_length:
            raise Malformed(f"the VHDX {ITEM_NAMES[guid]} item lies outside the metadata region")
        items[guid] = read(at + item_offset, item_length)
    missing = [name for guid, name in ITEM_NAMES.items() if guid not in items]
    if missing:
        raise Malformed(f"the VHDX lacks its required metadata: {', '.join(missing)}")
    return items


# --- VDI and VHD ------------------------------------------------------------------------------
def check_vdi(head: bytes, length: int) -> None:
    """VirtualBox VDI: only dynamic and fixed images, with every allocated block inside the file."""
    if len(head) < 0x188:
        raise Malformed("its header is incomplete")
    (image_type,) = struct.unpack_from("<I", head, 0x4C)
    if image_type not in (1, 2):
        raise Unsupported(f"type {image_type} (only dynamic and fixed VDIs; a differencing VDI needs its parent)")
    (offset_data,) = struct.unpack_from("<I", head, 0x158)
    (block_size,) = struct.unpack_from("<I", head, 0x178)
    (blocks_allocated,) = struct.unpack_from("<I", head, 0x184)
    need = offset_data + blocks_allocated * block_size
    if need > length:
        raise Malformed(f"its {blocks_allocated} allocated blocks need {need} bytes, the file has {length} (truncated?)")


def check_vhd_type(footer: bytes, kind: str, expected: int) -> None:
    """A differencing VHD (type 4) reads its parent from another file; qemu-img would import it
    without the parent's data, or read a host file named by its parent locators."""
    disk_type = struct.unpack(">I", footer[60:64])[0]
    if disk_type == 4:
        raise FormatRuleError("a differencing VHD reads its parent from another file")
    if disk_type != expected:
        raise Malformed(f"{kind} VHD of type {disk_type} (expected {expected})")
