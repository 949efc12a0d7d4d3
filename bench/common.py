"""Helpers shared by the bench parts: result files, timing, loop devices that stand in for volumes."""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 1 << 20
GIB = 1 << 30
JUNK_BLOCK = 4096


# --- results ------------------------------------------------------------------------------
def write_results(results_dir: Path, name: str, data: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """``results_dir/name.json`` and ``results_dir/name.md``; returns both paths."""
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results_dir / f"{name}.json", results_dir / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    md_path.write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    return json_path, md_path


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


# --- timing -------------------------------------------------------------------------------
@dataclass
class Timed:
    wall: float  # seconds
    cpu: float  # user + system seconds of the command and every descendant it waited for
    returncode: int
    output: str  # stdout and stderr, interleaved


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], env: dict[str, str] | None = None, check: bool = False) -> Timed:
    """Run ``cmd`` and measure it. CPU comes from RUSAGE_CHILDREN deltas: run one command at a time."""
    cpu0, t0 = _children_cpu(), time.monotonic()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, check=False)
    wall, cpu = time.monotonic() - t0, _children_cpu() - cpu0
    if check and proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed (exit {proc.returncode}): {proc.stdout.strip()[-500:]}")
    return Timed(wall, cpu, proc.returncode, proc.stdout)


def capture(*cmd: str, stdin: bytes | None = None) -> str:
    """Run a helper command (not measured); raise with its output when it fails."""
    proc = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[:3])} ... failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace').strip()[-500:]}"
        )
    return proc.stdout.decode(errors="replace")


# --- devices ------------------------------------------------------------------------------
def loop_devices_usable() -> bool:
    """Root with a loop-control device: what the loop device helpers need."""
    return os.geteuid() == 0 and Path("/dev/loop-control").exists()


def seed_junk(path: str | Path, size: int, every: int = MIB, seed: int | None = None) -> int:
    """Write a random 4 KiB block at a random aligned place in every ``every`` bytes of ``path``
    (a backing file or a block device), so that it does not read as zeros anywhere a write could
    skip; flushed. Returns the number of blocks written."""
    rng = random.Random(seed)  # noqa: S311 - junk, not secrets
    count = 0
    fd = os.open(path, os.O_WRONLY)
    try:
        for start in range(0, size - JUNK_BLOCK + 1, every):
            span = min(every, size - start) // JUNK_BLOCK
            os.pwrite(fd, rng.randbytes(JUNK_BLOCK), start + rng.randrange(span) * JUNK_BLOCK)
            count += 1
        os.fsync(fd)
    finally:
        os.close(fd)
    return count


def make_backing_file(path: Path, size: int) -> Path:
    """A sparse file of ``size`` bytes seeded with junk blocks, as the emulator makes a volume."""
    with open(path, "wb") as f:
        f.truncate(size)
    seed_junk(path, size)
    return path


@contextmanager
def loop_device(backing: Path, direct_io: bool = True) -> Iterator[str]:
    """``backing`` attached as a free loop device (``/dev/loopN``); partitions dropped and
    the device detached on exit. ``direct_io``: the loop driver bypasses the host page cache
    for the backing file, so the device behaves like a disk and not like RAM."""
    cmd = ["losetup", "--find", "--show"]
    if direct_io:
        cmd.append("--direct-io=on")
    device = capture(*cmd, str(backing)).strip()
    try:
        yield device
    finally:
        subprocess.run(["partx", "-d", device], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


def drop_partitions(device: str) -> None:
    """Forget the partition devices (and their page cache) that ``partx -a`` added."""
    with suppress(OSError):
        subprocess.run(["partx", "-d", device], capture_output=True, check=False)


def block_stat(device: str) -> dict[str, int]:
    """Bytes read, written (write-zeroes requests included: the kernel counts them as writes)
    and discarded on ``device`` since boot, from ``/sys/block/NAME/stat``."""
    name = Path(os.path.realpath(device)).name
    fields = [int(x) for x in Path(f"/sys/block/{name}/stat").read_text().split()]
    return {
        "read_bytes": fields[2] * 512,
        "write_bytes": fields[6] * 512,
        "discard_bytes": fields[13] * 512 if len(fields) > 13 else 0,
    }


def stat_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in before}
