"""The members of an OVA, read from its tar headers through ranged reads, and its manifest.

An OVA is a tar archive (OVF 2.x, DSP0243 §5.3: "ustar" interchange format, as POSIX
1003.1 defines it) holding the OVF descriptor, an optional manifest (``.mf``) and
certificate, and the disks. The producers write more than plain ustar: GNU tar and
Python's ``tarfile`` write a *pax* extended header (typeflag ``x``) for a member of 8 GiB
or more (its ``size`` record) or with a long name (its ``path`` record), and GNU format
writes such sizes as base-256 numbers and long names as ``L`` members. All of them are read
here, so a large vSphere export is located correctly and the name checks see the name the
member really has. Links, devices, FIFOs, sparse members and names outside the archive are
refused: a disk must be plain bytes inside the archive.

The manifest (DSP0243 §5.1, ovftool and VirtualBox write it) lists ``SHA256(name)= hex``
(or ``SHA1``, ``SHA512``) for each file of the package; each listed digest is checked, the
small members here, the disks by the worker after its download (``Member.digest``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

ReadRange = Callable[[int, int], bytes]

BLOCK = 512
MAX_MEMBERS = 256
MAX_PAX_BYTES = 64 << 10  # a pax header holding more than path/size/times is not an OVA's
MAX_SMALL_MEMBER = 16 << 20  # .ovf, .mf, .cert, .nvram: hashed here; anything bigger is a disk
REGULAR = (b"0", b"\0", b"7")  # regular file; "7" (contiguous) is a regular file to every reader
HEADER_ONLY = {b"5": "a directory"}  # allowed, no data
REFUSED = {
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a character device",
    b"4": "a block device",
    b"6": "a FIFO",
    b"S": "a GNU sparse file",
    b"M": "a multi-volume continuation",
    b"V": "a volume label",
    b"K": "a GNU long link name",
}
DIGESTS = {"SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}
# ovftool writes "SHA256(f)= hex", VirtualBox (IPRT RTManifestWriteStandard) "SHA1 (f) = hex".
_MANIFEST_LINE = re.compile(r"(SHA1|SHA256|SHA512)\s*\((.+)\)\s*=\s*([0-9A-Fa-f]+)")


class OvaError(ValueError):
    """The archive cannot be an OVA we import; the message is the one-line cause."""


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # where its data starts in the object
    size: int
    digest: tuple[str, str] | None = None  # (hashlib algorithm, hex) from the manifest, for the worker


def is_tar(block: bytes) -> bool:
    """ustar (POSIX "ustar\\0" + "00") or GNU ("ustar  \\0") magic."""
    return len(block) >= BLOCK and block[257:262] == b"ustar"


def _number(field: bytes, what: str) -> int:
    """An octal tar number, or GNU base-256 (first byte 0x80; 0xff is negative)."""
    if field and field[0] == 0x80:
        return int.from_bytes(field[1:], "big")
    if field and field[0] & 0x80:
        raise OvaError(f"malformed ova: a tar header has a negative {what}")
    text = field.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    if not re.fullmatch(rb"[0-7]+", text):
        raise OvaError(f"malformed ova: a tar header's {what} is not a number")
    return int(text, 8)


def _checksum_ok(header: bytes) -> bool:
    stored = _number(header[148:156], "checksum")
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    signed = unsigned - 2 * sum(b for b in header[:148] + header[156:] if b >= 128)  # old tars summed signed chars
    return stored in (unsigned, signed)


def _text(field: bytes) -> str:
    try:
        return field.split(b"\0", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        raise OvaError("malformed ova: a member name is not UTF-8") from None


def _pax_records(data: bytes) -> dict[str, str]:
    """``"%d key=value\\n"`` records, the length counting the whole record (POSIX pax)."""
    records: dict[str, str] = {}
    at = 0
    while at < len(data):
        if data[at:] == b"\0" * (len(data) - at):
            break
        space = data.find(b" ", at)
        length_text = data[at:space] if space > at else b""
        if not length_text.isdigit():
            raise OvaError("malformed ova: a pax header record has no length")
        length = int(length_text)
        record = data[at : at + length]
        if length <= len(length_text) + 1 or len(record) != length or not record.endswith(b"\n") or b"=" not in record:
            raise OvaError("malformed ova: a pax header record is damaged")
        key, _, value = record[space - at + 1 : -1].partition(b"=")
        try:
            records[key.decode("utf-8")] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise OvaError("malformed ova: a pax header record is not UTF-8") from None
        at += length
    return records


def _pax_size(records: dict[str, str]) -> int | None:
    if "size" not in records:
        return None
    if not records["size"].isdigit():
        raise OvaError("malformed ova: a pax size record is not a number")
    return int(records["size"])


def _safe_name(name: str) -> str:
    if not name or name.startswith("/") or ".." in name.split("/") or "\\" in name:
        raise OvaError(f"unsafe ova: member name {name!r} points outside the archive")
    return name


def members(read: ReadRange, size: int) -> list[Member]:
    """The archive's regular files, in order, with their real names and sizes."""
    position = 0
    found: list[Member] = []
    pax: dict[str, str] = {}
    long_name: str | None = None
    for _ in range(MAX_MEMBERS * 3):  # each file may have a pax or long-name header before it
        if position + BLOCK > size:
            raise OvaError("malformed ova: the tar archive is truncated (no end-of-archive blocks)")
        header = read(position, BLOCK)
        if header == b"\0" * BLOCK:
            return found
        if not is_tar(header) or not _checksum_ok(header):
            raise OvaError(f"malformed ova: the tar header at byte {position} is damaged")
        kind = header[156:157]
        member_size = _number(header[124:136], "size")
        pax_size = _pax_size(pax) if kind in REGULAR else None
        member_size = member_size if pax_size is None else pax_size
        data_at = position + BLOCK
        if data_at + member_size > size:
            raise OvaError("malformed ova: a member runs past the end of the archive (truncated?)")
        if kind in (b"x", b"g"):
            if member_size > MAX_PAX_BYTES:
                raise OvaError("malformed ova: a pax header is larger than any OVA needs")
            records = _pax_records(read(data_at, member_size) if member_size else b"")
            if any(key.startswith("GNU.sparse") for key in records):
                raise OvaError("unsafe ova: a member is a GNU sparse file (its bytes are not stored in order)")
            if kind == b"g" and ("path" in records or "size" in records):
                raise OvaError("malformed ova: a global pax header sets a path or size for every member")
            if kind == b"x":
                pax = records
        elif kind == b"L":
            if member_size > 4096:
                raise OvaError("malformed ova: a GNU long name is longer than 4096 bytes")
            long_name = _text(read(data_at, member_size))
        elif kind in REFUSED:
            base = _text(header[:100])
            raise OvaError(f"unsafe ova: member {base!r} is {REFUSED[kind]} (only plain files are allowed in an OVA)")
        elif kind in REGULAR or kind in HEADER_ONLY:
            # Only POSIX ustar has a name prefix; GNU's "ustar  " header keeps times there.
            prefix = _text(header[345:500]) if header[257:263] == b"ustar\0" else ""
            base = _text(header[:100])
            name = pax.get("path") or long_name or (f"{prefix}/{base}" if prefix else base)
            name = _safe_name(name)
            if kind in REGULAR:
                found.append(Member(name, data_at, member_size))
                if len(found) > MAX_MEMBERS:
                    raise OvaError(f"ova: more than {MAX_MEMBERS} members")
            pax, long_name = {}, None
        else:
            raise OvaError(f"unsafe ova: member type {kind.decode('latin-1')!r} is not a plain file")
        position = data_at + (member_size + BLOCK - 1) // BLOCK * BLOCK
    raise OvaError(f"ova: more than {MAX_MEMBERS} members")


