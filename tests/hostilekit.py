"""Hostile and broken disk images, shared by tests/worker (step runner) and tests/security (whole pipeline).

The dangerous images make qemu-img read a file of the machine it runs on: a qcow2 backing
file (absolute, relative, ``json:`` or ``http:``), a qcow2 external data file, VMDK extents
naming other files. Their target is :attr:`Host.marker_file`, a host file filled with a random
marker: the emulator's worker VM runs on this machine, so a missed check would copy the marker
onto a volume, which :func:`file_contains` finds (only a volume's data extents are read).
Each builder is ``build(host, out) -> Path`` (the file to upload, usually ``out``).
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vdimport_local.diskimages import convert, make_ova

MIB = 1 << 20
MARKER_SIZE = MIB
WORKER_IMAGE_DIR_DEPTH = 4  # the worker keeps the download at /var/tmp/vdimport/RUN/image

Builder = Callable[["Host", Path], Path]


@dataclass(frozen=True)
class Host:
    """Files of the host the hostile images point at, and a small real disk to damage."""

    marker: bytes  # random bytes that must never appear on a volume
    marker_file: Path  # a host file holding them
    disk: Path  # a small GPT disk (ext4 with files) as raw


def make_host(where: Path, disk: Path) -> Host:
    """A fresh random marker in ``where/host-secret.raw`` (1 MiB of it)."""
    marker = b"VDIMPORT-HOST-SECRET-" + os.urandom(32).hex().encode()
    marker_file = where / "host-secret.raw"
    marker_file.write_bytes(marker * (MARKER_SIZE // len(marker)) + b"\0" * (MARKER_SIZE % len(marker)))
    return Host(marker, marker_file, disk)


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


# --- backing files and data files -----------------------------------------------------------
def qcow2_backing(host: Host, out: Path) -> Path:
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(host.marker_file), "-F", "raw", str(out))
    return out


def qcow2_backing_named(backing: Callable[[Host], str]) -> Builder:
    """A qcow2 whose backing file is ``backing(host)``, written without opening it (``-u``)."""

    def build(host: Host, out: Path) -> Path:
        qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", backing(host), "-F", "raw", str(out), str(MARKER_SIZE))
        return out

    return build


def relative_backing(host: Host) -> str:
    """The marker file relative to where the worker keeps the downloaded image."""
    return "/".join([".."] * WORKER_IMAGE_DIR_DEPTH) + str(host.marker_file)


def json_backing(host: Host) -> str:
    return f'json:{{"driver": "raw", "file": {{"driver": "file", "filename": "{host.marker_file}"}}}}'


def http_backing(host: Host) -> str:
    return f"http://127.0.0.1:9/{host.marker_file.name}"


def qcow2_data_file(host: Host, out: Path) -> Path:
    data = out.with_name(out.name + ".data")
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={data}", str(out), str(MARKER_SIZE))
    data.write_bytes(host.marker_file.read_bytes())  # the image's "disk" is now a host file full of the marker
    return out


def qcow2_backing_with_vhd_footer(host: Host, out: Path) -> Path:
    """A qcow2 with a backing file that ends in a fixed VHD's footer: it looks like a fixed VHD (or raw) too."""
    qcow2_backing(host, out.with_name("inner-" + out.name))
    data = out.with_name("inner-" + out.name).read_bytes()
    data += b"\0" * (-len(data) % 512)
    out.write_bytes(data + vhd_fixed_footer(len(data)))
    return out


def vhd_fixed_footer(size: int) -> bytes:
    """A fixed VHD's 512-byte footer describing ``size`` bytes of disk before it."""
    footer = bytearray(512)
    footer[0:8] = b"conectix"
    struct.pack_into(">II", footer, 8, 2, 0x00010000)  # features, version
    struct.pack_into(">Q", footer, 16, 0xFFFFFFFFFFFFFFFF)  # data offset: none (fixed)
    footer[28:32] = b"win "
    struct.pack_into(">QQ", footer, 40, size, size)  # original and current size
    struct.pack_into(">HBB", footer, 56, 65535, 16, 255)
    struct.pack_into(">I", footer, 60, 2)  # fixed
    struct.pack_into(">I", footer, 64, ~sum(footer) & 0xFFFFFFFF)
    return bytes(footer)


