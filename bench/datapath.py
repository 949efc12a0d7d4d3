"""Data path: the worker's write of an image onto a volume, against the reference and the dd floor.

The volume is a loop device (``--direct-io=on``: no host page cache between the loop device and
its backing file, so it behaves like a disk) over a sparse file with a random 4 KiB block in
every MiB, so that it never reads as zeros (the emulator's volumes, made denser). Before every
measured run the whole device is discarded (the backing file all holes again) and the junk
seeded anew: each run starts from the same volume, whatever the run before it allocated, and a
write that skipped a range is caught.

Disks: a GPT disk of ``vsize`` bytes with an ext4 and an xfs partition holding random files
(``mkfs.ext4 -d`` and ``mkfs.xfs -p``: no root, no mount) to about 5 %, 25 % and 90 % of the
virtual size, converted to qcow2, vmdk streamOptimized, vhdx and vhd dynamic. For each image,
``reps`` rounds, the order alternating:

* reference: ``qemu-img convert -f FMT -O host_device SRC DEV && sync``;
* ours: the production ``vm/write.sh``, its exact Run Command text from ``remote.build_script``
  run with bash (``DEVICE`` a symlink to the loop device, ``IMG`` a symlink to the image);
  after every run the device is compared with the raw disk the image was made from;
* floor: the image's allocated bytes written with ``dd bs=4M oflag=direct conv=fsync``.

Per run: wall time, CPU time (user + system of the command's process tree), bytes read and
written on the device (``/sys/block/loopN/stat``), and, from the kernel's ``block_rq_complete``
trace event, how much of what the kernel counts as written was write-zeroes requests (zeroing,
no data moves) and how much was data, and in how many requests. ``verify.sh`` and ``fsck.sh``
run once per image.

Then qemu-img variants (-W, -m, -t, -S, zeroing the range first) on a few images: the evidence
for the flags in write.sh, and write.sh with its slices or its zeroing ahead taken out. Criteria
(the issue's): ours writes at most 1.1x the image's allocated bytes as data (zeroing and
discards apart), and its wall time is within 1.5x the floor. The machine's load average is
recorded with each image: other work on the machine makes the times noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    MIB,
    Timed,
    block_stat,
    capture,
    drop_partitions,
    loop_device,
    loop_devices_usable,
    make_backing_file,
    median,
    seed_junk,
    stat_delta,
    timed,
    write_results,
)
from vdimport_local.diskimages import convert
from vdimport_worker.remote import build_script, parse_output

NAME = "datapath"
RESULTS = Path(__file__).resolve().parent / "results"
WRITE_SH = Path(__file__).resolve().parents[1] / "images/worker/vdimport_worker/vm/write.sh"
ALLOCATIONS = (0.05, 0.25, 0.90)
# diskimages.FORMATS key -> the qemu-img format name the worker is given (FORMAT)
FORMATS = {"qcow2": "qcow2", "vmdk-stream": "vmdk", "vhdx": "vhdx", "vhd": "vpc"}
LABELS = {"qcow2": "qcow2", "vmdk-stream": "vmdk streamOptimized", "vhdx": "vhdx", "vhd": "vhd dynamic"}
MAX_BYTES_RATIO = 1.1
MAX_TIME_RATIO = 1.5
REFERENCE = 'qemu-img convert -f "$1" -O host_device "$2" "$3" && sync'
VARIANT = 'qemu-img convert -f "$1" -O raw -n "${@:5}" "$2" "$3" && sync && blockdev --flushbufs "$3"'
# "zero-first": one BLKZEROOUT over the image's range, then only the data (not what write.sh does:
# measured to show what the zeroing costs)
ZERO_FIRST = (
    'blkdiscard -z -l "$4" "$3" && qemu-img convert -f "$1" -O raw -n --target-is-zero "${@:6}" "$2" "$3" '
    '&& sync && blockdev --flushbufs "$3"'
)
# Tuning candidates (flags after ``-O raw -n``); the one write.sh uses is marked in the results.
VARIANTS: dict[str, list[str]] = {
    "-t none -W -m 8": ["-t", "none", "-W", "-m", "8"],
    "-t none -m 8 (in order)": ["-t", "none", "-m", "8"],
    "-t none -W -m 4": ["-t", "none", "-W", "-m", "4"],
    "-t none -W -m 16": ["-t", "none", "-W", "-m", "16"],
    "-t writeback -W -m 8": ["-t", "writeback", "-W", "-m", "8"],
    "-t none -W -m 8 -S 1M": ["-t", "none", "-W", "-m", "8", "-S", "1M"],
    "zero first (blkdiscard -z), --target-is-zero -t none -W -m 8": ["zero-first", "-t", "none", "-W", "-m", "8"],
}


@dataclass(frozen=True)
class Config:
    vsize_mib: int
    ext4_share: float  # of the space between the GPT's first and last MiB
    reps: int
    chunk: int  # size of the big random files
    small_files: int  # plus this many files of 4-256 KiB
    variant_images: tuple[tuple[str, float], ...]
    variant_reps: int


FULL = Config(
    2048,
    0.55,
    2,
    32 * MIB,
    64,
    (("qcow2", 0.05), ("vmdk-stream", 0.25), ("qcow2", 0.90)),
    2,
)
QUICK = Config(50, 0.34, 2, 1 * MIB, 8, (("qcow2", 0.90),), 1)


@dataclass
class Image:
    key: str  # diskimages format key
    qfmt: str  # qemu-img format name
    target: float
    path: Path
    raw: Path
    vsize: int = 0
    file_bytes: int = 0
    allocated: int = 0  # bytes the format maps as data (qemu-img map)
    allocated_source: str = "qemu-img map"
    content: int = 0  # the disk's non-zero content: what qcow2 (64 KiB clusters) maps as data

    @property
    def name(self) -> str:
        return f"{self.key}-{round(self.target * 100)}"


# --- building the disks -------------------------------------------------------------------
def _capacity(fs: str, size: int) -> int:
    """Roughly what a fresh file system of ``size`` bytes holds in files."""
    if fs == "ext4":
        return int(size * 0.93) - 6 * MIB
    log = 64 * MIB if size >= 512 * MIB else 10 * MIB  # mkfs.xfs's internal log
    return int((size - log) * 0.96) - 4 * MIB


def _random_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MIB)
            f.write(os.urandom(n))
            left -= n
    return path


class Content:
    """Random files, made once and hard-linked into each disk's content (no disk gets the
    same file twice; the disks share them)."""

    def __init__(self, root: Path, cfg: Config):
        self.root, self.cfg = root, cfg
        root.mkdir(parents=True, exist_ok=True)
        self.chunks: list[Path] = []
        self.made = 0

    def chunk(self, index: int) -> Path:
        while len(self.chunks) <= index:
            self.chunks.append(_random_file(self.root / f"c{len(self.chunks):04d}.bin", self.cfg.chunk))
        return self.chunks[index]

    def tree(self, dest: Path, nbytes: int, first_chunk: int) -> tuple[dict[str, Path], int]:
        """Files totalling about ``nbytes`` under ``dest``: relative name -> file. Returns the
        next free chunk index."""
        files: dict[str, Path] = {}
        rng_sizes = [4096 * (1 + (i * 37) % 64) for i in range(self.cfg.small_files)]
        for i, size in enumerate(rng_sizes):
            if size > nbytes // 4:
                break
            self.made += 1
            files[f"small/f{i:03d}.bin"] = _random_file(self.root / f"s{self.made:05d}.bin", size)
            nbytes -= size
        index = first_chunk
        while nbytes >= self.cfg.chunk:
            files[f"data/c{index:04d}.bin"] = self.chunk(index)
            index += 1
            nbytes -= self.cfg.chunk
        if nbytes >= 4096:
            self.made += 1
            files["data/tail.bin"] = _random_file(self.root / f"t{self.made:05d}.bin", nbytes // 4096 * 4096)
        for name, src in files.items():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            os.link(src, dest / name)
        return files, index


def _xfs_proto(files: dict[str, Path]) -> str:
    dirs: dict[str, list[tuple[str, Path]]] = {}
    for name, src in sorted(files.items()):
        folder, base = name.split("/", 1)
        dirs.setdefault(folder, []).append((base, src))
    lines = ["/dev/null", "0 0", "d--755 0 0"]
    for folder, entries in dirs.items():
        lines.append(f"{folder} d--755 0 0")
        lines += [f"{base} ---644 0 0 {src}" for base, src in entries]
        lines.append("$")
    lines.append("$")
    return "\n".join(lines) + "\n"


def build_raw(work: Path, cfg: Config, target: float, content: Content) -> Path:
    """A raw GPT disk (ext4 + xfs, random files) with about ``target`` of it allocated."""
    pct = round(target * 100)
    raw = work / f"disk-{pct}.raw"
    inner = cfg.vsize_mib - 2
    ext4_mib = int(inner * cfg.ext4_share)
    sizes = {"ext4": ext4_mib * MIB, "xfs": (inner - ext4_mib) * MIB}
    caps = {fs: _capacity(fs, size) for fs, size in sizes.items()}
    want = min(int(target * cfg.vsize_mib * MIB), sum(caps.values()))
    with open(raw, "wb") as f:
        f.truncate(cfg.vsize_mib * MIB)
    layout = "label: gpt\n" + "".join(f"size={size // MIB}MiB, type=L\n" for size in sizes.values())
    capture("sfdisk", "-q", "--no-reread", str(raw), stdin=layout.encode())
    scratch = work / f"build-{pct}"
    offset, chunk_index = MIB, 0
    for fs, size in sizes.items():
        part = scratch / f"{fs}.img"
        tree = scratch / fs
        tree.mkdir(parents=True)
        files, chunk_index = content.tree(tree, want * caps[fs] // sum(caps.values()), chunk_index)
        with open(part, "wb") as f:
            f.truncate(size)
        if fs == "ext4":
            capture("mkfs.ext4", "-q", "-F", "-m", "0", "-d", str(tree), str(part))
        else:
            proto = scratch / "xfs.proto"
            proto.write_text(_xfs_proto(files))
            env = None
            if size < 300 * MIB:  # mkfs.xfs refuses small file systems outside fstests
                env = {**os.environ, "TEST_DIR": str(scratch), "TEST_DEV": str(part), "QA_CHECK_FS": "1"}
            proc = subprocess.run(["mkfs.xfs", "-q", "-f", "-p", str(proto), str(part)], capture_output=True, env=env, check=False)
            if proc.returncode:
                raise RuntimeError(f"mkfs.xfs failed: {proc.stderr.decode(errors='replace')[-300:]}")
        capture("dd", f"if={part}", f"of={raw}", "bs=4M", f"seek={offset}", "oflag=seek_bytes", "conv=sparse,notrunc", "status=none")
        offset += size
    shutil.rmtree(scratch)
    return raw


def _json(*cmd: str) -> Any:
    return json.loads(capture(*cmd))


def describe(image: Image) -> None:
    info = _json("qemu-img", "info", "-f", image.qfmt, "--output=json", str(image.path))
    extents = _json("qemu-img", "map", "-f", image.qfmt, "--output=json", str(image.path))
    image.vsize = int(info["virtual-size"])
    image.file_bytes = image.path.stat().st_size
    image.allocated = sum(int(e["length"]) for e in extents if e.get("data"))
    if image.allocated >= image.vsize > image.file_bytes:
        # the driver reports no allocation (qemu's vhdx: all of it "data"): what the file stores
        image.allocated, image.allocated_source = image.file_bytes, "file size"


def build_images(work: Path, cfg: Config, log: Callable[[str], None]) -> list[Image]:
    content = Content(work / "content", cfg)
    raws = {}
    for target in ALLOCATIONS:
        raws[target] = build_raw(work, cfg, target, content)
        log(f"built the raw {round(target * 100)} % disk")
    shutil.rmtree(work / "content")
    images = [Image(key, qfmt, t, work / f"disk-{round(t * 100)}.{key}", raws[t]) for t in ALLOCATIONS for key, qfmt in FORMATS.items()]
    # the slow ones (streamOptimized compresses; the big disks) first, two at a time
    order = sorted(images, key=lambda i: (i.key != "vmdk-stream", -i.target))
    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(convert, i.raw, i.key, i.path) for i in order]:
            future.result()
    for image in images:
        describe(image)
    for image in images:
        image.content = next(i.allocated for i in images if i.key == "qcow2" and i.target == image.target)
    return images


# --- what a run put on the device ---------------------------------------------------------
class ZeroTrace:
    """Sums the sectors of the requests completed on one block device, by kind (W data, N
    write-zeroes, D discard, R read), from the ``block:block_rq_complete`` trace event in a
    private tracefs instance. ``/sys/block/*/stat`` counts write-zeroes as writes; this splits
    them off. ``available`` is False where tracefs cannot be used (then only the stat counts)."""

    LINE = re.compile(r"block_rq_complete: \d+,\d+ (\S+) \(.*?\) \d+ \+ (\d+)")

    def __init__(self, device: str):
        self.device = device
        self.available = False
        self.mounted: Path | None = None
        self.instance: Path | None = None

    def __enter__(self) -> ZeroTrace:
        try:
            base = Path("/sys/kernel/tracing")
            if not (base / "instances").is_dir():
                self.mounted = Path(tempfile.mkdtemp(prefix="vdimport-tracefs-"))
                capture("mount", "-t", "tracefs", "nodev", str(self.mounted))
                base = self.mounted
            self.instance = base / "instances" / f"vdimport-bench-{os.getpid()}"
            self.instance.mkdir()
            rdev = os.stat(self.device).st_rdev
            event = self.instance / "events/block/block_rq_complete"
            (self.instance / "buffer_size_kb").write_text("16384\n")
            (event / "filter").write_text(f"dev == {(os.major(rdev) << 20) | os.minor(rdev)}\n")
            (event / "enable").write_text("1\n")
            self.available = True
        except (OSError, RuntimeError) as exc:
            print(f"    (no block trace: {exc}; write-zeroes cannot be told from data writes)", flush=True)
            self._close()
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        if self.instance is not None:
            with suppress(OSError):
                (self.instance / "events/block/block_rq_complete/enable").write_text("0\n")
            with suppress(OSError):
                self.instance.rmdir()
            self.instance = None
        if self.mounted is not None:
            subprocess.run(["umount", str(self.mounted)], capture_output=True, check=False)
            with suppress(OSError):
                self.mounted.rmdir()
            self.mounted = None

    def _overruns(self) -> int:
        assert self.instance is not None
        total = 0
        for stats in (self.instance / "per_cpu").glob("cpu*/stats"):
            for line in stats.read_text().splitlines():
                if line.startswith("overrun:"):
                    total += int(line.split()[1])
        return total

    def clear(self) -> None:
        if self.available and self.instance is not None:
            (self.instance / "trace").write_text("")
            self.overruns = self._overruns()

    def collect(self) -> dict[str, int] | None:
        if not self.available or self.instance is None:
            return None
        sums = {"W": 0, "N": 0, "D": 0, "R": 0}
        counts = dict.fromkeys(sums, 0)
        for match in self.LINE.finditer((self.instance / "trace").read_text()):
            kind, sectors = match.group(1)[0], int(match.group(2))
            if kind in sums and sectors:
                sums[kind] += sectors * 512
                counts[kind] += 1
        if self._overruns() != self.overruns:
            return None
        return {
            "data_bytes": sums["W"],
            "zero_bytes": sums["N"],
            "discard_bytes": sums["D"],
            "read_bytes": sums["R"],
            "data_requests": counts["W"],
            "zero_requests": counts["N"],
        }


