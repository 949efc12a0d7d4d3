"""An image carrying LVM and MD metadata imports byte for byte, and nothing acts on that metadata.

The disk: a GPT with an ext4 partition, a partition that is an LVM PV of a complete volume
group named like Oracle Linux's own root VG (``ocivolume``, one LV), and a partition with an
MD v1.2 superblock of a raid1 member. The metadata is written here per the on-disk formats
(LVM2 label, PV header and text metadata area, lvm2 ``lib/format_text/layout.h``; MD
``mdp_superblock_1``, linux ``include/uapi/linux/raid/md_p.h``) and checked with blkid, which
is what udev's probe sees (and, where lvm and mdadm are installed, with them too).

On the worker, cloud-init keeps LVM, mdadm and udev off data volumes (test_worker_launch).
Here the image goes through the whole local pipeline onto a loop device of this machine: the
volume must hold exactly the image, fsck must leave both partitions alone, and this machine
must not have activated a VG or assembled an array on the way (device-mapper and md devices
before and after). On a kernel without device-mapper and md drivers (``/proc/devices``) that
last check can only confirm nothing appeared.
"""

from __future__ import annotations

import itertools
import json
import shutil
import struct
import subprocess
import uuid
import zlib
from pathlib import Path

import pytest
from importkit import Importer, assert_nothing_leaked

from vdimport_local.diskimages import Partition, build_disk, sample_files
from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.emulator.vm import loop_devices_usable

MIB = 1 << 20
MASK = 0xFFFFFFFF
LVM_INITIAL_CRC = 0xF597A6CF  # lvm2 lib/misc/crc.h
LVM_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _lvm_crc(data: bytes) -> int:
    """lvm2's calc_crc: CRC-32 (0xedb88320) from INITIAL_CRC, without the final inversion."""
    return ~zlib.crc32(data, ~LVM_INITIAL_CRC & MASK) & MASK


def _lvm_id() -> str:
    raw = uuid.uuid4().bytes + uuid.uuid4().bytes
    return "".join(LVM_ID_CHARS[b % len(LVM_ID_CHARS)] for b in raw)


def _dashed(lvm_id: str) -> str:
    cuts = [0, 6, 10, 14, 18, 22, 26, 32]
    return "-".join(lvm_id[a:b] for a, b in itertools.pairwise(cuts))


def lvm_pv(size: int, vg: str = "ocivolume") -> bytes:
    """The first MiB of a PV of ``size`` bytes holding a complete VG ``vg`` with one 4 MiB LV."""
    mda_start, mda_size, pe_start, extent = 4096, MIB - 4096, MIB, 4 * MIB
    pv_id, vg_id, lv_id = _lvm_id(), _lvm_id(), _lvm_id()
    text = (
        f'{vg} {{\nid = "{_dashed(vg_id)}"\nseqno = 1\nformat = "lvm2"\nstatus = ["RESIZEABLE", "READ", "WRITE"]\nflags = []\n'
        f"extent_size = {extent // 512}\nmax_lv = 0\nmax_pv = 0\nmetadata_copies = 0\n"
        f'physical_volumes {{\npv0 {{\nid = "{_dashed(pv_id)}"\ndevice = "/dev/sda3"\nstatus = ["ALLOCATABLE"]\nflags = []\n'
        f"dev_size = {size // 512}\npe_start = {pe_start // 512}\npe_count = {(size - pe_start) // extent}\n}}\n}}\n"
        f'logical_volumes {{\nroot {{\nid = "{_dashed(lv_id)}"\nstatus = ["READ", "WRITE", "VISIBLE"]\nflags = []\n'
        'segment_count = 1\nsegment1 {\nstart_extent = 0\nextent_count = 1\ntype = "striped"\nstripe_count = 1\n'
        'stripes = [\n"pv0", 0\n]\n}\n}\n}\n}\n'
        'contents = "Text Format Volume Group"\nversion = 1\ndescription = ""\ncreation_host = "hostile"\ncreation_time = 1700000000\n'
    ).encode() + b"\0"
    # label_header at sector 1, then pv_header: data areas, metadata areas (each list ends
    # with a zero entry), the pv_header_extension (version 2, PV_EXT_USED, no bootloader area)
    pv_header = pv_id.encode() + struct.pack("<Q", size) + struct.pack("<4Q", pe_start, 0, 0, 0)
    pv_header += struct.pack("<4Q", mda_start, mda_size, 0, 0) + struct.pack("<II2Q", 2, 1, 0, 0)
    label = bytearray(512)
    label[0:32] = b"LABELONE" + struct.pack("<QII", 1, 0, 32) + b"LVM2 001"
    label[32 : 32 + len(pv_header)] = pv_header
    label[16:20] = struct.pack("<I", _lvm_crc(bytes(label[20:])))
    mda_header = bytearray(512)
    mda_header[4:64] = b"\x20LVM2 x[5A%r0N*>" + struct.pack("<IQQQQII", 1, mda_start, mda_size, 512, len(text), _lvm_crc(text), 0)
    mda_header[0:4] = struct.pack("<I", _lvm_crc(bytes(mda_header[4:])))
    first = bytearray(pe_start)
    first[512:1024] = label
    first[mda_start : mda_start + 512] = mda_header
    first[mda_start + 512 : mda_start + 512 + len(text)] = text
    return bytes(first)