# --- VMDK descriptors ---------------------------------------------------------------------------
def vmdk_descriptor(kind: str = "FLAT", create_type: str = "monolithicFlat") -> Builder:
    """A VMDK descriptor file (text) whose only extent is the host file."""

    def build(host: Host, out: Path) -> Path:
        out.write_text(
            f'# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="{create_type}"\n\n'
            f'RW {MARKER_SIZE // 512} {kind} "{host.marker_file}" 0\n\nddb.virtualHWVersion = "4"\nddb.adapterType = "ide"\n'
        )
        return out

    return build


vmdk_flat_descriptor = vmdk_descriptor()


def vmdk_sparse_with_extent(kind: str = "FLAT") -> Builder:
    """A real monolithicSparse VMDK whose embedded descriptor gained an extent of ``kind`` on a host path."""

    def build(host: Host, out: Path) -> Path:
        qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicSparse", str(out), str(MARKER_SIZE))
        data = bytearray(out.read_bytes())
        desc_sector, desc_sectors = struct.unpack_from("<QQ", data, 28)  # the descriptor's place in the sparse header
        start, end = desc_sector * 512, (desc_sector + desc_sectors) * 512
        own = f'RW {MARKER_SIZE // 512} SPARSE "{out.name}"'.encode()
        extra = f'\nRW {MARKER_SIZE // 512} {kind} "{host.marker_file}" 0'.encode()
        region = bytes(data[start:end]).replace(own, own + extra, 1)
        assert own in data and not region[end - start :].strip(b"\0"), "test setup: the descriptor has no room"
        data[start:end] = region[: end - start]
        out.write_bytes(bytes(data))
        return out

    return build


vmdk_sparse_with_flat_extent = vmdk_sparse_with_extent()


def _sparse_vmdk_descriptor(out: Path, change: Callable[[str], str], header: Callable[[bytearray], None] | None = None) -> Path:
    """A real monolithicSparse VMDK with its embedded descriptor text changed by ``change``."""
    qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicSparse", str(out), str(MARKER_SIZE))
    data = bytearray(out.read_bytes())
    desc_sector, desc_sectors = struct.unpack_from("<QQ", data, 28)
    start, end = desc_sector * 512, (desc_sector + desc_sectors) * 512
    text = change(bytes(data[start:end]).split(b"\0", 1)[0].decode()).encode()
    assert len(text) < end - start, "test setup: the descriptor has no room"
    data[start:end] = text + b"\0" * (end - start - len(text))
    if header:
        header(data)
    out.write_bytes(bytes(data))
    return out


def vmdk_parent_hint(host: Host, out: Path) -> Path:
    """A sparse VMDK naming the host file as its parent: qemu would read it as the backing file."""
    return _sparse_vmdk_descriptor(
        out, lambda d: d.replace("parentCID=ffffffff", f'parentCID=ffffffff\nparentFileNameHint="{host.marker_file}"')
    )


def vmdk_capacity_zero(host: Host, out: Path) -> Path:
    """A sparse header of capacity 0: qemu opens its embedded descriptor as a descriptor file,
    whose FLAT extent is the host file (the class of CVE-2024-32498)."""

    def flat(text: str) -> str:
        text = re.sub(r'createType="[^"]*"', 'createType="monolithicFlat"', text)
        return re.sub(r"RW \d+ SPARSE \"[^\"]*\"", f'RW {MARKER_SIZE // 512} FLAT "{host.marker_file}" 0', text)

    return _sparse_vmdk_descriptor(out, flat, lambda data: struct.pack_into("<Q", data, 12, 0))


def vmdk_create_type_case(host: Host, out: Path) -> Path:
    """Two createType lines that a case-insensitive reader and qemu's strstr read differently."""
    return _sparse_vmdk_descriptor(
        out, lambda d: d.replace('createType="monolithicSparse"', 'CreateType="monolithicFlat"\ncreateType="monolithicSparse"')
    )