def parse_manifest(text: bytes) -> dict[str, tuple[str, str]]:
    """``{file name: (hashlib algorithm, lower-case hex)}`` from a ``.mf``."""
    try:
        lines = text.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise OvaError("malformed ova: the manifest (.mf) is not UTF-8 text") from None
    digests: dict[str, tuple[str, str]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        match = _MANIFEST_LINE.fullmatch(line.strip())
        if match is None:
            raise OvaError(f"malformed ova: manifest line {number} is not 'SHA256(file)= digest'")
        algorithm, name, digest = DIGESTS[match[1]], match[2], match[3].lower()
        if len(digest) != hashlib.new(algorithm).digest_size * 2:
            raise OvaError(f"malformed ova: the manifest's {match[1]} digest of {name!r} has the wrong length")
        if name in digests:
            raise OvaError(f"malformed ova: the manifest lists {name!r} twice")
        digests[name] = (algorithm, digest)
    return digests


def check_manifest(read: ReadRange, found: list[Member], disks: list[Member]) -> list[Member]:
    """Check the manifest, when there is one, against the members; the disks with their digests.

    Small members are hashed here; a disk would have to be read whole, so its digest goes
    to the worker, which checks it after the download (download.sh).
    """
    manifests = [m for m in found if m.name.lower().endswith(".mf")]
    if not manifests:
        return disks
    if len(manifests) > 1:
        raise OvaError("malformed ova: the archive holds more than one manifest (.mf)")
    manifest = manifests[0]
    if manifest.size > MAX_SMALL_MEMBER:
        raise OvaError("malformed ova: the manifest (.mf) is larger than any OVA needs")
    digests = parse_manifest(read(manifest.offset, manifest.size) if manifest.size else b"")
    by_name = {m.name: m for m in found}
    for name in digests:
        if name not in by_name:
            raise OvaError(f"malformed ova: the manifest lists {name!r}, which is not in the archive")
    disk_names = {d.name for d in disks}
    for member in found:
        if member.name not in digests or member.name in disk_names:
            continue
        if member.size > MAX_SMALL_MEMBER:
            raise OvaError(f"ova: member {member.name!r} is too large to check against the manifest")
        algorithm, expected = digests[member.name]
        actual = hashlib.new(algorithm, read(member.offset, member.size) if member.size else b"").hexdigest()
        if actual != expected:
            raise OvaError(f"the ova does not match its manifest: {member.name!r} has {algorithm} {actual}, the .mf says {expected}")
    checked = []
    for disk in disks:
        if disk.name not in digests:
            raise OvaError(f"malformed ova: the manifest (.mf) does not list the disk {disk.name!r}")
        checked.append(Member(disk.name, disk.offset, disk.size, digests[disk.name]))
    return checked