# --- the measurements ---------------------------------------------------------------------
class Bench:
    def __init__(self, work: Path, device: str, trace: ZeroTrace, floor_file: Path, volume_bytes: int):
        self.work, self.device, self.trace, self.floor_file = work, device, trace, floor_file
        self.volume_bytes = volume_bytes
        self.link = work / "oraclevdb"  # DEVICE, as /dev/oracleoci/oraclevdb is on the VM
        self.link.symlink_to(device)
        self.run_name = f"bench{os.getpid()}"
        self.run_dir = Path("/var/tmp/vdimport") / self.run_name  # lib.sh: WORK, IMG=$WORK/image
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.spent = {"reset": 0.0, "compare": 0.0, "cache": 0.0}  # harness time outside the measurements

    def close(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def use(self, image: Image) -> None:
        """IMG for the worker scripts; the image read once, so every run finds it in the page cache."""
        target = self.run_dir / "image"
        target.unlink(missing_ok=True)
        target.symlink_to(image.path)
        t0 = time.monotonic()
        with open(image.path, "rb") as f:
            while f.read(8 * MIB):
                pass
        self.spent["cache"] += time.monotonic() - t0

    def variables(self, image: Image, **extra: str | int) -> dict[str, str | int]:
        return {"RUN": self.run_name, "DEVICE": str(self.link), "FORMAT": image.qfmt, "VSIZE": image.vsize, **extra}

    def reset(self) -> None:
        """Every run starts from the same volume: all of it discarded (the backing file all
        holes again, whatever the last run allocated), then junk seeded. Without this a run's
        zeroing cost depends on what the runs before it left in the backing file."""
        t0 = time.monotonic()
        capture("blkdiscard", "-f", self.device)
        seed_junk(self.device, self.volume_bytes)
        self.spent["reset"] += time.monotonic() - t0

    def measure(self, cmd: list[str]) -> tuple[dict[str, Any], Timed]:
        self.reset()
        before = block_stat(self.device)
        self.trace.clear()
        t = timed(cmd)
        delta = stat_delta(before, block_stat(self.device))
        split = self.trace.collect()
        sample: dict[str, Any] = {
            "wall": round(t.wall, 3),
            "cpu": round(t.cpu, 3),
            "read_bytes": delta["read_bytes"],
            "write_bytes": delta["write_bytes"],  # the kernel's count: data + write-zeroes
            "discard_bytes": delta["discard_bytes"],
            "data_bytes": split["data_bytes"] if split else delta["write_bytes"],
            "zero_bytes": split["zero_bytes"] if split else None,
            "data_requests": split["data_requests"] if split else None,
            "zero_requests": split["zero_requests"] if split else None,
            "ok": t.returncode == 0,
        }
        if t.returncode:
            sample["error"] = t.output.strip()[-300:]
        return sample, t

    def reference(self, image: Image) -> dict[str, Any]:
        return self.measure(["bash", "-c", REFERENCE, "reference", image.qfmt, str(image.path), self.device])[0]

    def ours(self, image: Image) -> dict[str, Any]:
        return self.edited_write(image, lambda text: text)

    def edited_write(self, image: Image, edit: Callable[[str], str], check: bool = True) -> dict[str, Any]:
        """write.sh as the worker runs it, or an edited copy of it (``edit``)."""
        sample, t = self.measure(["bash", "-c", edit(build_script("write", self.variables(image)))])
        result, error, _ = parse_output(t.output)
        sample["ok"] = sample["ok"] and result is not None and error is None
        sample["result"] = result
        if error:
            sample["error"] = error
        if check:
            sample["correct"] = self.matches(image)
        return sample

    def variant(self, image: Image, flags: list[str], check: bool = False) -> dict[str, Any]:
        template = ZERO_FIRST if flags[:1] == ["zero-first"] else VARIANT
        args = [image.qfmt, str(image.path), self.device, str(image.vsize), *flags]
        sample = self.measure(["bash", "-c", template, "variant", *args])[0]
        if check:
            sample["correct"] = self.matches(image)
        return sample

    def floor(self, image: Image) -> dict[str, Any]:
        cmd = ["dd", f"if={self.floor_file}", f"of={self.device}", "bs=4M", f"count={image.allocated}"]
        return self.measure([*cmd, "iflag=count_bytes", "oflag=direct", "conv=fsync", "status=none"])[0]

    def matches(self, image: Image) -> bool:
        """The device's first VSIZE bytes are the raw disk the image was made from (zeros past it)."""
        t0 = time.monotonic()
        proc = subprocess.run(
            [
                "qemu-img",
                "compare",
                "--image-opts",
                f"driver=raw,file.driver=file,file.filename={image.raw}",
                # O_DIRECT on the device: through its page cache the compare takes 10x longer here
                f"driver=raw,size={image.vsize},file.driver=host_device,file.filename={self.device},file.cache.direct=on",
            ],
            capture_output=True,
            check=False,
        )
        self.spent["compare"] += time.monotonic() - t0
        return proc.returncode == 0

    def script(self, name: str, image: Image, edit: Callable[[str], str] | None = None) -> dict[str, Any]:
        """verify.sh or fsck.sh as the worker runs it (``edit``: a changed copy of its text)."""
        variables = self.variables(image) if name == "verify" else {"RUN": self.run_name, "DEVICE": str(self.link)}
        text = build_script(name, variables)
        t = timed(["bash", "-c", edit(text) if edit else text])
        result, error, _ = parse_output(t.output)
        if name == "fsck":
            drop_partitions(self.device)  # their page cache would be stale for the next image
        return {
            "wall": round(t.wall, 3),
            "cpu": round(t.cpu, 3),
            "ok": t.returncode == 0 and error is None,
            "result": result,
            "error": error,
        }


def _summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("wall", "cpu", "read_bytes", "write_bytes", "data_bytes", "zero_bytes", "discard_bytes", "data_requests", "zero_requests"):
        values = [s[key] for s in samples if s.get(key) is not None]
        out[key] = (round(median(values), 3) if key in ("wall", "cpu") else int(median(values))) if values else None
    return out


def measure_image(bench: Bench, image: Image, cfg: Config) -> dict[str, Any]:
    load = os.getloadavg()[0]
    bench.use(image)
    runs: dict[str, list[dict[str, Any]]] = {"reference": [], "ours": [], "floor": []}
    extra: dict[str, Any] = {}
    for rep in range(cfg.reps):
        order = ("reference", "ours", "floor") if rep % 2 == 0 else ("ours", "reference", "floor")
        for what in order:
            if what == "reference":
                runs[what].append(bench.reference(image))
            elif what == "ours":
                runs[what].append(bench.ours(image))
                if "verify" not in extra:  # the device holds our write: time the checks once
                    extra["verify"] = bench.script("verify", image)
                    extra["fsck"] = bench.script("fsck", image)
            else:
                runs[what].append(bench.floor(image))
    entry: dict[str, Any] = {
        "image": image.name,
        "format": image.key,
        "qemu_format": image.qfmt,
        "target_allocation": image.target,
        "virtual_size": image.vsize,
        "file_bytes": image.file_bytes,
        "allocated_bytes": image.allocated,
        "allocated_source": image.allocated_source,
        "content_bytes": image.content,
        "allocation": round(image.allocated / image.vsize, 4),
        "loadavg": [round(load, 2), round(os.getloadavg()[0], 2)],  # 1-minute load before and after: was the machine quiet?
    }
    for what, samples in runs.items():
        entry[what] = {"median": _summary(samples), "runs": samples}
    entry.update(extra)
    ours, floor = entry["ours"]["median"], entry["floor"]["median"]
    bytes_ratio = ours["data_bytes"] / image.allocated if image.allocated else 0.0
    time_ratio = ours["wall"] / floor["wall"] if floor["wall"] else float("inf")
    correct = all(s["ok"] and s["correct"] for s in runs["ours"])
    checks_ok = (
        extra["verify"]["ok"]
        and extra["fsck"]["ok"]
        and all(p["status"] == "clean" for p in (extra["fsck"]["result"] or {}).get("partitions", [{"status": "?"}]))
    )
    entry["criteria"] = {
        "bytes_ratio": round(bytes_ratio, 4),
        "bytes_ok": bytes_ratio <= MAX_BYTES_RATIO,
        "time_ratio": round(time_ratio, 3),
        "time_ok": time_ratio <= MAX_TIME_RATIO,
        "reference_time_ratio": round(entry["reference"]["median"]["wall"] / floor["wall"], 3) if floor["wall"] else None,
        "correct": correct,
        "checks_ok": checks_ok,
        "reference_faster": entry["reference"]["median"]["wall"] < 0.95 * ours["wall"],  # by more than 5 %
    }
    c = entry["criteria"]
    entry["verdict"] = "PASS" if c["bytes_ok"] and c["time_ok"] and correct and checks_ok else "FAIL"
    return entry


def _verdict(entry: dict[str, Any]) -> dict[str, Any]:
    c = entry["criteria"]
    return {
        "criterion": f"{entry['image']}: data <= {MAX_BYTES_RATIO}x allocated, wall <= {MAX_TIME_RATIO}x the dd floor, "
        "the volume holds the image, verify and fsck clean",
        "measured": f"data/alloc {c['bytes_ratio']:.3f}, ours/floor {c['time_ratio']:.2f}, "
        f"{'correct' if c['correct'] else 'WRONG CONTENT'}, checks {'clean' if c['checks_ok'] else 'FAILED'}",
        "pass": entry["verdict"] == "PASS",
    }


def production_flags(text: str | None = None) -> list[str]:
    """The qemu-img convert options each slice of write.sh passes besides -n: its ``flags=(...)``
    line, with ``-t none`` first (slices.sh opens a block device with ``file.cache.direct=on``)."""
    text = text if text is not None else WRITE_SH.read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("flags=("))
    words = shlex.split(line[len("flags=(") : line.index(")")])
    return ["-t", "none", *(w for w in words if w != "-n")]


