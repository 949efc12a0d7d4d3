"""write.sh and verify.sh as the worker runs them, on a real loop device and a real qcow2.

The scripts cut the image's range into slices that run side by side and, where the device can
zero a range without moving data, zero it ahead. What a user would check: the volume holds
exactly the image (holes included, over a volume full of junk), whatever the slicing; a byte
changed anywhere is found and named by its absolute offset; an unreadable image gives one line.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vdimport_worker.remote import NUMBERS, build_script, parse_output

MiB = 1 << 20

needs_loop = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/dev/loop-control").exists() or shutil.which("qemu-img") is None,
    reason="needs root, loop devices and qemu-img",
)


class Worker:
    """A stand-in for the worker's filesystem: WORK and IMG as lib.sh names them, and a fake
    ``nproc`` so the slicing does not depend on this machine's CPU count."""

    def __init__(self, tmp: Path, run: str):
        self.run = run
        self.work = Path("/var/tmp/vdimport") / run
        self.work.mkdir(parents=True, exist_ok=True)
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.cpus(2)

    def cpus(self, n: int) -> None:
        nproc = self.bin / "nproc"
        nproc.write_text(f"#!/bin/sh\necho {n}\n")
        nproc.chmod(0o755)

    def image(self, path: Path) -> None:
        link = self.work / "image"
        link.unlink(missing_ok=True)
        link.symlink_to(path)

    def script(self, name: str, **variables: str | int) -> tuple[int, dict | None, str | None, str]:
        text = build_script(name, {"RUN": self.run, **variables})
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}"}
        done = subprocess.run(["bash", "-c", text], capture_output=True, text=True, env=env, timeout=300, check=False)
        result, error, _ = parse_output(done.stdout)
        return done.returncode, result, error, done.stdout + done.stderr

    def slices(self, vsize: int, image_bytes: int) -> list[tuple[int, int, int]]:
        """The ``slices`` function of slices.sh on its own, for an image file of ``image_bytes``
        (sparse: only its size counts) and a file standing in for the device."""
        image, target = self.work / "sparse-image", self.work / "volume"
        for path, size in ((image, image_bytes), (target, max(vsize, 1))):
            with open(path, "wb") as f:
                f.truncate(size)
        self.image(image)
        text = build_script("verify", {"RUN": self.run, "DEVICE": str(target), "FORMAT": "raw", "VSIZE": vsize})
        text = text[: text.index("pids=()")] + "slices\n"  # lib.sh and slices.sh, then only the call
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}"}
        out = subprocess.run(["bash", "-c", text], capture_output=True, text=True, env=env, check=True).stdout
        return [tuple(int(x) for x in line.split()) for line in out.splitlines()]  # type: ignore[misc]

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    w = Worker(tmp_path, hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12])
    yield w
    w.close()


@pytest.mark.parametrize(
    ("vsize", "image_bytes", "cpus", "count"),
    [
        (1 * MiB, 1 * MiB, 2, 1),  # small images: one slice
        (20 << 30, 511 * MiB, 2, 1),  # a big disk with little data: one slice
        (20 << 30, 512 * MiB, 2, 2),  # at least 256 MiB of image file per slice
        (768 * MiB + 512, 768 * MiB, 4, 3),  # an odd tail goes to the last slice
        (20 << 30, 4 << 30, 2, 2),
        (20 << 30, 4 << 30, 16, 4),  # never more than 4
    ],
)
def test_slices_cover_the_range_once_in_aligned_pieces(worker: Worker, vsize: int, image_bytes: int, cpus: int, count: int) -> None:
    worker.cpus(cpus)
    got = worker.slices(vsize, image_bytes)
    assert [i for i, _, _ in got] == list(range(count))
    assert got[0][1] == 0 and sum(length for _, _, length in got) == vsize
    for (_, off, length), (_, nxt, _) in itertools.pairwise(got):
        assert off + length == nxt and nxt % MiB == 0  # contiguous, no overlap, 1 MiB boundaries


@pytest.fixture
def disk(tmp_path: Path) -> tuple[Path, Path, int]:
    """A 600 MiB disk with data at both ends, around the slices' boundary and in between, and
    holes elsewhere; as qcow2, and its raw form. The qcow2 has preallocated metadata, so its
    file is as large as the disk: enough image to be worth two slices on two CPUs."""
    vsize = 600 * MiB
    raw = tmp_path / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(vsize)
        for at in (0, 100 * MiB, 300 * MiB - 64 * 1024, vsize - MiB):
            f.seek(at)
            f.write(os.urandom(MiB))
    image = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "preallocation=metadata", str(raw), str(image)], check=True)
    assert image.stat().st_size >= vsize
    return image, raw, vsize


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[str]:
    """A loop device over a sparse file with junk in every MiB: a volume that does not read as zeros."""
    backing = tmp_path / "volume.img"
    with open(backing, "wb") as f:
        f.truncate(700 * MiB)
        for mib in range(700):
            f.seek(mib * MiB + 4096)
            f.write(b"\xa5" * 512)
    losetup = ["losetup", "--direct-io=on", "-f", "--show", str(backing)]
    dev = subprocess.run(losetup, capture_output=True, text=True, check=True).stdout.strip()
    yield dev
    subprocess.run(["losetup", "-d", dev], check=False)


def _same(raw: Path, target: str, vsize: int) -> bool:
    """The target's first ``vsize`` bytes are the raw disk (read with direct I/O from a device)."""
    protocol = "host_device,file.cache.direct=on" if target.startswith("/dev/") else "file"
    opts = f"driver=raw,size={vsize},file.driver={protocol},file.filename={target.replace(',', ',,')}"
    compare = ["qemu-img", "compare", "--image-opts", f"driver=raw,file.filename={raw}", opts]
    done = subprocess.run(compare, capture_output=True, text=True, check=False)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