def luks_qcow2(out: Path) -> Path:
    """An 8 MiB LUKS-encrypted qcow2. qemu-img times its PBKDF on the CPU and now and then fails
    with "Unable to get accurate CPU usage" on a busy machine: a few tries."""
    cmd = ["qemu-img", "create", "-q", "--object", "secret,id=sec0,data=vdimport", "-f", "qcow2"]
    cmd += ["-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=200", str(out), "8M"]
    for _ in range(5):
        if subprocess.run(cmd, capture_output=True).returncode == 0:
            return out
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def qcow2_luks(host: Host, out: Path) -> Path:
    return luks_qcow2(out)


# --- sizes ----------------------------------------------------------------------------------------
def qcow2_huge(host: Host, out: Path) -> Path:
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", str(out), "1P")
    return out


def qcow2_compressed_bomb(host: Host, out: Path) -> Path:
    """A ~1 MB qcow2 of compressed clusters (64 MiB of one repeated block) claiming 40 TiB."""
    pattern = out.with_name("pattern.raw")
    pattern.write_bytes((b"BOMB" * 1024) * (16 * 1024))
    qemu_img("convert", "-c", "-f", "raw", "-O", "qcow2", str(pattern), str(out))
    qemu_img("resize", "-q", str(out), "40T")
    pattern.unlink()
    return out