# write.sh itself against edited copies: what its slices and its zeroing ahead are worth
SCRIPT_VARIANTS: dict[str, Callable[[str], str]] = {
    "write.sh (production)": lambda text: text,
    "write.sh, one slice": lambda text: text.replace("n=$(nproc)", "n=1"),
    "write.sh, one slice, no zeroing ahead": lambda text: text.replace("n=$(nproc)", "n=1").replace(
        "write_zeroes_max_bytes", "no_such_attribute"
    ),
}


def measure_variants(bench: Bench, images: list[Image], cfg: Config, log: Callable[[str], None]) -> dict[str, Any]:
    variants: dict[str, list[str] | Callable[[str], str]] = {**VARIANTS, **SCRIPT_VARIANTS}
    prod = production_flags()
    rows: list[dict[str, Any]] = []
    for key, target in cfg.variant_images:
        image = next(i for i in images if i.key == key and i.target == target)
        bench.use(image)
        samples: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for rep in range(cfg.variant_reps):
            names = list(variants) if rep % 2 == 0 else list(reversed(variants))
            for name in names:
                variant = variants[name]
                if callable(variant):
                    samples[name].append(bench.edited_write(image, variant, check=rep == 0))
                    continue
                # the content is checked once for the variants that change how zeros are handled
                check = rep == 0 and any(f in variant for f in ("zero-first", "-S"))
                samples[name].append(bench.variant(image, variant, check))
        for name, runs in samples.items():
            rows.append(
                {
                    "image": image.name,
                    "variant": name,
                    "flags": [] if callable(variants[name]) else variants[name],
                    "production": name == "write.sh (production)",
                    "ok": all(r["ok"] for r in runs),
                    "correct": all(r["correct"] for r in runs if "correct" in r) if any("correct" in r for r in runs) else None,
                    "median": _summary(runs),
                    "runs": runs,
                }
            )
        log(
            f"variants on {image.name}: "
            + ", ".join(f"{r['variant']} {r['median']['wall']:.2f} s" for r in rows if r["image"] == image.name)
        )
    return {"production_flags": prod, "images": [f"{k}-{round(t * 100)}" for k, t in cfg.variant_images], "rows": rows}


