"""OVAs whose disk member is 8 GiB or more, in pax and in GNU tar (issue 15), for ``make soak`` only.

USTAR's size field holds 11 octal digits, at most 8 GiB - 1, so an OVA with a bigger disk is
written either as pax (an extended header with a ``size`` record; the member's long name also
gives a ``path`` record) or as GNU tar (a base-256 size, the name in a ``././@LongLink``
member). ``ovapack.large_ova`` writes both around one sparse raw GPT disk of 8 GiB + 64 MiB
(one small ext4 partition), so the files take little real space; the checks:

- the archives are what they claim: Python's ``tarfile`` reads them, the pax records and the
  base-256 size are there, the member's bytes are the disk's, the manifest's digests are right;
- each OVA imports through all steps of the local pipeline: the volume holds exactly the disk
  (``qemu-img compare``, which skips holes), the report names the OVA and a clean ext4, and
  nothing but the volume is left.

Marked ``large``: skipped unless ``VDIMPORT_SOAK_LARGE=1`` (``make soak`` sets it). The
imports write real data: the emulator stores each upload in full, so expect to need about
20 GiB free under the pytest temporary directory.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from vdimport_local import ovapack
from vdimport_local.diskimages import Partition, build_disk, sample_files
from vdimport_local.emulator.client import EmulatorHandle

pytestmark = [pytest.mark.large, pytest.mark.timeout(3 * 3600)]
SIZE = (8 << 30) + (64 << 20)  # over what USTAR can hold
NAME = "vdimport-soak-large-appliance-exported-with-a-name-longer-than-the-hundred-bytes-of-a-ustar-name"
KINDS = {"pax": tarfile.PAX_FORMAT, "gnu": tarfile.GNU_FORMAT}


def importkit() -> ModuleType:
    """The step runner's helpers (tests/worker/importkit.py), which tests/soak does not have on its path."""
    worker = str(Path(__file__).resolve().parent.parent / "worker")
    if worker not in sys.path:
        sys.path.append(worker)
    import importkit as kit

    return kit


@pytest.fixture(scope="module")
def large_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("large")
    return build_disk(where / "large.raw", [Partition("ext4", 64, sample_files(seed=41, size=4 << 20))], table="gpt", min_size=SIZE)


@pytest.fixture(scope="module")
def large_ovas(large_disk: Path) -> dict[str, Path]:
    return {kind: ovapack.large_ova(large_disk, large_disk.parent / f"{kind}.ova", fmt, NAME) for kind, fmt in KINDS.items()}


def disk_member(tar: tarfile.TarFile) -> tarfile.TarInfo:
    return next(m for m in tar.getmembers() if m.name.endswith(".img"))


@pytest.mark.parametrize("kind", KINDS)
def test_large_ova_is_the_tar_it_claims(large_ovas: dict[str, Path], large_disk: Path, kind: str) -> None:
    """pax: ``path`` and ``size`` records and a zero ustar size; GNU: base-256 size and a long-name
    member; both: the disk's bytes at the member's offset, a right manifest, little space used."""
    ova = large_ovas[kind]
    assert ova.stat().st_blocks * 512 < 1 << 30, "the OVA was written sparse"
    with tarfile.open(ova) as tar:
        names = tar.getnames()
        assert names == [f"{NAME}.ovf", f"{NAME}.mf", f"{NAME}-disk1.img"]
        member = disk_member(tar)
        assert member.size == SIZE
        manifest_file = tar.extractfile(f"{NAME}.mf")
        ovf_file = tar.extractfile(f"{NAME}.ovf")
        assert manifest_file is not None and ovf_file is not None
        manifest, ovf = manifest_file.read().decode(), ovf_file.read()
    with ova.open("rb") as f:  # the member's own header, after its pax or long-name header
        f.seek(member.offset_data - 512)
        header = f.read(512)
    if kind == "pax":
        assert member.pax_headers.get("path") == member.name and member.pax_headers.get("size") == str(SIZE)
        assert header[124:136].strip(b"\0 ") in (b"", b"0" * 11), "the ustar size field defers to the pax record"
    else:
        assert header[124] & 0x80 and int.from_bytes(header[125:136], "big") == SIZE, "GNU base-256 size"
        assert header[156:157] == b"0"
    with ova.open("rb") as f, large_disk.open("rb") as raw:
        for at in (0, 1 << 20, SIZE - (1 << 20)):
            f.seek(member.offset_data + at)
            raw.seek(at)
            assert f.read(1 << 20) == raw.read(1 << 20), f"the member's bytes at {at} are not the disk's"
    lines = {}
    for line in manifest.splitlines():
        match = re.fullmatch(r"SHA256\((.+)\)= ([0-9a-f]{64})", line)
        assert match, f"manifest line {line!r} is not ovftool's"
        lines[match[1]] = match[2]
    assert lines[f"{NAME}.ovf"] == hashlib.sha256(ovf).hexdigest()
    digest = hashlib.sha256()
    with large_disk.open("rb") as raw:
        while chunk := raw.read(16 << 20):
            digest.update(chunk)
    assert lines[f"{NAME}-disk1.img"] == digest.hexdigest()


@pytest.mark.parametrize("kind", KINDS)
def test_large_ova_imports_exactly(emu: EmulatorHandle, large_ovas: dict[str, Path], large_disk: Path, kind: str) -> None:
    """User-visible: the 8 GiB disk inside a pax or GNU OVA becomes a volume holding exactly it."""
    kit = importkit()
    importer = kit.Importer(emu, kit.ensure_bucket(emu))
    ova = large_ovas[kind]

    outcome = importer.run(ova, f"large/{ova.name}", run_id=kit.new_run_id(f"large-ova-{kind}"))

    assert outcome.succeeded, f"{outcome.failed_step}: {outcome.error}"
    volume: dict[str, Any] = kit.assert_nothing_leaked(emu, outcome)  # no expected bytes: 8 GiB would not fit in memory
    path = kit.volume_path(emu, volume["id"])
    compared = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(large_disk), str(path)], capture_output=True, text=True)
    assert compared.returncode == 0, f"the volume differs from the disk: {compared.stdout}{compared.stderr}"
    report = outcome.report or {}
    assert (report["source"]["container"], report["source"]["virtual_size"]) == ("ova", SIZE)
    assert [(p["number"], p["fs"], p["status"]) for p in report["checks"]["fsck"]] == [(1, "ext4", "clean")]
