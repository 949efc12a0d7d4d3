"""The matrix rows that need a real Airflow: a step process killed, the scheduler restarted mid-task.

One Airflow 3 (api-server, scheduler with the LocalExecutor, dag-processor; the DAG with the local
step runner, retries without delay) and its own emulator. Each row is one DAG run, interrupted at
the steps where a lost or doubled attempt could do the most harm (``CHOSEN``):

* ``launch_worker``: a second VM (the killed attempt's launch still lands after it died);
* ``create_volume``: a second volume (same, for the create);
* ``write_image``: a second write over the volume, or a write abandoned half-way (the killed
  attempt's script keeps running on the worker; the retry must wait for it, not start another).

Step process killed: the ``vdimport-step`` process is SIGKILLed (an OOM kill, a pod deleted) while
the emulator holds its ``LaunchInstance``/``CreateVolume`` call, or while its write script is held
on the worker; Airflow retries the task and the retry must adopt what the dead attempt started.

Airflow restart: the scheduler and everything it runs (LocalExecutor workers, task supervisors,
task processes) is SIGKILLed mid-task, as a crashed scheduler pod or node would be, and started
again; the step process itself survives, as a step pod outlives the Airflow worker that watched
it. The new scheduler resets the orphaned task and runs it again while the old step process may
still be working: the two must converge on one VM, one volume, one write.

``AirflowMatrix`` does all of it in a child process started early in the session (the rows
run while the step-level cells do: most of an Airflow run is waiting); the e2e tests collect
its results.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faultkit
from faultkit import (
    OPTIONS,
    QUICK,
    Background,
    Cancelled,
    Cell,
    assert_clean,
    new_run_id,
    record,
    run_commands,
    run_resources,
    upload,
    wait_for,
)

from vdimport_local import procs
from vdimport_local.airflow import LocalAirflow
from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.pipeline import step_environment

DAG_ID = "virtual_disk_import"
DAGS = faultkit.REPO / "dags"
CHOSEN = ("launch_worker", "create_volume", "write_image")
WHY = {"launch_worker": "a second VM", "create_volume": "a second volume", "write_image": "a second or abandoned write"}
# What the emulator holds while the step is interrupted, and for how long: the write script long
# enough that the retry (seconds after a kill, after a scheduler restart about 15 s) meets it running.
HOLD = {"launch_worker": ("LaunchInstance", 3.0), "create_volume": ("CreateVolume", 3.0), "write_image": ("RunCommand", 10.0)}
HOLD_AFTER_RESTART = {**HOLD, "write_image": ("RunCommand", 25.0)}
# How the retry converged, from its task log (the step's own lines).
ADOPTED = {
    "launch_worker": (
        ("from an earlier attempt exists", "adopted the VM"),
        ("Launching worker", "replayed the launch: same retry token, same VM"),
    ),
    "create_volume": (
        ("from an earlier attempt exists", "adopted the volume"),
        ("Creating volume", "replayed the create: same retry token"),
    ),
    "write_image": (
        ("still running on the worker; waiting for it", "waited for the running write"),
        ("already succeeded on the worker; reusing its result", "reused the finished write"),
    ),
}
ROWS = (("step-killed", "step process killed (SIGKILL)"), ("worker-restart", "Airflow scheduler/worker restart mid-task"))
ENV = {
    "VDIMPORT_STEP_RUNNER": "local",
    "VDIMPORT_STEP_RETRIES": "2",
    "VDIMPORT_CLEANUP_RETRIES": "2",
    "VDIMPORT_STEP_RETRY_DELAY_SECONDS": "0",
    "VDIMPORT_MAX_WORKER_VMS": "2",
    **QUICK,
}
CONFIG = {
    "AIRFLOW__CORE__PARALLELISM": "8",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
    # A restarted scheduler resets the tasks of a scheduler job whose heartbeat is older than the
    # threshold (by default 30 s, checked every 300 s): seconds here, so a restart costs seconds.
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "10",
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "2",
}
RUN_TIMEOUT = 300.0

faultkit.NOT_RUN.update({("step-killed", step): "— †" for step in faultkit.STEP_ORDER if step not in CHOSEN})
faultkit.NOT_RUN.update({("worker-restart", step): "— ‡" for step in faultkit.STEP_ORDER if step not in CHOSEN})
faultkit.NOTES[:] = [
    "n/a: the step makes none of the calls the fault hits (decided from the request log of a clean import, table below).",
    "The first seven rows run at the step-runner level (the DAG's retry semantics, in-process); the last two in a real "
    f"Airflow 3, interrupted during {', '.join(CHOSEN)}: where a lost or doubled attempt could leave "
    + ", ".join(f"{WHY[s]} ({s})" for s in CHOSEN)
    + ".",
    "† every step is also killed mid-call and run again at the step level by tests/worker/test_idempotency.py.",
    "‡ a restart re-runs the task while the old step process may still run: the convergence the kill proves for every "
    "step, plus a concurrent twin; run where the twin could duplicate a VM, a volume or a write.",
]


@dataclass
class Stack:
    emu: EmulatorHandle
    airflow: LocalAirflow
    environment: dict[str, str]  # what the Airflow processes were started with (for a restart)
    image: Path
    expected: bytes


# --- processes ----------------------------------------------------------------------------


def _argv(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def step_processes(run_id: str, step: str | None = None) -> dict[int, int]:
    """The living ``vdimport-step`` processes of the run (of one step): pid -> start time."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            argv = _argv(int(entry.name))
            if b"--run-id" in argv and run_id.encode() in argv and (step is None or step.encode() in argv):
                started = procs.start_time(int(entry.name))
                if started:
                    found[int(entry.name)] = started
    return found


