"""Dynamic VHDX files in the layout Hyper-V writes for Generation 2 VMs, from [MS-VHDX].

Written from Microsoft's *[MS-VHDX]: Virtual Hard Disk v2 (VHDX) File Format* (v20180912),
not from what ``qemu-img convert -O vhdx`` produces: qemu puts the BAT before the metadata
region and picks its own block size. Here, as Hyper-V creates a Gen2 VM's disk with
``New-VHD -Dynamic``:

* 32 MiB payload blocks (``New-VHD``'s default ``BlockSizeBytes``) and 4 KiB physical
  sectors; 512-byte logical sectors (a 512e disk) by default, 4 KiB on request (a 4Kn disk,
  which qemu-img cannot open: its vhdx driver only reads 512-byte logical sectors);
* the 1 MiB header section (§2.1): file type identifier, two headers (CRC-32C, sequence
  numbers), two identical region tables; an empty 1 MiB log at 1 MiB (``LogGuid`` zero);
* the metadata region at 2 MiB and the BAT at 3 MiB (the order Hyper-V uses, assumed: qemu
  uses the reverse), payload blocks from the end of the BAT on, each 1 MiB aligned;
* only blocks holding a non-zero byte are allocated (``PAYLOAD_BLOCK_FULLY_PRESENT``), in
  disk order; the others stay ``PAYLOAD_BLOCK_NOT_PRESENT`` (or ``PAYLOAD_BLOCK_ZERO``).

The input's holes are skipped with ``SEEK_DATA``, and the output is written sparse, so a
large, mostly empty disk (needed to reach a sector-bitmap BAT entry) costs little.
"""

from __future__ import annotations

import errno
import os
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

from vdimport_worker.formatrules import crc32c  # CRC-32C as MS-VHDX §2.2.2 prescribes; checked against RFC 3720's vector

KIB, MIB = 1 << 10, 1 << 20
# §2.1 Layout: fixed 64 KiB structures in the first MiB.
FILE_ID_AT, HEADER_AT, REGION_TABLE_AT = 0, (64 * KIB, 128 * KIB), (192 * KIB, 256 * KIB)
LOG_AT, LOG_LENGTH = 1 * MIB, 1 * MIB  # §2.2.2: LogOffset/LogLength multiples of 1 MiB, at least 1 MiB
METADATA_AT, METADATA_LENGTH = 2 * MIB, 1 * MIB
BAT_AT = 3 * MIB
# §2.2.3.2 Known regions, §2.6.2 Known metadata items (GUIDs in their binary, little-endian form).
REGION_BAT = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
REGION_METADATA = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
ITEM_FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
ITEM_VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
ITEM_PAGE83 = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
ITEM_LOGICAL_SECTOR = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
ITEM_PHYSICAL_SECTOR = uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556")
# §2.6.1.2 Metadata table entry flags.
IS_USER, IS_VIRTUAL_DISK, IS_REQUIRED = 1 << 0, 1 << 1, 1 << 2
# §2.5.1.1 Payload BAT entry states.
PAYLOAD_BLOCK_NOT_PRESENT, PAYLOAD_BLOCK_ZERO, PAYLOAD_BLOCK_FULLY_PRESENT = 0, 2, 6
SB_BLOCK_NOT_PRESENT = 0  # §2.5.1.2: the only valid sector-bitmap state in a dynamic VHDX
SECTORS_PER_BITMAP = 1 << 23  # §2.4: sectors one 1 MiB sector bitmap block describes
DEFAULT_BLOCK = 32 * MIB
CREATOR = "Microsoft Windows 10.0.20348.0"  # assumed: the Windows version string Hyper-V puts here


def _checksummed(structure: bytearray) -> bytes:
    """The checksum over the whole structure with its Checksum field (bytes 4-8) zero (§2.2.2, §2.2.3.1)."""
    structure[4:8] = b"\0\0\0\0"
    structure[4:8] = struct.pack("<I", crc32c(bytes(structure)))
    return bytes(structure)


