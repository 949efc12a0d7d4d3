"""Is an object a disk image? Decided from its first bytes (and its last 512), never from its name.

Only a decision to trigger an import: the step runner pins and verifies the real format later.
"""

from __future__ import annotations

from dataclasses import dataclass

HEAD_BYTES = 4096  # covers every signature below (the furthest: GPT header at 512, tar magic at 257)
TAIL_BYTES = 512  # a VHD footer (fixed VHDs have it only at the end)

VDI_SIGNATURE = bytes.fromhex("7f10dabe")  # 0xbeda107f, little-endian, at 0x40


@dataclass(frozen=True)
class Detection:
    image: bool
    format: str | None
    reason: str


def needs_tail(head: bytes, size: int) -> bool:
    """Whether the last bytes are needed to decide (no signature at the start, big enough for a VHD footer)."""
    return detect(head, None, size).format in (None, "raw") and size >= TAIL_BYTES


def detect(head: bytes, tail: bytes | None, size: int) -> Detection:
    """``head``: the object's first bytes; ``tail``: its last 512 (or None if not read); ``size``: its length."""
    if size == 0:
        return Detection(False, None, "the object is empty")
    if head.startswith(b"QFI\xfb"):
        return Detection(True, "qcow2", "qcow2 magic 'QFI\\xfb' at offset 0")
    if head.startswith(b"KDMV"):
        return Detection(True, "vmdk", "VMDK sparse extent magic 'KDMV' at offset 0")
    if head.startswith(b"# Disk DescriptorFile"):
        return Detection(False, None, "a VMDK descriptor file: it only points at extent files, it holds no disk data")
    if head.startswith(b"vhdxfile"):
        return Detection(True, "vhdx", "VHDX signature 'vhdxfile' at offset 0")
    if head[0x40:0x44] == VDI_SIGNATURE:
        return Detection(True, "vdi", "VDI signature 0xbeda107f at offset 0x40")
    if head.startswith(b"conectix"):
        return Detection(True, "vhd", "VHD footer copy 'conectix' at offset 0 (dynamic VHD)")
    if head[257:262] == b"ustar":
        return Detection(True, "ova", "tar archive ('ustar' at offset 257): an OVA")
    if tail is not None and len(tail) >= TAIL_BYTES and tail[-TAIL_BYTES:].startswith(b"conectix"):
        return Detection(True, "vhd", "VHD footer 'conectix' in the last 512 bytes (fixed VHD)")
    if head[512:520] == b"EFI PART":
        return Detection(True, "raw", "GPT header 'EFI PART' at offset 512: a raw disk")
    if head[510:512] == b"\x55\xaa":
        return Detection(True, "raw", "MBR boot signature 0x55AA at offset 510: a raw disk")
    if len(head) < 512 and size < 512:
        return Detection(False, None, f"only {size} bytes, too small for any disk image")
    return Detection(False, None, "no disk image signature (qcow2, vmdk, vhd, vhdx, vdi, ova, MBR/GPT raw) in its header")