def restart_scheduler(stack: Stack, run_id: str) -> dict[int, int]:
    """SIGKILL the scheduler and all it runs except the run's step processes, then start it again.
    Returns the step processes left running (as step pods outlive their Airflow worker)."""
    pid, started = stack.airflow.processes["scheduler"]
    tree = procs.tree({pid: started})
    steps = step_processes(run_id)
    survivors = {p: s for p, s in tree.items() if p in steps}
    spared = {**survivors, **procs.descendants(survivors)}
    victims = {p: s for p, s in tree.items() if p not in spared}
    for victim, victim_started in victims.items():
        if procs.alive(victim, victim_started):
            procs.send(victim, signal.SIGKILL)
    stack.airflow._popen["scheduler"].wait(10)
    wait_for(lambda: not any(procs.alive(p, s) for p, s in victims.items()), "the killed Airflow processes to go", timeout=20)
    stack.airflow._spawn("scheduler", stack.environment)
    stack.airflow._save()
    return survivors


# --- one interrupted run ------------------------------------------------------------------


@dataclass
class Interruption:
    step: str
    operation: str
    rule: int = 0
    pids: dict[int, int] = field(default_factory=dict)  # the step processes it killed or left running
    background: Background | None = None
    how: str = ""  # how the retry converged


Act = Callable[[Stack, str, Interruption], None]


def kill_step(stack: Stack, run_id: str, interruption: Interruption) -> None:
    found = step_processes(run_id, interruption.step)
    assert len(found) == 1, f"expected one {interruption.step} process, found {sorted(found)}"
    for pid in found:
        os.kill(pid, signal.SIGKILL)
    interruption.pids = found


def restart(stack: Stack, run_id: str, interruption: Interruption) -> None:
    interruption.pids = restart_scheduler(stack, run_id)
    assert interruption.pids, f"no {interruption.step} process was running to survive the restart"


def interrupt(stack: Stack, run_id: str, step: str, act: Act) -> Interruption:
    """Once ``step``'s process runs, hold its main call (or its script) in the emulator and
    ``act`` while it is held. Armed only then, so the rule cannot catch another step's call."""
    operation, seconds = (HOLD_AFTER_RESTART if act is restart else HOLD)[step]
    interruption = Interruption(step, operation)

    def target(stop: threading.Event) -> None:
        wait_for(lambda: bool(step_processes(run_id, step)), f"{step} to start", timeout=RUN_TIMEOUT, stop=stop)
        interruption.rule = stack.emu.fault(operation, action="hang", seconds=seconds)
        wait_for(lambda: faultkit.fault_hits(stack.emu, interruption.rule) >= 1, f"{step}'s {operation}", timeout=60, stop=stop)
        act(stack, run_id, interruption)

    interruption.background = Background(target, name=f"interrupt-{step}")
    return interruption


def wait_for_run(stack: Stack, run_id: str, stop: threading.Event) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        run = stack.airflow.dag_run(DAG_ID, run_id)
        if run.get("state") in ("success", "failed"):
            return run
        if stop.is_set():
            raise Cancelled(run_id)
        assert time.monotonic() < deadline, f"run {run_id} still {run.get('state')} after {RUN_TIMEOUT:.0f} s"
        time.sleep(0.5)