def _file_identifier() -> bytes:
    """§2.2.1: signature "vhdxfile" and the creator, UTF-16 in 512 bytes, in a 64 KiB structure."""
    return (b"vhdxfile" + CREATOR.encode("utf-16-le").ljust(512, b"\0")).ljust(64 * KIB, b"\0")


def _header(sequence: int, file_write: uuid.UUID, data_write: uuid.UUID) -> bytes:
    """§2.2.2: a 4 KiB header; LogGuid zero says the log is empty, LogVersion 0, Version 1."""
    header = bytearray(4 * KIB)
    struct.pack_into(
        "<4sIQ16s16s16sHHIQ",
        header,
        0,
        b"head",
        0,
        sequence,
        file_write.bytes_le,
        data_write.bytes_le,
        bytes(16),  # LogGuid
        0,  # LogVersion
        1,  # Version
        LOG_LENGTH,
        LOG_AT,
    )
    return _checksummed(header)


def _region_table(bat_length: int) -> bytes:
    """§2.2.3: the 64 KiB region table, checksummed as a whole; both known regions are required."""
    table = bytearray(64 * KIB)
    struct.pack_into("<4sIII", table, 0, b"regi", 0, 2, 0)
    for i, (guid, at, length) in enumerate(((REGION_BAT, BAT_AT, bat_length), (REGION_METADATA, METADATA_AT, METADATA_LENGTH))):
        struct.pack_into("<16sQII", table, 16 + 32 * i, guid.bytes_le, at, length, 1)
    return _checksummed(table)


def _metadata(size: int, block_size: int, logical: int, physical: int) -> bytes:
    """§2.6: the 64 KiB metadata table, then the five required items from offset 64 KiB on.

    Flags per §2.6.2's table: File Parameters is system metadata of the file (IsVirtualDisk
    clear: a differencing child gets its own), the other four describe the virtual disk; all
    are required and none is user metadata.
    """
    items = [
        (ITEM_FILE_PARAMETERS, struct.pack("<II", block_size, 0), IS_REQUIRED),  # §2.6.2.1: not LeaveBlockAllocated, no parent
        (ITEM_VIRTUAL_DISK_SIZE, struct.pack("<Q", size), IS_REQUIRED | IS_VIRTUAL_DISK),  # §2.6.2.2
        (ITEM_PAGE83, uuid.uuid4().bytes_le, IS_REQUIRED | IS_VIRTUAL_DISK),  # §2.6.2.3: the SCSI page 83 identifier
        (ITEM_LOGICAL_SECTOR, struct.pack("<I", logical), IS_REQUIRED | IS_VIRTUAL_DISK),  # §2.6.2.4
        (ITEM_PHYSICAL_SECTOR, struct.pack("<I", physical), IS_REQUIRED | IS_VIRTUAL_DISK),  # §2.6.2.5
    ]
    region = bytearray(METADATA_LENGTH)
    struct.pack_into("<8sHH", region, 0, b"metadata", 0, len(items))  # §2.6.1.1 (20 reserved bytes follow)
    at = 64 * KIB  # §2.6.1.2: an item's Offset is at least 64 KiB
    for i, (guid, value, flags) in enumerate(items):
        struct.pack_into("<16sIIII", region, 32 + 32 * i, guid.bytes_le, at, len(value), flags, 0)
        region[at : at + len(value)] = value
        at += len(value)
    return bytes(region)


def chunk_ratio(block_size: int, logical: int) -> int:
    """§2.4: payload blocks per sector bitmap block, (2^23 * LogicalSectorSize) / BlockSize."""
    return SECTORS_PER_BITMAP * logical // block_size


def bat_index(block: int, ratio: int) -> int:
    """§2.5: a chunk's sector-bitmap entry follows its ``ratio`` payload entries."""
    return block + block // ratio


def bat_entries(blocks: int, ratio: int) -> int:
    """§2.5: a dynamic VHDX's BAT ends with the last payload block's entry."""
    return blocks + (blocks - 1) // ratio


