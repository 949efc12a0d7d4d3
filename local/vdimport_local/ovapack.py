"""OVA packages laid out the way the main producers export them, not just "a tar with a disk".

DMTF *Open Virtualization Format Specification* (DSP0243 1.1/2.1) §5.3 defines the single-file
form: a tar (USTAR, POSIX 1003.1) whose first member is the ``.ovf`` descriptor, then the
optional ``.mf`` manifest (and ``.cert``), then the files in ``References`` order; the manifest
and certificate may instead come last. The producers differ inside those rules:

* **ovftool / vSphere "Export OVF Template"** (``ovftool_ova``): ``<name>.ovf``, ``<name>.mf``,
  ``<name>-disk1.vmdk`` ... (streamOptimized in VMware's layout, ``vmdkstream.py``), optionally
  ``<name>.nvram``; an OVF 1.0 envelope with the ``vmw`` namespace, ``ovf:size`` on every
  ``File``; manifest lines ``SHA256(<file>)= <hex>`` (ovftool 4.2+ defaults to SHA-256,
  ``--shaAlgorithm=SHA1`` gives the older ``SHA1(...)= ``), the form vSphere itself writes.
* **VirtualBox** (``virtualbox_ova``, from ``Appliance::i_writeFSOVA``/``i_writeFSImpl`` and
  ``i_buildXML`` in VirtualBox's ``ApplianceImplExport.cpp``): ``<name>.ovf``,
  ``<name>-disk001.vmdk`` (VirtualBox's stream layout, ``vboxvmdk.py``) and the manifest
  *last*, since its digests are computed while the disks stream out; lines in IPRT's
  ``RTManifestWriteStandard`` form ``SHA1 (<file>) = <hex>`` (SHA-256 for OVF 2.0), in the
  order IPRT's string space enumerates them (ascending sdbm hash of the name); no
  ``ovf:size`` (the exporter does not know it when it writes the descriptor).
* **Large OVAs** (``large_ova``): a disk member of 8 GiB or more does not fit USTAR's 11
  octal digits of size, so the tar is pax (a ``size`` record; a long name also gives a
  ``path`` record) or GNU (base-256 size, ``././@LongLink`` name). The disk member is
  written sparse, so the OVA costs little space.

Tar headers (mode, owner, mtime) follow what each producer is known or assumed to write;
``OVFTOOL_OWNER`` is an assumption (not documented anywhere we could find).
"""

from __future__ import annotations

import errno
import hashlib
import os
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

from .vboxvmdk import write_stream_optimized_vbox
from .vmdkstream import write_stream_optimized

BLOCK = 512
RECORD = 20 * BLOCK  # tar's default blocking factor: archives end on a 10 KiB record
STREAM_OPTIMIZED = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
OVF10 = "http://schemas.dmtf.org/ovf/envelope/1"
OVF20 = "http://schemas.dmtf.org/ovf/envelope/2"
RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
SASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData.xsd"
EPASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData.xsd"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
OVFTOOL_BUILD = "build-21452615"  # assumed: ovftool 4.6.0's build number, as it stamps the descriptor
VBOX_VERSION = (7, 0, 14, 161095)  # major, minor, build, revision of the VirtualBox we imitate

TarFormat = Literal[0, 1, 2]  # tarfile.USTAR_FORMAT, GNU_FORMAT, PAX_FORMAT


@dataclass(frozen=True)
class TarOwner:
    """What a producer puts in each tar header besides name and size."""

    uid: int
    gid: int
    uname: str
    gname: str
    mode: int


# Assumed (ovftool's headers are documented nowhere we found): ustar, 0644, uid/gid 64, owner "someone"
# (the placeholder owner older VirtualBox OVAs show in ``tar tv``).
OVFTOOL_OWNER = TarOwner(64, 64, "someone", "someone", 0o644)