def md_member(size: int, name: str = "hostile:0") -> bytes:
    """The first 8 KiB of one member of size ``size`` of a clean two-disk raid1 (superblock 1.2, at 4 KiB)."""
    sectors, data_offset = size // 512, 2048
    sb = bytearray(256 + 2 * 2)
    struct.pack_into("<4I", sb, 0, 0xA92B4EFC, 1, 0, 0)  # magic, major_version, feature_map
    sb[16:32] = uuid.uuid4().bytes  # set_uuid
    sb[32 : 32 + len(name)] = name.encode()
    struct.pack_into("<QIIQII", sb, 64, 1700000000, 1, 0, sectors - data_offset, 0, 2)  # ctime, raid1, layout, size, chunk, disks
    struct.pack_into("<4Q", sb, 128, data_offset, sectors - data_offset, 8, 0)  # data_offset, data_size, super_offset
    sb[168:184] = uuid.uuid4().bytes  # device_uuid
    struct.pack_into("<3Q", sb, 192, 1700000000, 1, (1 << 64) - 1)  # utime, events, resync_offset: in sync
    struct.pack_into("<I", sb, 220, 2)  # max_dev
    struct.pack_into("<HH", sb, 256, 0, 1)  # dev_roles: this member is role 0
    total = sum(struct.unpack(f"<{len(sb) // 4}I", bytes(sb)))
    struct.pack_into("<I", sb, 216, ((total & MASK) + (total >> 32)) & MASK)  # sb_csum, as calc_sb_1_csum
    first = bytearray(8192)
    first[4096 : 4096 + len(sb)] = sb
    return bytes(first)


def _partitions(disk: Path) -> list[tuple[int, int]]:
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, check=True, text=True).stdout)
    return [(p["start"] * 512, p["size"] * 512) for p in table["partitiontable"]["partitions"]]


def _probe(disk: Path, offset: int, size: int) -> str:
    out = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "TYPE", "-O", str(offset), "-S", str(size), str(disk)], capture_output=True, text=True
    )
    return out.stdout.strip()


@pytest.fixture(scope="module")
def hostile_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    disk = build_disk(
        tmp_path_factory.mktemp("inert") / "lvm-md.raw",
        [Partition("ext4", 16, sample_files(seed=31, size=1 * MIB)), Partition("ext4", 64), Partition("ext4", 16)],
    )
    (_, _), (pv_at, pv_size), (md_at, md_size) = _partitions(disk)
    with open(disk, "r+b") as f:
        f.seek(pv_at)
        f.write(lvm_pv(pv_size))
        f.seek(md_at)
        f.write(md_member(md_size))
    assert _probe(disk, pv_at, pv_size) == "LVM2_member"
    assert _probe(disk, md_at, md_size) == "linux_raid_member"
    return disk


def _host_block_layers() -> dict[str, object]:
    """What this machine's kernel has assembled: device-mapper and md devices, /proc/mdstat, dmsetup's view."""
    devices = sorted(p.name for p in Path("/sys/class/block").iterdir() if p.name.startswith(("dm-", "md")))
    mdstat = Path("/proc/mdstat").read_text() if Path("/proc/mdstat").exists() else None
    dmsetup = None
    if shutil.which("dmsetup"):
        listing = subprocess.run(["dmsetup", "ls"], capture_output=True, text=True)
        dmsetup = listing.stdout if listing.returncode == 0 else None  # None: no device-mapper driver to ask
    return {"devices": devices, "mdstat": mdstat, "dmsetup": dmsetup}


def test_the_metadata_is_what_lvm_and_mdadm_would_act_on(hostile_disk: Path) -> None:
    """Where the tools are installed, they read the metadata as a complete VG and a clean array member."""
    (_, _), (pv_at, pv_size), (md_at, md_size) = _partitions(hostile_disk)
    if not (shutil.which("lvm") and shutil.which("mdadm") and loop_devices_usable()[0]):
        pytest.skip("needs lvm, mdadm and loop devices (blkid alone checked the metadata)")
    for at, size, check in ((pv_at, pv_size, "lvm"), (md_at, md_size, "mdadm")):
        loop = subprocess.run(
            ["losetup", "--find", "--show", "--read-only", "-o", str(at), "--sizelimit", str(size), str(hostile_disk)],
            capture_output=True,
            check=True,
            text=True,
        ).stdout.strip()
        try:
            if check == "lvm":  # only this loop device; no activation, no metadata backup on this machine
                config = f'devices {{ global_filter = [ "a|^{loop}$|", "r|.*|" ] use_devicesfile = 0 }} backup {{ backup = 0 archive = 0 }}'
                vgs = subprocess.run(
                    ["lvm", "vgs", "--noheadings", "-o", "vg_name,lv_count", "--config", config], capture_output=True, text=True
                )
                assert vgs.stdout.split() == ["ocivolume", "1"], vgs.stdout + vgs.stderr
            else:
                examine = subprocess.run(["mdadm", "--examine", loop], capture_output=True, text=True)
                assert "Raid Level : raid1" in examine.stdout and "- correct" in examine.stdout, examine.stdout + examine.stderr
        finally:
            subprocess.run(["losetup", "-d", loop], check=False)


@pytest.mark.skipif(
    not loop_devices_usable()[0], reason=f"volumes are loop devices only as root with /dev/loop-control: {loop_devices_usable()[1]}"
)
def test_an_image_with_lvm_and_md_metadata_imports_exactly_and_stays_inert(
    emu: EmulatorHandle, importer: Importer, hostile_disk: Path
) -> None:
    before = _host_block_layers()
    outcome = importer.run(hostile_disk, "hostile/lvm-md.raw")
    assert outcome.succeeded, outcome.error
    assert_nothing_leaked(emu, outcome, hostile_disk.read_bytes())
    statuses = {p["number"]: p["status"] for p in outcome.state["fsck_volume"]["partitions"]}
    assert statuses == {1: "clean", 2: "skipped", 3: "skipped"}, outcome.state["fsck_volume"]
    assert _host_block_layers() == before
