"""Build realistic disk images without root: a partition table, real file systems, files.

File systems are made in plain files (``mkfs.ext4 -d`` populates ext4 from a directory,
``mcopy`` fills FAT, XFS is made empty) and placed at their partition offsets, so no loop
device or mount is needed. ``convert`` produces every format vdimport imports (with qemu-img,
or in a producer's own layout: ``vmdk-vmware``, ``vhdx-hyperv``), ``make_ova`` wraps a disk in a
minimal tar and ``make_producer_ova`` packages raw disks the way ovftool or VirtualBox export
them (``ovapack.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1 << 20
# format name -> qemu-img -O and -o for it
FORMATS: dict[str, tuple[str, str | None]] = {
    "raw": ("raw", None),
    "qcow2": ("qcow2", None),
    "qcow2-compressed": ("qcow2", None),
    "vmdk": ("vmdk", "subformat=monolithicSparse"),
    "vmdk-stream": ("vmdk", "subformat=streamOptimized"),
    "vmdk-vmware": ("vmdk", None),  # streamOptimized as VMware writes it (vmdkstream.py), not qemu-img
    "vhd": ("vpc", "subformat=dynamic"),
    "vhd-fixed": ("vpc", "subformat=fixed,force_size=on"),
    "vhdx": ("vhdx", None),
    "vhdx-hyperv": ("vhdx", None),  # dynamic VHDX as Hyper-V writes it (vhdxwriter.py), not qemu-img
    "vdi": ("vdi", None),
}


@dataclass
class Partition:
    fs: str  # ext4 | xfs | vfat
    size_mib: int
    files: dict[str, bytes] = field(default_factory=dict)


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _mkfs(fs: str, image: Path, size: int, files: dict[str, bytes], scratch: Path) -> None:
    with open(image, "wb") as f:
        f.truncate(size)
    if fs == "ext4":
        content = scratch / "content"
        shutil.rmtree(content, ignore_errors=True)
        content.mkdir()
        for name, data in files.items():
            (content / name).parent.mkdir(parents=True, exist_ok=True)
            (content / name).write_bytes(data)
        _run("mkfs.ext4", "-q", "-F", "-d", str(content), str(image))
    elif fs == "xfs":
        _run("mkfs.xfs", "-q", "-f", str(image))
    elif fs == "vfat":
        _run("mkfs.vfat", str(image))
        for name, data in files.items():
            src = scratch / "vfat-file"
            src.write_bytes(data)
            _run("mcopy", "-i", str(image), str(src), f"::/{name}")
    else:
        raise ValueError(f"unsupported file system {fs}")


def _partition_type(fs: str, table: str) -> str:
    if fs != "vfat":
        return "L"
    return "b" if table == "dos" else "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"  # FAT32 / Microsoft basic data


def build_disk(path: Path, partitions: list[Partition], table: str = "gpt", min_size: int = 0) -> Path:
    """A raw disk at ``path`` with ``table`` (gpt or dos) and the given partitions; ``min_size``
    makes it at least that large (unpartitioned space after the partitions, left sparse)."""
    first = MIB
    total = max(first + sum(p.size_mib for p in partitions) * MIB + MIB, -(-min_size // MIB) * MIB)
    with open(path, "wb") as f:
        f.truncate(total)
    layout = f"label: {table}\n" + "".join(f"size={p.size_mib}MiB, type={_partition_type(p.fs, table)}\n" for p in partitions)
    subprocess.run(["sfdisk", "-q", "--no-reread", str(path)], input=layout.encode(), check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(prefix="vdimport-disk-") as tmp:
        scratch = Path(tmp)
        offset = first
        for number, part in enumerate(partitions, 1):
            fs_image = scratch / f"p{number}.img"
            _mkfs(part.fs, fs_image, part.size_mib * MIB, part.files, scratch)
            with open(fs_image, "rb") as src, open(path, "r+b") as dst:
                dst.seek(offset)
                shutil.copyfileobj(src, dst, 4 * MIB)
            offset += part.size_mib * MIB
    return path


def convert(raw: Path, fmt: str, out: Path) -> Path:
    """``raw`` in format ``fmt`` (a key of FORMATS) at ``out``."""
    if fmt == "vmdk-vmware":
        from .vmdkstream import write_stream_optimized

        return write_stream_optimized(raw, out)
    if fmt == "vhdx-hyperv":
        from .vhdxwriter import write_vhdx

        return write_vhdx(raw, out)
    qemu_format, options = FORMATS[fmt]
    cmd = ["qemu-img", "convert", "-f", "raw", "-O", qemu_format]
    if options:
        cmd += ["-o", options]
    if fmt == "qcow2-compressed":
        cmd.append("-c")
    _run(*cmd, str(raw), str(out))
    return out


def make_ova(disk: Path, out: Path, extra_disks: list[Path] | None = None) -> Path:
    """An OVA: a tar with an OVF descriptor first, then the disk(s)."""
    with tempfile.TemporaryDirectory(prefix="vdimport-ova-") as tmp:
        ovf = Path(tmp) / "appliance.ovf"
        ovf.write_text(f'<?xml version="1.0"?><Envelope><References><File ovf:href="{disk.name}"/></References></Envelope>\n')
        with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
            tar.add(ovf, arcname=ovf.name)
            for item in [disk, *(extra_disks or [])]:
                tar.add(item, arcname=item.name)
    return out


PRODUCERS = ("ovftool", "virtualbox")


def make_producer_ova(raws: list[Path], out: Path, producer: str = "ovftool") -> Path:
    """``raws`` exported as an OVA the way ``producer`` (ovftool or virtualbox) writes one, each disk
    in that producer's own streamOptimized layout (``ovapack`` has the options)."""
    from . import ovapack

    if producer == "ovftool":
        return ovapack.ovftool_ova(raws, out)
    if producer == "virtualbox":
        if len(raws) != 1:
            raise ValueError("the VirtualBox packer writes one disk")
        return ovapack.virtualbox_ova(raws[0], out)
    raise ValueError(f"unknown OVA producer {producer}")


def sample_files(seed: int = 0, size: int = 4 * MIB) -> dict[str, bytes]:
    """Some files with incompressible content, so the image has real data to move."""
    return {
        "etc/hostname": b"vdimport-sample\n",
        "home/user/notes.txt": b"migrated by vdimport\n" * 100,
        "var/data/random.bin": os.urandom(size) if seed == 0 else _seeded(seed, size),
    }


def _seeded(seed: int, size: int) -> bytes:
    import random

    return random.Random(seed).randbytes(size)  # noqa: S311 - reproducible test data, not secrets


def raw_bytes(image: Path, fmt_hint: str | None = None) -> bytes:
    """What ``qemu-img convert -O raw`` makes of ``image``: the bytes a volume must hold."""
    with tempfile.TemporaryDirectory(prefix="vdimport-raw-") as tmp:
        out = Path(tmp) / "out.raw"
        cmd = ["qemu-img", "convert"]
        if fmt_hint:
            cmd += ["-f", fmt_hint]
        _run(*cmd, "-O", "raw", str(image), str(out))
        return out.read_bytes()
