"""streamOptimized VMDKs in the layout VMware writes them (ESXi/vCenter OVA export, ovftool).

Written from VMware's *Virtual Disk Format 5.0* ("Stream-Optimized Compressed Sparse Extents"),
not from what ``qemu-img convert -O vmdk -o subformat=streamOptimized`` produces (qemu writes the
grain directory location into the header). VMware streams the disk in one pass, so:

* the header at sector 0 says ``gdOffset = GD_AT_END`` (0xffffffffffffffff): the grain directory
  is not known yet;
* the embedded descriptor follows (sector 1), then every non-zero grain as a *grain marker*
  (``lba`` in sectors, compressed ``size``, zlib/deflate data) padded to a sector;
* then a grain-table marker and table for each 512 grains, a grain-directory marker and the
  directory, a *footer marker* and the **footer** (the header again, now with the real
  ``gdOffset``), and the end-of-stream marker (a zero sector).

Readers must take the footer, 1024 bytes before the end, as the real header; that is what the
tests check the importer does for images larger than what it reads from the front.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

SECTOR = 512
GRAIN_SECTORS = 128  # 64 KiB grains, as VMware writes them
GTES_PER_GT = 512
GD_AT_END = 0xFFFFFFFFFFFFFFFF
FLAGS = 0x1 | 0x10000 | 0x20000  # valid newline test, compressed grains, markers
MARKER_EOS, MARKER_GT, MARKER_GD, MARKER_FOOTER = 0, 1, 2, 3
DESCRIPTOR_SECTORS = 2
OVERHEAD_SECTORS = 128  # where the first grain may start (header + descriptor, rounded up)


def _header(capacity_sectors: int, gd_offset: int) -> bytes:
    header = struct.pack(
        "<4sIIQQQQIQQQB4sH",
        b"KDMV",
        3,  # version 3: streamOptimized
        FLAGS,
        capacity_sectors,
        GRAIN_SECTORS,
        1,  # descriptorOffset
        DESCRIPTOR_SECTORS,
        GTES_PER_GT,
        0,  # rgdOffset: no redundant directory in a stream
        gd_offset,
        OVERHEAD_SECTORS,
        0,  # uncleanShutdown
        b"\n \r\n",
        1,  # compressAlgorithm: deflate
    )
    return header.ljust(SECTOR, b"\0")


def _descriptor(capacity_sectors: int) -> bytes:
    cylinders = max(1, capacity_sectors // (255 * 63))
    text = (
        "# Disk DescriptorFile\n"
        "version=1\n"
        "CID=fffffffe\n"
        "parentCID=ffffffff\n"
        'createType="streamOptimized"\n'
        "\n"
        "# Extent description\n"
        f'RW {capacity_sectors} SPARSE "disk.vmdk"\n'
        "\n"
        "# The Disk Data Base\n"
        "#DDB\n"
        "\n"
        'ddb.adapterType = "lsilogic"\n'
        f'ddb.geometry.cylinders = "{cylinders}"\n'
        'ddb.geometry.heads = "255"\n'
        'ddb.geometry.sectors = "63"\n'
        'ddb.longContentID = "0123456789abcdef0123456789abcdef"\n'
        'ddb.toolsInstallType = "4"\n'
        'ddb.toolsVersion = "12352"\n'
        'ddb.virtualHWVersion = "14"\n'
    ).encode()
    return text.ljust(DESCRIPTOR_SECTORS * SECTOR, b"\0")


def _marker(value: int, kind: int) -> bytes:
    """A metadata marker: ``val`` (sectors of metadata that follow), size 0, type."""
    return struct.pack("<QII", value, 0, kind).ljust(SECTOR, b"\0")


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % SECTOR)


def write_stream_optimized(raw: Path, out: Path) -> Path:
    """``raw`` (a raw disk, a multiple of 512 bytes) as a VMware-layout streamOptimized VMDK at ``out``."""
    size = raw.stat().st_size
    if size % SECTOR:
        raise ValueError(f"{raw}: {size} bytes is not a whole number of sectors")
    capacity = size // SECTOR
    grain_bytes = GRAIN_SECTORS * SECTOR
    grains = -(-capacity // GRAIN_SECTORS)
    tables = -(-grains // GTES_PER_GT)
    table: list[int] = [0] * (tables * GTES_PER_GT)
    with raw.open("rb") as src, out.open("wb") as dst:
        dst.write(_header(capacity, GD_AT_END))
        dst.write(_descriptor(capacity))
        dst.write(b"\0" * ((OVERHEAD_SECTORS - 1 - DESCRIPTOR_SECTORS) * SECTOR))
        for grain in range(grains):
            data = src.read(grain_bytes)
            if not data.strip(b"\0"):
                continue  # a zero grain is simply absent (its table entry stays 0)
            data = data.ljust(grain_bytes, b"\0")  # a short last grain is padded
            compressed = zlib.compress(data, 6)
            table[grain] = dst.tell() // SECTOR
            dst.write(_pad(struct.pack("<QI", grain * GRAIN_SECTORS, len(compressed)) + compressed))
        directory = []
        table_sectors = GTES_PER_GT * 4 // SECTOR
        for number in range(tables):
            dst.write(_marker(table_sectors, MARKER_GT))
            directory.append(dst.tell() // SECTOR)
            entries = table[number * GTES_PER_GT : (number + 1) * GTES_PER_GT]
            dst.write(struct.pack(f"<{GTES_PER_GT}I", *entries))
        directory_bytes = _pad(struct.pack(f"<{len(directory)}I", *directory))
        dst.write(_marker(len(directory_bytes) // SECTOR, MARKER_GD))
        gd_offset = dst.tell() // SECTOR
        dst.write(directory_bytes)
        dst.write(_marker(1, MARKER_FOOTER))
        dst.write(_header(capacity, gd_offset))
        dst.write(_marker(0, MARKER_EOS))
    return out
