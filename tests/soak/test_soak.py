"""Concurrency soak (issue 9): N uploads at once through the whole local pipeline.

``vdimport-local up`` with a cap of worker VMs, the step tasks' pool resized to that cap,
then N distinct disk images (qcow2, streamOptimized vmdk, vhdx, vhd and raw in turn, each with
its own random content, some uploaded multipart) uploaded at the same moment by N
``vdimport-local import --wait --json`` processes, as N users would. The checks:

- every upload became a successful run, and no step needed a retry (a flaky step shows here);
- exactly N volumes exist, one per run (by the run's result and by the run's tag on the
  volume), none shared, each holding exactly its own image's ``qemu-img convert -O raw``
  bytes (sha256 over the virtual size): crosstalk between runs would show;
- no worker VM, attachment or pre-authenticated request is left;
- at no moment were more worker VMs alive (the emulator's launch and TERMINATED times) than
  the DAG's ``max_active_runs``, nor more step tasks running (the task instances' start and
  end dates) than their pool's slots; and both limits were reached, else the soak proved
  nothing about concurrency;
- nothing of the stack survives ``down``.

The limits are read back from the running Airflow (the DAG's ``max_active_runs``, the tasks'
pool and its slots), not assumed. Knobs: ``VDIMPORT_SOAK_COUNT`` (default 5, what CI runs;
``make soak`` runs 20), ``VDIMPORT_SOAK_MAX_VMS`` (default: ``vdimport-local up``'s) and
``VDIMPORT_SOAK_POOL_SLOTS``. Local mode's step tasks run in ``default_pool``, whose 128 slots
nothing here could fill, so the soak resizes it (REST API, as an operator would) to the VM
cap by default: a run has one step task at a time, so a pool smaller than the VM cap starves
the run furthest behind before its launch (tasks of runs further along go first), and the VM
cap is then reached only by luck; equal, both limits are reached.
The tables (summary, per run, per step) are printed at the end of the session.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from stackkit import cli, stack_processes

from vdimport_local import procs
from vdimport_local.airflow import LocalAirflow, free_port
from vdimport_local.diskimages import FORMATS, Partition, build_disk, convert, raw_bytes, sample_files
from vdimport_local.pipeline import STEP_ORDER
from vdimport_local.stack import DAG_ID, LocalStack, UpOptions
from vdimport_worker.naming import DAG_RUN_TAG

COUNT = int(os.environ.get("VDIMPORT_SOAK_COUNT") or 5)
MAX_VMS = int(os.environ.get("VDIMPORT_SOAK_MAX_VMS") or UpOptions().max_worker_vms)
POOL_SLOTS = int(os.environ.get("VDIMPORT_SOAK_POOL_SLOTS") or MAX_VMS)
IMPORT_TIMEOUT = 600 + 60 * COUNT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(IMPORT_TIMEOUT + 600)]

MIB = 1 << 20
# (diskimages format, file suffix); cycled over the uploads
KINDS = (("qcow2", "qcow2"), ("vmdk-stream", "vmdk"), ("vhdx", "vhdx"), ("vhd", "vhd"), ("raw", "raw"))
GONE = ("TERMINATING", "TERMINATED", "DETACHING", "DETACHED")


@dataclass
class Disk:
    index: int
    fmt: str
    image: Path
    virtual_size: int  # of the image's raw conversion
    sha256: str  # of the image's raw conversion
    args: list[str]  # extra `import` arguments

    @property
    def name(self) -> str:
        return self.image.name


@dataclass
class Soak:
    home: Path
    workdir: Path
    airflow: LocalAirflow
    pool: str
    pool_slots: int
    max_vms: int
    disks: list[Disk] = field(default_factory=list)

    @property
    def stack(self) -> LocalStack:
        return LocalStack(self.home)

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return cli(self.home, *args, timeout=timeout)


def _build_disk(workdir: Path, index: int) -> Disk:
    """A small disk with content of its own: GPT or MBR, ext4 with random files, sometimes a vfat."""
    fmt, suffix = KINDS[index % len(KINDS)]
    payload_mib = 2 + index % 4
    partitions = [Partition("ext4", 10 + payload_mib + 4 * (index % 3), sample_files(seed=9100 + index, size=payload_mib * MIB))]
    if index % 2:
        partitions.append(Partition("vfat", 4, {"DISK.TXT": f"soak disk {index}\r\n".encode() + os.urandom(64 << 10)}))
    raw = build_disk(workdir / f"src-{index:02d}.raw", partitions, table="gpt" if index % 2 == 0 else "dos")
    image = workdir / f"soak-{index:02d}.{suffix}"
    if fmt == "raw":
        raw.rename(image)
    else:
        convert(raw, fmt, image)
        raw.unlink()
    expected = raw_bytes(image, FORMATS[fmt][0])
    args = ["--meta", f"ad_number={index % 3 + 1}", "--meta", "fsck=strict", "--meta", f"volume_name=soak-{index:02d}"]
    if index % 3 == 2:
        args += ["--part-size-mib", "4"]  # these go up as multipart uploads
    return Disk(index, fmt, image, len(expected), hashlib.sha256(expected).hexdigest(), args)


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Soak]:
    workdir = tmp_path_factory.mktemp("soak")
    home = workdir / "home"
    up = cli(home, "up", "--lifecycle-seconds", "0.2", "--max-worker-vms", str(MAX_VMS), "--airflow-port", str(free_port()), timeout=600)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        airflow = LocalStack(home).airflow()
        # The step tasks' pool, as the DAG configures it, sized as an operator would (REST API).
        pools = {t["pool"] for t in airflow.api("GET", f"/api/v2/dags/{DAG_ID}/tasks")["tasks"]}
        assert len(pools) == 1, f"the step tasks are in several pools: {pools}"
        [pool] = pools
        airflow.set_pool(pool, POOL_SLOTS)
        slots = int(airflow.api("GET", f"/api/v2/pools/{pool}")["slots"])
        max_vms = int(airflow.api("GET", f"/api/v2/dags/{DAG_ID}/details")["max_active_runs"])
        assert max_vms == MAX_VMS, f"up --max-worker-vms {MAX_VMS} did not reach the DAG (max_active_runs {max_vms})"
        env = Soak(home, workdir, airflow, pool, slots, max_vms)
        with ThreadPoolExecutor(max_workers=2) as builders:
            env.disks = list(builders.map(lambda i: _build_disk(workdir, i), range(COUNT)))
        yield env
    finally:
        cli(home, "down")


def _epoch(stamp: str | None) -> float | None:
    return datetime.fromisoformat(stamp).timestamp() if stamp else None


def _peak(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one moment; an interval ending when another starts does not overlap it."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = current = 0
    for _, delta in events:
        current += delta
        most = max(most, current)
    return most


def _sha256_prefix(path: Path, length: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        left = length
        while left > 0:
            chunk = f.read(min(left, 4 * MIB))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def _short(ocid: str | None) -> str:
    return f"…{ocid[-10:]}" if ocid else "-"


def _seconds(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def test_uploads_at_once_are_all_imported_without_crosstalk_within_the_limits(soak: Soak, soak_report: list[str]) -> None:
    # --- N uploads at the same moment, N users following their import ----------------------
    started = time.time()
    running = []
    for disk in soak.disks:
        out = open(soak.workdir / f"import-{disk.index:02d}.json", "w")  # noqa: SIM115 - closed below
        err = open(soak.workdir / f"import-{disk.index:02d}.log", "w")  # noqa: SIM115 - closed below
        command = [sys.executable, "-m", "vdimport_local.cli", "--home", str(soak.home), "import", str(disk.image), "--wait", "--json"]
        process = subprocess.Popen([*command, "--timeout", str(IMPORT_TIMEOUT), *disk.args], stdout=out, stderr=err, text=True)
        running.append((disk, process, out, err))
    codes: dict[int, int] = {}
    finished: dict[int, float] = {}
    deadline = time.monotonic() + IMPORT_TIMEOUT + 120
    for disk, process, out, err in running:
        try:
            codes[disk.index] = process.wait(max(1.0, deadline - time.monotonic()))
        finally:
            out.close()
            err.close()
        finished[disk.index] = time.time()
    wall = max(finished.values()) - started

    results: dict[int, dict[str, Any]] = {}
    for disk in soak.disks:
        text = (soak.workdir / f"import-{disk.index:02d}.json").read_text()
        try:
            results[disk.index] = json.loads(text)
        except ValueError:
            log = (soak.workdir / f"import-{disk.index:02d}.log").read_text()[-3000:]
            raise AssertionError(f"{disk.name}: import printed no JSON (exit {codes[disk.index]}):\n{text}\n{log}") from None

    # --- what happened, from Airflow and the emulator ----------------------------------------
    airflow, emulator = soak.airflow, soak.stack.emulator()
    runs: dict[int, dict[str, Any]] = {}
    tasks: dict[int, dict[str, dict[str, Any]]] = {}
    for index, result in results.items():
        if result.get("dag_run_id"):
            runs[index] = airflow.dag_run(DAG_ID, result["dag_run_id"])
            tasks[index] = airflow.task_instances(DAG_ID, result["dag_run_id"])
    task_intervals: list[tuple[float, float]] = []
    for instances in tasks.values():
        for ti in instances.values():
            start, end = _epoch(ti.get("start_date")), _epoch(ti.get("end_date"))
            if start is not None:
                task_intervals.append((start, end if end is not None else float("inf")))
    peak_tasks = _peak(task_intervals)

    history = emulator.history("instance")
    launched = {e["id"]: float(e["time"]) for e in history if e["event"] == "created"}
    ended: dict[str, float] = {}
    for event in history:
        if event["id"] in launched and (event["state"] == "TERMINATED" or event["event"] == "removed"):
            ended.setdefault(event["id"], float(event["time"]))
    peak_vms = _peak([(at, ended.get(iid, float("inf"))) for iid, at in launched.items()])

    volumes = {v["id"]: v for v in emulator.resources("volume") if v.get("lifecycleState") not in GONE}
    status = soak.cli("status", "--json")
    leftovers = json.loads(status.stdout).get("resources", {}) if status.returncode == 0 else {}

    hashes: dict[int, str | None] = {}
    for disk in soak.disks:
        path = results[disk.index].get("volume_path")
        hashes[disk.index] = _sha256_prefix(Path(path), disk.virtual_size) if path else None

    # --- the tables (before the checks, so a failed soak still shows them) -------------------
    retries = sum(int(ti.get("try_number") or 0) > 1 for instances in tasks.values() for ti in instances.values())
    per_run = [
        "| # | object | format | image MiB | virtual MiB | AD | queued s | steps s | write_image s | total s | volume | bytes |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|---|---|",
    ]
    step_seconds: dict[str, list[float]] = {step: [] for step in STEP_ORDER}
    for disk in soak.disks:
        result, run = results[disk.index], runs.get(disk.index, {})
        queued_at, start, end = _epoch(run.get("queued_at")), _epoch(run.get("start_date")), _epoch(run.get("end_date"))
        durations = {s["name"]: s["seconds"] for s in result.get("steps") or [] if isinstance(s.get("seconds"), int | float)}
        for step, seconds in durations.items():
            step_seconds[step].append(float(seconds))
        ad = str(result.get("availability_domain") or "-").rsplit("-", 1)[-1]
        per_run.append(
            f"| {disk.index + 1} | {disk.name} | {result.get('source_format') or disk.fmt} | {disk.image.stat().st_size / MIB:.1f} "
            f"| {disk.virtual_size / MIB:.1f} | {ad} | {_seconds(start - queued_at if start and queued_at else None)} "
            f"| {sum(durations.values()):.1f} | {_seconds(durations.get('write_image'))} "
            f"| {_seconds(end - queued_at if end and queued_at else None)} | {_short(result.get('volume_id'))} "
            f"| {'own image' if hashes[disk.index] == disk.sha256 else 'MISMATCH'} |"
        )
    per_step = ["| step | min s | median s | max s |", "|---|---:|---:|---:|"]
    for step, values in step_seconds.items():
        if values:
            per_step.append(f"| {step} | {min(values):.1f} | {statistics.median(values):.1f} | {max(values):.1f} |")
    succeeded = sum(r.get("state") == "success" for r in results.values())
    left = {kind: len(leftovers.get(kind, [])) for kind in ("instances", "attachments", "pars")}
    summary = [
        "| soak | value |",
        "|---|---|",
        f"| uploads at once | {COUNT} ({', '.join(sorted({d.fmt for d in soak.disks}))}) |",
        f"| imported | {succeeded} of {COUNT}; {len(volumes)} volumes, each with its own image's bytes: "
        f"{sum(hashes[d.index] == d.sha256 for d in soak.disks)} |",
        f"| wall time (first upload to last import done) | {wall:.0f} s |",
        f"| peak worker VMs alive | {peak_vms} (cap `max_active_runs` = {soak.max_vms}) |",
        f"| peak step tasks running | {peak_tasks} (pool `{soak.pool}` = {soak.pool_slots} slots) |",
        f"| task retries | {retries} |",
        f"| left in the emulator | {left['instances']} instances, {left['attachments']} attachments, {left['pars']} PARs |",
    ]
    soak_report.extend(["\n".join(summary), "\n".join(per_run), "\n".join(per_step)])

    # --- the checks ---------------------------------------------------------------------------
    for disk in soak.disks:
        result = results[disk.index]
        assert codes[disk.index] == 0 and result["state"] == "success", (disk.name, result.get("error"))
        assert runs[disk.index]["state"] == "success"
        assert {ti["state"] for ti in tasks[disk.index].values()} == {"success"}, (disk.name, tasks[disk.index])
        assert result["virtual_size"] == disk.virtual_size, disk.name
    assert retries == 0, "a step needed a retry: " + ", ".join(
        f"{results[i]['object']['name']}:{t}" for i, ts in tasks.items() for t, ti in ts.items() if int(ti.get("try_number") or 0) > 1
    )
    dag_runs = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=1000")
    assert dag_runs["total_entries"] == COUNT, "one DAG run per upload"

    # one volume per run, by the run's result and by the volume's own tags; nothing shared
    volume_ids = [results[d.index]["volume_id"] for d in soak.disks]
    assert len(set(volume_ids)) == COUNT, "two runs reported the same volume"
    assert set(volumes) == set(volume_ids), f"volumes that no run reported: {set(volumes) - set(volume_ids)}"
    assert len({results[d.index]["volume_path"] for d in soak.disks}) == COUNT, "two volumes share a backing file"
    for disk in soak.disks:
        result = results[disk.index]
        volume = volumes[result["volume_id"]]
        assert volume["freeformTags"][DAG_RUN_TAG] == result["dag_run_id"], f"{disk.name}: the volume is tagged for another run"
        assert volume["displayName"] == f"soak-{disk.index:02d}"
        assert result["volume_path"] == emulator.admin("GET", f"volumes/{result['volume_id']}")["path"]
        assert hashes[disk.index] == disk.sha256, f"{disk.name}: its volume does not hold its image's bytes"

    # nothing left behind
    assert status.returncode == 0, status.stdout + status.stderr
    assert left == {"instances": 0, "attachments": 0, "pars": 0}, leftovers
    assert len(launched) == COUNT and set(ended) == set(launched), "one worker VM per run, all TERMINATED"

    # the limits held, and were reached
    assert peak_vms <= soak.max_vms, f"{peak_vms} worker VMs alive at once (cap {soak.max_vms})"
    assert peak_tasks <= soak.pool_slots, f"{peak_tasks} step tasks running at once (pool {soak.pool}: {soak.pool_slots} slots)"
    assert peak_vms == min(soak.max_vms, COUNT), f"the VM cap was never reached ({peak_vms} of {soak.max_vms}): no concurrency tested"
    assert peak_tasks == min(soak.pool_slots, COUNT), f"the pool was never full ({peak_tasks} of {soak.pool_slots}): no concurrency tested"


def test_down_leaves_nothing_running(soak: Soak) -> None:
    """After the soak, ``down`` stops every process of the stack (task and step subprocesses too)."""
    state = json.loads((soak.home / "stack.json").read_text())
    recorded = {pid: start for pid, start in state["processes"].values()}
    everything = {**procs.tree(recorded), **soak.airflow.process_tree()}
    done = soak.cli("down")
    assert done.returncode == 0 and "nothing left running" in done.stdout, done.stdout + done.stderr
    assert [pid for pid, start in everything.items() if procs.alive(pid, start)] == []
    assert stack_processes(soak.home) == []