def _data_blocks(fd: int, size: int, block_size: int) -> Iterator[int]:
    """Indexes of the blocks that may hold data: the file's holes are skipped (``SEEK_DATA``)."""
    blocks = -(-size // block_size)
    position = 0
    while position < size:
        try:
            data = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after position
                return
            if exc.errno == errno.EINVAL:  # no SEEK_DATA here: every block may hold data
                yield from range(position // block_size, blocks)
                return
            raise
        if data >= size:
            return
        index = data // block_size
        yield index
        position = (index + 1) * block_size


def _write_sparse(dst: int, at: int, data: bytes, piece: int = MIB) -> None:
    """Write ``data`` at ``at``, leaving its all-zero MiBs as holes (the bytes read the same)."""
    zero = bytes(piece)
    view = memoryview(data)
    for start in range(0, len(data), piece):
        chunk = view[start : start + piece]
        if chunk != zero[: len(chunk)]:
            os.pwrite(dst, chunk, at + start)


def write_vhdx(
    raw: Path,
    out: Path,
    block_size: int = DEFAULT_BLOCK,
    logical_sector: int = 512,
    physical_sector: int = 4096,
    zero_blocks: int = PAYLOAD_BLOCK_NOT_PRESENT,
) -> Path:
    """``raw`` as a dynamic VHDX at ``out``; ``zero_blocks`` is the state of blocks left out
    (NOT_PRESENT, what a new Hyper-V disk has, or ZERO)."""
    size = raw.stat().st_size
    if size == 0 or size % logical_sector:
        raise ValueError(f"{raw}: {size} bytes is not a whole number of {logical_sector}-byte sectors (MS-VHDX §2.6.2.2)")
    if logical_sector not in (512, 4096) or physical_sector not in (512, 4096):
        raise ValueError("MS-VHDX §2.6.2.4-5: sector sizes are 512 or 4096 bytes")
    if block_size < MIB or block_size > 256 * MIB or block_size & (block_size - 1):
        raise ValueError("MS-VHDX §2.6.2.1: the block size is a power of two from 1 MiB to 256 MiB")
    if zero_blocks not in (PAYLOAD_BLOCK_NOT_PRESENT, PAYLOAD_BLOCK_ZERO):
        raise ValueError("a dynamic VHDX leaves blocks NOT_PRESENT or ZERO")
    ratio = chunk_ratio(block_size, logical_sector)
    blocks = -(-size // block_size)
    bat = [SB_BLOCK_NOT_PRESENT] * bat_entries(blocks, ratio)
    for block in range(blocks):
        bat[bat_index(block, ratio)] = zero_blocks
    bat_length = -(-len(bat) * 8 // MIB) * MIB  # §2.2.3.2: region lengths are multiples of 1 MiB
    next_block = BAT_AT + bat_length  # §2.5.1: FileOffsetMB, so every block starts on a MiB
    zero = bytes(block_size)
    with raw.open("rb") as src, out.open("wb") as dst_file:
        dst = dst_file.fileno()
        for block in _data_blocks(src.fileno(), size, block_size):
            data = os.pread(src.fileno(), block_size, block * block_size)
            if data == zero[: len(data)]:
                continue
            bat[bat_index(block, ratio)] = PAYLOAD_BLOCK_FULLY_PRESENT | (next_block // MIB) << 20
            _write_sparse(dst, next_block, data)  # a short last block: the rest of it reads as zero
            next_block += block_size
        file_write, data_write = uuid.uuid4(), uuid.uuid4()
        sequence = int.from_bytes(os.urandom(4), "little")
        os.pwrite(dst, _file_identifier(), FILE_ID_AT)
        # §2.2.2: both headers valid; the current one is the one with the higher sequence number.
        os.pwrite(dst, _header(sequence, file_write, data_write), HEADER_AT[0])
        os.pwrite(dst, _header(sequence + 1, file_write, data_write), HEADER_AT[1])
        table = _region_table(bat_length)
        for at in REGION_TABLE_AT:  # §2.2.3: the two copies are identical
            os.pwrite(dst, table, at)
        _write_sparse(dst, METADATA_AT, _metadata(size, block_size, logical_sector, physical_sector))
        _write_sparse(dst, BAT_AT, struct.pack(f"<{len(bat)}Q", *bat))
        os.ftruncate(dst, next_block)  # the log (zero, LogGuid zero: empty) and all blocks lie inside the file
    return out