def run_interrupted(stack: Stack, row: str, act: Act, stop: threading.Event) -> None:
    """One DAG run, interrupted by ``act`` at each ``CHOSEN`` step; records the row's cells."""
    stack.emu.clear_faults()
    conf = upload(stack.emu, stack.image, f"airflow/{row}.qcow2", OPTIONS)
    run_id = new_run_id(row)
    started = time.monotonic()
    interruptions = [interrupt(stack, run_id, step, act) for step in CHOSEN]  # waiting before the run starts
    try:
        stack.airflow.trigger(DAG_ID, conf, run_id=run_id)
        run = wait_for_run(stack, run_id, stop)
    finally:
        for interruption in interruptions:
            assert interruption.background is not None
            interruption.background.join(timeout=60, cancel=True)
        stack.emu.clear_faults()
    seconds = time.monotonic() - started
    tries = stack.airflow.task_instances(DAG_ID, run_id)
    try:
        assert run["state"] == "success", {t: (ti["state"], ti["try_number"]) for t, ti in tries.items()}
        for interruption in interruptions:
            background = interruption.background
            assert background is not None and background.fired.is_set(), f"{interruption.step} was not interrupted"
            ti = tries[interruption.step]
            assert ti["state"] == "success" and ti["try_number"] >= 2, (interruption.step, ti["state"], ti["try_number"])
            interruption.how = how_it_converged(stack, run_id, interruption.step, ti["try_number"])
        assert_clean(stack.emu, run_id, True, stack.expected, stack.airflow.xcom(DAG_ID, run_id, "report"))
        assert len(run_resources(stack.emu, run_id, "instance")) == 1, "not exactly one worker VM"
        assert len(run_resources(stack.emu, run_id, "volume")) == 1, "not exactly one volume"
        writes = run_commands(stack.emu, run_id, "write")
        assert len(writes) == 1, f"{len(writes)} write commands ran on the worker"
        # The killed or orphaned step processes are gone (a surviving one finishes its work and exits).
        left = {p: s for i in interruptions for p, s in i.pids.items()}
        wait_for(lambda: not any(procs.alive(p, s) for p, s in left.items()), "the interrupted step processes to exit", timeout=60)
        assert not step_processes(run_id), "step processes of the run are still running"
    except AssertionError as exc:
        for interruption in interruptions:
            record(Cell(row, interruption.step, "FAILED", f"**TEST FAILED**: {str(exc).splitlines()[0]}", None, seconds))
        raise
    for interruption in interruptions:
        held = "its script" if interruption.operation == "RunCommand" else interruption.operation
        how = interruption.how or "?"
        text = f"ok (task retried {tries[interruption.step]['try_number'] - 1}x; interrupted in {held}; {how})"
        record(Cell(row, interruption.step, "ok", text, None, seconds))


def how_it_converged(stack: Stack, run_id: str, step: str, try_number: int) -> str:
    """What the retry's log says it did with the interrupted attempt's work."""
    log = stack.airflow.task_log(DAG_ID, run_id, step, try_number)
    for needle, meaning in ADOPTED[step]:
        if needle in log:
            return meaning
    raise AssertionError(f"{step} try {try_number} neither adopted nor replayed the earlier attempt's work:\n{log[-3000:]}")


# --- the rows in a child process -----------------------------------------------------------
# A process, not a thread: the step-level cells run steps in-process, swapping os.environ,
# which other threads must not read meanwhile (urllib and requests do, for proxies).


class AirflowMatrix:
    """Parent side: runs this module as a child process doing the rows; ``result(row)`` waits for
    a row, records its cells here and re-raises its failure; ``close()`` stops the child."""

    def __init__(self, workdir: Path, image: Path):
        self.workdir = workdir
        self.log = workdir / "airflow-matrix.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, __file__, str(workdir), str(image)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def result(self, row: str, timeout: float = 2 * RUN_TIMEOUT + 240) -> None:
        path = self.workdir / f"{row}.json"
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.process.poll() is not None and not path.exists():
                raise AssertionError(f"the Airflow rows' process exited ({self.process.returncode}):\n{self._tail()}")
            assert time.monotonic() < deadline, f"the Airflow row {row} did not finish in {timeout:.0f} s"
            time.sleep(0.5)
        outcome = json.loads(path.read_text())
        for cell in outcome["cells"]:
            record(Cell(**cell))
        if outcome["error"]:
            raise AssertionError(f"Airflow row {row} failed:\n{outcome['error']}")

    def _tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # the child calls off its run and stops its stack
            try:
                self.process.wait(240)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def main(workdir: Path, image: Path) -> None:
    """Child side: start the stack, run the rows, write ``<row>.json`` for each; stop on SIGTERM
    or when the parent is gone."""
    from vdimport_local.diskimages import raw_bytes

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    parent = os.getppid()

    def orphaned() -> None:
        while not stop.wait(1.0):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=orphaned, daemon=True).start()
    rows = [row for row, _ in ROWS]
    emu = airflow = None
    try:
        expected = raw_bytes(image, "qcow2")
        emu = EmulatorHandle.start(workdir / "emulator")
        env = step_environment(emu, ENV)
        airflow = LocalAirflow.start(workdir / "airflow", dags_folder=DAGS, env=env, config=CONFIG, wait_for_dags=[DAG_ID])
        stack = Stack(emu, airflow, airflow._environment(DAGS.resolve(), env, CONFIG), image, expected)
        while rows and not stop.is_set():
            row = rows.pop(0)
            error = None
            try:
                run_interrupted(stack, row, ACTS[row], stop)
            except Cancelled:
                break
            except BaseException:
                error = traceback.format_exc()
            cells = [asdict(c) for (r, _), c in faultkit.RESULTS.items() if r == row]
            (workdir / f"{row}.json").write_text(json.dumps({"cells": cells, "error": error}))
    except BaseException:
        error = traceback.format_exc()
        for row in rows:
            (workdir / f"{row}.json").write_text(json.dumps({"cells": [], "error": error}))
    finally:
        if airflow is not None:
            airflow.stop()
        if emu is not None:
            emu.stop()


ACTS: dict[str, Act] = {"step-killed": kill_step, "worker-restart": restart}

if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