# --- the report ---------------------------------------------------------------------------
def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MIB:.0f}"


def markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = [
        "# Data path: writing an image onto a volume",
        "",
        f"{data['config']['vsize_mib']} MiB virtual disks (GPT, ext4 + xfs, random files), {data['config']['reps']} alternating "
        f"rounds each; medians. Volume: loop device (direct I/O) over a junk-seeded sparse file. "
        f"{m['cpus']} CPUs, kernel {m['kernel']}, {m['qemu_img']}. Quick mode: {data['config']['quick']}.",
        "",
        "Reference: `qemu-img convert -f FMT -O host_device SRC DEV && sync`. Ours: `vm/write.sh` as the worker runs it "
        f"(the range zeroed ahead where the device can, then one qemu-img `{' '.join(data['production_flags'])}` per slice, "
        "side by side). Floor: the image's allocated bytes with `dd bs=4M oflag=direct conv=fsync`. "
        "Data = bytes written as data; zeroed = write-zeroes requests (no data moves); both from the block trace. "
        f"PASS: ours correct, verify and fsck clean, data <= {MAX_BYTES_RATIO}x allocated, time <= {MAX_TIME_RATIO}x floor.",
        "",
        "| image | alloc | allocated MiB | content MiB | ref s | ref CPU s | ref data MiB | ref zeroed MiB "
        "| ours s | ours CPU s | ours data MiB | ours zeroed MiB | discard MiB | floor s | ours/floor | ref/floor "
        "| data/alloc | verify s | fsck s | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for e in data["images"]:
        r, o, f, c = e["reference"]["median"], e["ours"]["median"], e["floor"]["median"], e["criteria"]
        cells = [
            LABELS[e["format"]],
            f"{e['allocation'] * 100:.1f} %",
            _mib(e["allocated_bytes"]) + ("*" if e["allocated_source"] == "file size" else ""),
            _mib(e["content_bytes"]),
            f"{r['wall']:.2f}",
            f"{r['cpu']:.2f}",
            _mib(r["data_bytes"]),
            _mib(r["zero_bytes"]),
            f"{o['wall']:.2f}",
            f"{o['cpu']:.2f}",
            _mib(o["data_bytes"]),
            _mib(o["zero_bytes"]),
            _mib(o["discard_bytes"]),
            f"{f['wall']:.2f}",
            f"{c['time_ratio']:.2f}",
            f"{c['reference_time_ratio']:.2f}",
            f"{c['bytes_ratio']:.3f}",
            f"{e['verify']['wall']:.2f}",
            f"{e['fsck']['wall']:.2f}",
            e["verdict"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Allocated: the bytes `qemu-img map` reports as data; * the file's size where the driver reports none "
        "(qemu's vhdx calls all of the disk data). Content: the disk's non-zero 64 KiB clusters (its qcow2's allocation). "
        "Data/alloc: ours' data bytes over allocated. Verify: verify.sh as the worker runs it (slices side by side, the "
        "volume read with direct I/O).",
    ]
    variants = data.get("variants") or {}
    if variants.get("rows"):
        lines += [
            "",
            "## qemu-img variants, and write.sh's slices and zeroing ahead",
            "",
            "`qemu-img convert -f FMT -O raw -n FLAGS SRC DEV && sync && blockdev --flushbufs DEV`; medians of "
            f"{data['config']['variant_reps']} alternating rounds; the write.sh rows run the script (slices side by side, "
            "zeroing ahead where the device supports it) and edited copies of it. **bold**: what the worker runs.",
            "",
            "| image | flags | wall s | CPU s | data MiB | zeroed MiB |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for row in variants["rows"]:
            med, name = row["median"], row["variant"]
            name = f"**{name}**" if row["production"] else name
            cells = [row["image"], name, f"{med['wall']:.2f}", f"{med['cpu']:.2f}", _mib(med["data_bytes"]), _mib(med["zero_bytes"])]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Verdicts", ""]
    lines += [f"- {'PASS' if v['pass'] else 'FAIL'}: {v['criterion']} ({v['measured']})" for v in data["verdicts"]]
    lines += ["", f"Took {data['seconds']:.0f} s (building the images: {data['build_seconds']:.0f} s)."]
    return "\n".join(lines) + "\n"


# --- driver -------------------------------------------------------------------------------
def _machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "qemu_img": capture("qemu-img", "--version").splitlines()[0],
    }


@contextmanager
def _workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vdimport-bench-datapath-", dir=os.environ.get("VDIMPORT_BENCH_TMP")))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_bench(results_dir: Path, quick: bool = False, variants: bool = True) -> dict[str, Any]:
    cfg = QUICK if quick else FULL
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"    [{time.monotonic() - started:5.0f} s] {message}", flush=True)

    if not loop_devices_usable():
        raise SystemExit("bench datapath needs root and /dev/loop-control (loop devices stand in for volumes)")
    with ExitStack() as stack:
        work = stack.enter_context(_workdir())
        images = build_images(work, cfg, log)
        build_seconds = time.monotonic() - started
        log(f"built {len(images)} images")
        volume_bytes = (max(i.vsize for i in images) + 16 * MIB) // MIB * MIB
        backing = make_backing_file(work / "volume.img", volume_bytes)
        floor_file = _random_file(work / "floor.bin", (max(i.allocated for i in images) + 4 * MIB) // (4 * MIB) * (4 * MIB))
        subprocess.run(["sync"], check=False)
        device = stack.enter_context(loop_device(backing))
        trace = stack.enter_context(ZeroTrace(device))
        bench = Bench(work, device, trace, floor_file, volume_bytes)
        stack.callback(bench.close)
        entries = []
        for image in images:
            entry = measure_image(bench, image, cfg)
            entries.append(entry)
            c = entry["criteria"]
            o, r, f = (entry[k]["median"]["wall"] for k in ("ours", "reference", "floor"))
            log(
                f"{entry['verdict']} {image.name}: ours {o:.2f} s, ref {r:.2f} s, floor {f:.2f} s (x{c['time_ratio']:.2f}); "
                f"data/alloc {c['bytes_ratio']:.3f}" + ("" if c["correct"] else "; WRONG CONTENT")
            )
        variant_data = measure_variants(bench, images, cfg, log) if variants else {}
    data: dict[str, Any] = {
        "machine": {**_machine(), "loop_direct_io": True, "block_trace": trace.available},
        "config": {
            "quick": quick,
            "vsize_mib": cfg.vsize_mib,
            "reps": cfg.reps,
            "variant_reps": cfg.variant_reps,
            "formats": list(FORMATS),
            "allocations": list(ALLOCATIONS),
        },
        "production_flags": production_flags(),
        "images": entries,
        "variants": variant_data,
        "verdicts": [_verdict(e) for e in entries],
        "build_seconds": round(build_seconds, 1),
        "harness_seconds": {k: round(v, 1) for k, v in bench.spent.items()},
        "seconds": round(time.monotonic() - started, 1),
    }
    write_results(results_dir, NAME, data, markdown(data))
    for verdict in data["verdicts"]:
        print(f"{'PASS' if verdict['pass'] else 'FAIL'}  {verdict['criterion']}: {verdict['measured']}", flush=True)
    return data


def run(results_dir: Path, quick: bool = False) -> dict[str, Any]:
    """The bench part's entry point (``bench.run``)."""
    return run_bench(results_dir, quick=quick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.datapath", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny disks: checks the harness, measures nothing useful")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results directory (default {RESULTS})")
    parser.add_argument("--no-variants", action="store_true", help="skip the qemu-img variants")
    args = parser.parse_args(argv)
    run_bench(args.out, quick=args.quick, variants=not args.no_variants)
    print(f"wrote {args.out / (NAME + '.json')} and {args.out / (NAME + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