def vhd_understated_size(host: Host, out: Path) -> Path:
    """A dynamic VHD whose footer says 1 MiB while its CHS geometry (which qemu-img uses for
    images made by "qemu") says 58 GiB: an image that grows past the volume planned for it."""
    small = out.with_name("small-" + out.name)
    qemu_img("create", "-q", "-f", "vpc", "-o", "subformat=dynamic", str(small), "1M")
    data = small.read_bytes()
    footer, header = bytearray(data[:512]), bytearray(data[512:1536])
    assert footer[28:32] == b"qemu", "test setup: qemu-img no longer marks its VHDs as made by qemu"
    cylinders, heads, sectors = 30000, 16, 255
    entries = -(-cylinders * heads * sectors * 512 // (2 * MIB))  # 2 MiB blocks for the whole CHS size
    struct.pack_into(">HBB", footer, 56, cylinders, heads, sectors)
    struct.pack_into(">I", footer, 64, 0)
    struct.pack_into(">I", footer, 64, ~sum(footer) & 0xFFFFFFFF)
    struct.pack_into(">I", header, 28, entries)  # max table entries
    struct.pack_into(">I", header, 36, 0)
    struct.pack_into(">I", header, 36, ~sum(header) & 0xFFFFFFFF)
    table = b"\xff" * (entries * 4)
    out.write_bytes(bytes(footer) + bytes(header) + table + b"\xff" * (-len(table) % 512) + bytes(footer))
    small.unlink()
    return out


# --- plain, damaged, not images -------------------------------------------------------------------
def plain_qcow2(host: Host, out: Path) -> Path:
    return convert(host.disk, "qcow2", out)


def truncated(fmt: str) -> Builder:
    """The small disk in ``fmt``, cut to 60% of its length (as an interrupted upload leaves it)."""

    def build(host: Host, out: Path) -> Path:
        whole = convert(host.disk, fmt, out.with_name("whole-" + out.name))
        data = whole.read_bytes()
        out.write_bytes(data[: len(data) * 6 // 10])
        return out

    return build


def random_bytes(host: Host, out: Path) -> Path:
    out.write_bytes(os.urandom(3 * MIB))
    return out


def qcow2_magic_then_random(host: Host, out: Path) -> Path:
    out.write_bytes(b"QFI\xfb" + os.urandom(MIB))
    return out


def text_file(host: Host, out: Path) -> Path:
    out.write_text("This is not a disk image.\n" * 5000)
    return out


def empty(host: Host, out: Path) -> Path:
    out.write_bytes(b"")
    return out


# --- OVAs ---------------------------------------------------------------------------------------
def ova_of(out: Path, members: list[tuple[Path, str]]) -> Path:
    """A tar with an OVF descriptor first and ``members`` as (file, member name), names taken as given."""
    ovf = out.with_name("appliance.ovf")
    ovf.write_text('<?xml version="1.0"?><Envelope/>\n')
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(ovf, arcname=ovf.name)
        for path, name in members:
            tar.add(path, arcname=name)
    return out


def ova_two_disks(host: Host, out: Path) -> Path:
    one = convert(host.disk, "vmdk-stream", out.with_name("disk1.vmdk"))
    two = convert(host.disk, "vmdk-stream", out.with_name("disk2.vmdk"))
    return make_ova(one, out, extra_disks=[two])


def ova_too_many_disks(host: Host, out: Path) -> Path:
    """An OVA of 17 disks: one more than one import makes volumes for (imageformat.MAX_OVA_DISKS)."""
    disk = convert(host.disk, "vmdk-stream", out.with_name("disk.vmdk"))
    return ova_of(out, [(disk, f"disk{n}.vmdk") for n in range(1, 18)])


def ova_parent_member(host: Host, out: Path) -> Path:
    disk = convert(host.disk, "vmdk-stream", out.with_name("disk1.vmdk"))
    return ova_of(out, [(disk, "../../disk1.vmdk")])


def ova_holding(build: Builder, member: str) -> Builder:
    """An OVA whose one disk member ``member`` is what ``build`` makes."""

    def wrap(host: Host, out: Path) -> Path:
        return ova_of(out, [(build(host, out.with_name("member-" + member.replace("/", "_"))), member)])

    return wrap


ova_backing_qcow2 = ova_holding(qcow2_backing, "disk1.qcow2")


def ova_symlink_member(host: Host, out: Path) -> Path:
    """An OVA whose disk member is a symbolic link to the host's marker file."""
    ovf = out.with_name("appliance.ovf")
    ovf.write_text('<?xml version="1.0"?><Envelope/>\n')
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(ovf, arcname=ovf.name)
        link = tarfile.TarInfo("disk1.vmdk")
        link.type, link.linkname = tarfile.SYMTYPE, str(host.marker_file)
        tar.addfile(link)
    return out


def _ova_with_manifest(host: Host, out: Path, altered: str) -> Path:
    """An ovftool-style OVA (.ovf, .mf, disk) whose manifest digest of ``altered`` is wrong."""
    disk = convert(host.disk, "vmdk-stream", out.with_name("vm-disk1.vmdk"))
    ovf, mf = out.with_name("vm.ovf"), out.with_name("vm.mf")
    ovf.write_text('<?xml version="1.0"?><Envelope/>\n')
    digests = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in (ovf, disk)}
    digests[altered] = "0" * 64
    mf.write_text("".join(f"SHA256({name})= {digest}\n" for name, digest in digests.items()))
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        for path in (ovf, mf, disk):
            tar.add(path, arcname=path.name)
    return out


def ova_manifest_mismatch(host: Host, out: Path) -> Path:
    """The descriptor was altered after export: the pod hashes it and refuses."""
    return _ova_with_manifest(host, out, "vm.ovf")


def ova_disk_digest_mismatch(host: Host, out: Path) -> Path:
    """The disk was altered after export: only the worker, having downloaded it, can tell."""
    return _ova_with_manifest(host, out, "vm-disk1.vmdk")


def file_contains(path: Path, needle: bytes, chunk: int = 8 << 20) -> bool:
    """Whether ``needle`` occurs in the file; only its data extents are read (volumes are sparse)."""
    overlap = max(len(needle) - 1, 0)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        position = 0
        while position < size:
            try:
                start = os.lseek(f.fileno(), position, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                return False
            end = os.lseek(f.fileno(), start, os.SEEK_HOLE)
            f.seek(start)
            tail = b""
            while start < end:
                block = f.read(min(chunk, end - start))
                if not block:
                    break
                if needle in tail + block:
                    return True
                tail = block[-overlap:] if overlap else b""
                start += len(block)
            position = end
    return False
