"""streamOptimized VMDKs in the layout VirtualBox writes them (``VBoxManage export``, OVA export).

VirtualBox's exporter creates its disks with the VMDK backend's *stream* writer
(``vmdkCreateStreamImage`` and ``vmdkStreamAllocGrain`` in VirtualBox's
``src/VBox/Storage/VMDK.cpp``), which differs from VMware's (see ``vmdkstream.py``) in ways a
reader has to cope with, all allowed by VMware's *Virtual Disk Format 5.0*:

* the header also says ``gdOffset = GD_AT_END`` (``fFooter`` is set for stream images), so
  the real header is the footer 1024 bytes before the end, like VMware's;
* the embedded descriptor takes just as many sectors as its text (not a fixed size), its
  extent is ``RDONLY`` and its disk database is VirtualBox's (``ddb.adapterType="ide"``,
  ``ddb.virtualHWVersion = "4"``, UUIDs), written without spaces around ``=``;
* grain tables are *interleaved*: the table of each 512-grain range follows that range's
  grains as soon as a grain of a later range is written, and a table that would be all zero
  is not written at all (its grain directory entry stays 0);
* then the grain directory, the footer and the end-of-stream marker, as in the spec.
"""

from __future__ import annotations

import os
import struct
import uuid
import zlib
from pathlib import Path

from .vmdkstream import FLAGS, GD_AT_END, GRAIN_SECTORS, GTES_PER_GT, MARKER_EOS, MARKER_FOOTER, MARKER_GD, MARKER_GT, SECTOR

GRAIN = GRAIN_SECTORS * SECTOR


def _header(capacity: int, descriptor_sectors: int, overhead: int, gd_offset: int) -> bytes:
    """VMDK 5.0 "Hosted Sparse Extent Header", as ``vmdkWriteMetaSparseExtent`` fills it."""
    return struct.pack(
        "<4sIIQQQQIQQQB4sH",
        b"KDMV",
        3,  # "the vast majority of streamOptimized VMDKs actually contain version 3"
        FLAGS,  # valid newline test, compressed grains, markers
        capacity,
        GRAIN_SECTORS,
        1,  # descriptorOffset: right after the header
        descriptor_sectors,
        GTES_PER_GT,
        0,  # rgdOffset: a stream has one grain directory
        gd_offset,
        overhead,
        0,  # uncleanShutdown
        b"\n \r\n",
        1,  # deflate
    ).ljust(SECTOR, b"\0")


def _descriptor(name: str, size: int) -> bytes:
    """The descriptor ``vmdkCreateDescriptor`` and ``vmdkCreateImage`` build, in their line order."""
    sectors = size // SECTOR
    cylinders = min(sectors // 16 // 63, 16383)  # VirtualBox's default PCHS geometry: 16 heads, 63 sectors
    lines = [
        "# Disk DescriptorFile",
        "version=1",
        f"CID={os.urandom(4).hex()}",
        "parentCID=ffffffff",
        'createType="streamOptimized"',
        "",
        "# Extent description",
        f'RDONLY {sectors} SPARSE "{name}"',  # stream extents are created read-only
        "",
        "# The disk Data Base ",  # "The trailing space is created by VMware, too."
        "#DDB",
        "",
        'ddb.virtualHWVersion = "4"',
        'ddb.adapterType="ide"',
        f'ddb.geometry.cylinders="{cylinders}"',
        'ddb.geometry.heads="16"',
        'ddb.geometry.sectors="63"',
        f'ddb.uuid.image="{uuid.uuid4()}"',
        f'ddb.uuid.parent="{uuid.UUID(int=0)}"',
        f'ddb.uuid.modification="{uuid.UUID(int=0)}"',
        f'ddb.uuid.parentmodification="{uuid.UUID(int=0)}"',
    ]
    text = "".join(line + "\n" for line in lines).encode()
    return text + b"\0" * (-len(text) % SECTOR)


def _marker(value: int, kind: int) -> bytes:
    return struct.pack("<QII", value, 0, kind).ljust(SECTOR, b"\0")


def write_stream_optimized_vbox(raw: Path, out: Path, name: str | None = None) -> Path:
    """``raw`` as a VirtualBox-layout streamOptimized VMDK at ``out`` (``name``: the extent's file name)."""
    size = raw.stat().st_size
    if size % SECTOR:
        raise ValueError(f"{raw}: {size} bytes is not a whole number of sectors")
    capacity = -(-size // GRAIN) * GRAIN_SECTORS  # cSectors: the size rounded up to whole 64 KiB grains
    grains = capacity // GRAIN_SECTORS
    gd_entries = -(-grains // GTES_PER_GT)
    gd_bytes = gd_entries * 4
    # vmdkCreateGrainDirectory for a stream: a dummy start sector 1 plus the directory, rounded to a grain.
    overhead = -(-(SECTOR + -(-gd_bytes // SECTOR) * SECTOR) // GRAIN) * GRAIN_SECTORS
    descriptor = _descriptor(name or out.name, size)
    directory = [0] * gd_entries
    table = [0] * GTES_PER_GT
    table_entry = 0  # the grain directory entry whose table is being filled
    with raw.open("rb") as src, out.open("wb") as dst:

        def flush_table() -> None:
            """``vmdkStreamFlushGT``: a GT marker and the table, unless every entry is 0."""
            if not any(table):
                return
            dst.write(_marker(GTES_PER_GT * 4 // SECTOR, MARKER_GT))
            directory[table_entry] = dst.tell() // SECTOR
            dst.write(struct.pack(f"<{GTES_PER_GT}I", *table))

        dst.write(_header(capacity, len(descriptor) // SECTOR, overhead, GD_AT_END))
        dst.write(descriptor)
        dst.seek(overhead * SECTOR)
        for grain in range(grains):
            data = src.read(GRAIN).ljust(GRAIN, b"\0")  # the last grain is padded with zeros
            if not data.strip(b"\0"):
                continue  # "zero byte write optimization": zero grains are not written
            if grain // GTES_PER_GT != table_entry:
                flush_table()
                table = [0] * GTES_PER_GT
                table_entry = grain // GTES_PER_GT
            compressed = zlib.compress(data, 6)
            table[grain % GTES_PER_GT] = dst.tell() // SECTOR
            record = struct.pack("<QI", grain * GRAIN_SECTORS, len(compressed)) + compressed
            dst.write(record + b"\0" * (-len(record) % SECTOR))
        flush_table()
        dst.write(_marker(-(-gd_bytes // SECTOR), MARKER_GD))
        gd_offset = dst.tell() // SECTOR
        packed = struct.pack(f"<{gd_entries}I", *directory)
        dst.write(packed + b"\0" * (-len(packed) % SECTOR))
        dst.write(_marker(1, MARKER_FOOTER))
        dst.write(_header(capacity, len(descriptor) // SECTOR, overhead, gd_offset))
        dst.write(_marker(0, MARKER_EOS))
    return out