@needs_loop
@pytest.mark.parametrize("cpus", [1, 2])
def test_write_puts_exactly_the_image_on_a_junk_filled_device(worker: Worker, disk: tuple[Path, Path, int], volume: str, cpus: int) -> None:
    image, raw, vsize = disk
    worker.cpus(cpus)
    worker.image(image)
    assert not _same(raw, volume, vsize)  # the junk is there before
    rc, result, error, output = worker.script("write", DEVICE=volume, FORMAT="qcow2", VSIZE=vsize)
    assert rc == 0 and error is None, output
    assert f"({cpus} slices," in output or (cpus == 1 and "(1 slices," in output)
    zeroing = int(Path(f"/sys/class/block/{Path(volume).name}/queue/write_zeroes_max_bytes").read_text()) > 0
    assert result == {"device": volume, "volume_bytes": 700 * MiB, "direct_io": True, "zeroed_ahead": zeroing}
    assert "progress 100%" in output
    assert _same(raw, volume, vsize)
    rc, result, error, output = worker.script("verify", DEVICE=volume, FORMAT="qcow2", VSIZE=vsize)
    assert rc == 0 and result == {"identical": True}, output


@needs_loop
def test_write_onto_a_file_volume_zeroes_the_holes_itself(worker: Worker, disk: tuple[Path, Path, int], tmp_path: Path) -> None:
    """Local mode without loop devices: the volume is a regular file, no zeroing ahead."""
    image, raw, vsize = disk
    target = tmp_path / 'file "volume", with \\ odd characters'  # JSON-quoted in the specs
    target.write_bytes(b"\xa5" * (640 * MiB))
    worker.image(image)
    rc, result, error, output = worker.script("write", DEVICE=str(target), FORMAT="qcow2", VSIZE=vsize)
    assert rc == 0 and error is None, output
    assert result is not None and result["zeroed_ahead"] is False and result["direct_io"] is False
    assert _same(raw, str(target), vsize)


@needs_loop
def test_verify_names_the_absolute_offset_of_a_changed_byte_in_any_slice(worker: Worker, disk: tuple[Path, Path, int], volume: str) -> None:
    image, _, vsize = disk
    worker.image(image)
    assert worker.script("write", DEVICE=volume, FORMAT="qcow2", VSIZE=vsize)[0] == 0
    for at in (450 * MiB + 4097, 5 * MiB + 7):  # in the second slice, then also in the first
        with open(volume, "r+b", buffering=0) as dev:
            dev.seek(at)
            dev.write(b"\x01")
        os.sync()
        rc, result, error, _ = worker.script("verify", DEVICE=volume, FORMAT="qcow2", VSIZE=vsize)
        assert rc == 1 and result is None
        # absolute (qemu-img names the 512-byte sector), and the first difference wins
        assert error == f"the volume differs from the image at byte {at - at % 512}"


@needs_loop
def test_an_unreadable_image_fails_the_write_with_one_line(
    worker: Worker, disk: tuple[Path, Path, int], volume: str, tmp_path: Path
) -> None:
    """A streamOptimized VMDK cut short: its grains past the cut cannot be read (a cut qcow2
    would read as zeros there, which the download step's qemu-img check catches instead)."""
    _, raw, vsize = disk
    vmdk = tmp_path / "disk.vmdk"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", str(raw), str(vmdk)], check=True)
    cut = tmp_path / "cut.vmdk"
    cut.write_bytes(vmdk.read_bytes()[: vmdk.stat().st_size // 2])
    worker.image(cut)
    rc, result, error, output = worker.script("write", DEVICE=volume, FORMAT="vmdk", VSIZE=vsize)
    assert rc == 1 and result is None, output
    assert error is not None and error.startswith("qemu-img convert failed: qemu-img: ") and "\n" not in error, error


@pytest.mark.parametrize("value", ["a[$(touch /tmp/vdimport-pwned)]", "1; touch /tmp/vdimport-pwned", -1, 1.5, True, "42"])
@pytest.mark.parametrize("key", sorted(NUMBERS))
def test_a_number_for_shell_arithmetic_must_be_an_integer(key: str, value: object) -> None:
    """bash evaluates a variable's text inside $(( )): ``a[$(cmd)]`` would run cmd. Whatever a
    step's input (an XCom, a result) says, only a non-negative int reaches the script."""
    with pytest.raises(ValueError, match=f"script variable {key} must be a non-negative integer"):
        build_script("download", {"RUN": "x" * 12, key: value})  # type: ignore[dict-item]
    assert build_script("download", {"RUN": "x" * 12, key: 7}).count(f"{key}=7\n") == 1


@needs_loop
def test_write_never_opens_a_backing_file_that_got_past_the_checks(worker: Worker, volume: str, tmp_path: Path) -> None:
    """Defence in depth: inspection and check_qemu_info refuse a backing file before the write,
    but the write itself opens the image with "backing": null, so a host file named as backing
    file could not reach the volume even if they failed."""
    marker = os.urandom(64) * (MiB // 64)
    host_file = tmp_path / "host-secret.raw"
    host_file.write_bytes(marker)
    image = tmp_path / "hostile.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(host_file), "-F", "raw", str(image), "64M"], check=True)
    worker.image(image)
    rc, _, error, output = worker.script("write", DEVICE=volume, FORMAT="qcow2", VSIZE=64 * MiB)
    assert rc == 0 and error is None, output
    with open(volume, "rb") as dev:
        written = dev.read(64 * MiB)
    assert marker[:4096] not in written and written[:MiB] == bytes(MiB)  # zeros, not the host file