def vbox_owner(ovf_version: str) -> TarOwner:
    """``i_writeFSOVA``: uid VBOX_VERSION_MAJOR "vboxovf10|20", gid VBOX_VERSION_MINOR "vbox_vX.Y.ZrREV",
    mode ANDed with 0660 and ORed with 0440 (a 0644 source gives 0640)."""
    major, minor, build, revision = VBOX_VERSION
    return TarOwner(major, minor, f"vboxovf{ovf_version.replace('.', '')}", f"vbox_v{major}.{minor}.{build}r{revision}", 0o640)


@dataclass(frozen=True)
class Member:
    name: str
    source: Path | bytes

    @property
    def size(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else self.source.stat().st_size


def _data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(start, end) of the data in a file, its holes left out (``SEEK_DATA``/``SEEK_HOLE``)."""
    extents, position = [], 0
    while position < size:
        try:
            start = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break
            if exc.errno == errno.EINVAL:  # the file system cannot tell: all of it is data
                return [(position, size)]
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        extents.append((start, end))
        position = end
    return extents


def _copy_sparse(src: Path, dst: int, at: int) -> None:
    """Copy ``src`` to ``dst`` at offset ``at``, leaving ``src``'s holes as holes."""
    with src.open("rb") as f:
        for start, end in _data_extents(f.fileno(), src.stat().st_size):
            while start < end:
                chunk = os.pread(f.fileno(), min(end - start, 8 << 20), start)
                os.pwrite(dst, chunk, at + start)
                start += len(chunk)


def write_tar(out: Path, members: list[Member], fmt: TarFormat, owner: TarOwner, mtime: int | None = None) -> Path:
    """A tar of ``members`` in order, headers from Python's ``tarfile`` in ``fmt`` (USTAR, PAX or GNU),
    data written sparse; it ends with two zero blocks and is padded to a whole record."""
    stamp = int(time.time()) if mtime is None else mtime
    with out.open("wb") as f:
        position = 0
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.size, info.mtime, info.mode = member.size, stamp, owner.mode
            info.uid, info.gid, info.uname, info.gname = owner.uid, owner.gid, owner.uname, owner.gname
            header = info.tobuf(fmt, "utf-8", "surrogateescape")  # raises if fmt cannot hold the member
            os.pwrite(f.fileno(), header, position)
            position += len(header)
            if isinstance(member.source, bytes):
                os.pwrite(f.fileno(), member.source, position)
            else:
                _copy_sparse(member.source, f.fileno(), position)
            position += -(-member.size // BLOCK) * BLOCK
        position += 2 * BLOCK  # end of archive
        os.ftruncate(f.fileno(), -(-position // RECORD) * RECORD)
    return out


def _file_digest(member: Member, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    if isinstance(member.source, bytes):
        digest.update(member.source)
    else:
        with member.source.open("rb") as f:
            while chunk := f.read(8 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def ovftool_manifest(members: list[Member], algorithm: str = "sha256") -> bytes:
    """ovftool's and vSphere's manifest: ``SHA256(<file>)= <hex>`` per file, in package order."""
    return "".join(f"{algorithm.upper()}({m.name})= {_file_digest(m, algorithm)}\n" for m in members).encode()


def sdbm(name: str) -> int:
    """IPRT's string-space hash (``RTStrSpaceInsert``), which orders a VirtualBox manifest's lines."""
    value = 0
    for byte in name.encode():
        value = (byte + (value << 6) + (value << 16) - value) & 0xFFFFFFFF
    return value


def vbox_manifest(members: list[Member], algorithm: str) -> bytes:
    """``RTManifestWriteStandard``: ``SHA1 (<file>) = <hex>`` lines, ascending sdbm hash of the name."""
    ordered = sorted(members, key=lambda m: sdbm(m.name))
    return "".join(f"{algorithm.upper()} ({m.name}) = {_file_digest(m, algorithm)}\n" for m in ordered).encode()


def capacity_units(size: int) -> tuple[int, str | None]:
    """DSP0243 DiskSection: ``ovf:capacity`` in ``ovf:capacityAllocationUnits`` (bytes when absent);
    ovftool uses the largest of GiB and MiB that divides the size (assumed)."""
    for shift in (30, 20):
        if size % (1 << shift) == 0:
            return size >> shift, f"byte * 2^{shift}"
    return size, None


def _ovftool_envelope(name: str, disks: list[tuple[str, int, int]], nvram: tuple[str, int] | None, disk_format: str) -> bytes:
    """An OVF 1.0 descriptor as ovftool 4.x writes it: References with sizes, DiskSection, a VirtualSystem
    whose disks hang off one SCSI controller, the NVRAM file referenced from ``vmw:ExtraConfig``."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    files = [(href, size) for href, size, _ in disks] + ([nvram] if nvram else [])
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f"<!--Generated by VMware ovftool 4.6.0 ({OVFTOOL_BUILD}), UTC time: {stamp}-->",
        f'<Envelope vmw:buildId="{OVFTOOL_BUILD}" xmlns="{OVF10}" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common"'
        f' xmlns:ovf="{OVF10}" xmlns:rasd="{RASD}" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="{VSSD}" xmlns:xsi="{XSI}">',
        "  <References>",
        *(f'    <File ovf:href={quoteattr(href)} ovf:id="file{i}" ovf:size="{size}"/>' for i, (href, size) in enumerate(files, 1)),
        "  </References>",
        "  <DiskSection>",
        "    <Info>Virtual disk information</Info>",
    ]
    for i, (_, _, capacity) in enumerate(disks, 1):
        amount, units = capacity_units(capacity)
        unit_attr = f' ovf:capacityAllocationUnits="{units}"' if units else ""
        lines.append(
            f'    <Disk ovf:capacity="{amount}"{unit_attr} ovf:diskId="vmdisk{i}" ovf:fileRef="file{i}" ovf:format="{disk_format}"/>'
        )
    lines += [
        "  </DiskSection>",
        "  <NetworkSection>",
        "    <Info>The list of logical networks</Info>",
        '    <Network ovf:name="VM Network">',
        "      <Description>The VM Network network</Description>",
        "    </Network>",
        "  </NetworkSection>",
        f"  <VirtualSystem ovf:id={quoteattr(name)}>",
        "    <Info>A virtual machine</Info>",
        f"    <Name>{escape(name)}</Name>",
        '    <OperatingSystemSection ovf:id="101" vmw:osType="otherLinux64Guest">',
        "      <Info>The kind of installed guest operating system</Info>",
        "    </OperatingSystemSection>",
        "    <VirtualHardwareSection>",
        "      <Info>Virtual hardware requirements</Info>",
        "      <System>",
        "        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>",
        "        <vssd:InstanceID>0</vssd:InstanceID>",
        f"        <vssd:VirtualSystemIdentifier>{escape(name)}</vssd:VirtualSystemIdentifier>",
        "        <vssd:VirtualSystemType>vmx-19</vssd:VirtualSystemType>",
        "      </System>",
        *_rasd_item(1, "hertz * 10^6", "Number of Virtual CPUs", "2 virtual CPU(s)", 3, quantity=2),
        *_rasd_item(2, "byte * 2^20", "Memory Size", "2048MB of memory", 4, quantity=2048),
        *_rasd_item(3, None, "SCSI Controller", "SCSI Controller 0", 6, subtype="VirtualSCSI"),
    ]
    for i in range(1, len(disks) + 1):
        lines += _rasd_item(3 + i, None, "Hard disk", f"Hard disk {i}", 17, address=i - 1, host=f"ovf:/disk/vmdisk{i}", parent=3)
    if nvram:
        lines += [
            '      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>',
            f'      <vmw:ExtraConfig ovf:required="false" vmw:key="nvram" vmw:value="ovf:/file/file{len(disks) + 1}"/>',
        ]
    lines += ["    </VirtualHardwareSection>", "  </VirtualSystem>", "</Envelope>"]
    return ("\n".join(lines) + "\n").encode()


def _rasd_item(
    instance: int,
    units: str | None,
    description: str,
    element: str,
    kind: int,
    quantity: int | None = None,
    subtype: str | None = None,
    address: int | None = None,
    host: str | None = None,
    parent: int | None = None,
) -> list[str]:
    """A hardware ``Item``; its ``rasd:`` children in the schema's (alphabetical) order."""
    fields = [
        ("AddressOnParent", address),
        ("AllocationUnits", units),
        ("Description", description),
        ("ElementName", element),
        ("HostResource", host),
        ("InstanceID", instance),
        ("Parent", parent),
        ("ResourceSubType", subtype),
        ("ResourceType", kind),
        ("VirtualQuantity", quantity),
    ]
    body = [f"        <rasd:{key}>{escape(str(value))}</rasd:{key}>" for key, value in fields if value is not None]
    return ["      <Item>", *body, "      </Item>"]


def ovftool_ova(
    raws: list[Path],
    out: Path,
    name: str | None = None,
    algorithm: str = "sha256",
    nvram: bytes | None = None,
    fmt: TarFormat = tarfile.USTAR_FORMAT,
) -> Path:
    """``raws`` exported as ovftool does: one VMware-layout streamOptimized ``<name>-diskN.vmdk`` each."""
    name = name or out.stem
    with tempfile.TemporaryDirectory(prefix="vdimport-ovftool-", dir=out.parent) as tmp:
        disks = [Member(f"{name}-disk{i}.vmdk", write_stream_optimized(raw, Path(tmp) / f"disk{i}.vmdk")) for i, raw in enumerate(raws, 1)]
        extra = [Member(f"{name}.nvram", nvram)] if nvram is not None else []
        ovf = Member(
            f"{name}.ovf",
            _ovftool_envelope(
                name,
                [(d.name, d.size, raw.stat().st_size) for d, raw in zip(disks, raws, strict=True)],
                (extra[0].name, extra[0].size) if extra else None,
                STREAM_OPTIMIZED,
            ),
        )
        manifest = Member(f"{name}.mf", ovftool_manifest([ovf, *disks, *extra], algorithm))
        return write_tar(out, [ovf, manifest, *disks, *extra], fmt, OVFTOOL_OWNER)


def _vbox_envelope(name: str, disk: str, capacity: int, ovf_version: str) -> bytes:
    """``Appliance::i_buildXML`` for one machine with one SATA disk (the ``vbox:Machine`` section,
    VirtualBox's own settings, is left out): no ``ovf:size`` on the ``File``, capacity in bytes."""
    namespace = OVF20 if ovf_version == "2.0" else OVF10
    extra_ns = f' xmlns:epasd="{EPASD}" xmlns:sasd="{SASD}"' if ovf_version == "2.0" else ""
    if ovf_version == "2.0":  # OVF 2.0 puts disks in StorageItem with sasd: (CIM_StorageAllocationSettingData)
        disk_item = [
            "      <StorageItem>",
            "        <sasd:AddressOnParent>0</sasd:AddressOnParent>",
            "        <sasd:Caption>disk1</sasd:Caption>",
            "        <sasd:Description>Disk Image</sasd:Description>",
            "        <sasd:HostResource>/disk/vmdisk1</sasd:HostResource>",
            "        <sasd:InstanceID>4</sasd:InstanceID>",
            "        <sasd:Parent>3</sasd:Parent>",
            "        <sasd:ResourceType>17</sasd:ResourceType>",
            "      </StorageItem>",
        ]
    else:
        disk_item = _rasd_item(4, None, "Disk Image", "disk1", 17, address=0, host="/disk/vmdisk1", parent=3)
    lines = [
        '<?xml version="1.0"?>',
        f'<Envelope ovf:version="{ovf_version}" xml:lang="en-US" xmlns="{namespace}" xmlns:ovf="{namespace}" xmlns:rasd="{RASD}"'
        f' xmlns:vssd="{VSSD}" xmlns:xsi="{XSI}" xmlns:vbox="http://www.virtualbox.org/ovf/machine"{extra_ns}>',
        "  <References>",
        f'    <File ovf:id="file1" ovf:href={quoteattr(disk)}/>',
        "  </References>",
        "  <DiskSection>",
        "    <Info>List of the virtual disks used in the package</Info>",
        f'    <Disk ovf:capacity="{capacity}" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="{STREAM_OPTIMIZED}"'
        f' vbox:uuid="{uuid.uuid4()}"/>',
        "  </DiskSection>",
        "  <NetworkSection>",
        "    <Info>Logical networks used in the package</Info>",
        '    <Network ovf:name="NAT">',
        "      <Description>Logical network used by this appliance.</Description>",
        "    </Network>",
        "  </NetworkSection>",
        f"  <VirtualSystem ovf:id={quoteattr(name)}>",
        "    <Info>A virtual machine</Info>",
        '    <OperatingSystemSection ovf:id="101">',
        "      <Info>The kind of installed guest operating system</Info>",
        "      <Description>Linux_64</Description>",
        '      <vbox:OSType ovf:required="false">Linux_64</vbox:OSType>',
        "    </OperatingSystemSection>",
        "    <VirtualHardwareSection>",
        "      <Info>Virtual hardware requirements for a virtual machine</Info>",
        "      <System>",
        "        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>",
        "        <vssd:InstanceID>0</vssd:InstanceID>",
        f"        <vssd:VirtualSystemIdentifier>{escape(name)}</vssd:VirtualSystemIdentifier>",
        "        <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>",
        "      </System>",
        *_rasd_item(1, "hertz * 10^6", "Number of virtual CPUs", "1 virtual CPU", 3, quantity=1),
        *_rasd_item(2, "byte * 2^20", "Memory Size", "2048 MB of memory", 4, quantity=2048),
        *_rasd_item(3, None, "SATA Controller", "sataController0", 20, subtype="AHCI", address=0),
        *disk_item,
        "    </VirtualHardwareSection>",
        "  </VirtualSystem>",
        "</Envelope>",
    ]
    return ("\n".join(lines) + "\n").encode()


def virtualbox_ova(raw: Path, out: Path, name: str | None = None, ovf_version: str = "1.0") -> Path:
    """``raw`` exported as ``VBoxManage export --manifest`` does (``--ovf10`` by default, or ``--ovf20``)."""
    if ovf_version not in ("1.0", "2.0"):
        raise ValueError("VirtualBox writes OVF 1.0 or 2.0 (0.9 is legacy)")
    name = name or out.stem
    algorithm = "sha256" if ovf_version == "2.0" else "sha1"  # "As of OVF 2.0 we have to use SHA-256 in the manifest."
    with tempfile.TemporaryDirectory(prefix="vdimport-vbox-", dir=out.parent) as tmp:
        disk_name = f"{name}-disk001.vmdk"  # "%s-disk%.3d.vmdk"
        disk = Member(disk_name, write_stream_optimized_vbox(raw, Path(tmp) / "disk.vmdk", name=disk_name))
        ovf = Member(f"{name}.ovf", _vbox_envelope(name, disk_name, raw.stat().st_size, ovf_version))
        manifest = Member(f"{name}.mf", vbox_manifest([ovf, disk], algorithm))
        return write_tar(out, [ovf, disk, manifest], tarfile.USTAR_FORMAT, vbox_owner(ovf_version))


def large_ova(raw: Path, out: Path, fmt: TarFormat, name: str, manifest: bool = True) -> Path:
    """An ovftool-style OVA around a raw disk of 8 GiB or more, in pax or GNU tar (``name`` long enough,
    over 100 bytes, also exercises the pax ``path`` record or GNU's long-name member)."""
    if fmt not in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        raise ValueError("an 8 GiB member needs pax or GNU tar; USTAR's size field stops at 8 GiB - 1")
    disk = Member(f"{name}-disk1.img", raw)
    ovf = Member(f"{name}.ovf", _ovftool_envelope(name, [(disk.name, disk.size, disk.size)], None, "raw"))
    members = [ovf, Member(f"{name}.mf", ovftool_manifest([ovf, disk]))] if manifest else [ovf]
    return write_tar(out, [*members, disk], fmt, OVFTOOL_OWNER)
