"""The fault matrix's machinery: run an import the way the DAG does, check what it left, print the table.

``run_like_the_dag`` runs the steps in-process (``run_step_in_process``) with the DAG's own
semantics, read from ``dags/vdimport_dag`` (step order, the cleanup step's trigger rule, the
retry counts of ``DagSettings``): each step is retried up to ``step_retries`` times
(``cleanup_retries`` for cleanup) with no delay, exit 3 (rejected) is never retried, cleanup
runs once ``inspect_object`` succeeded whatever happened after it, and the steps after cleanup
run only when every VM step and cleanup succeeded. Hooks let a fault arm itself right before
its step's first attempt and disarm after its last.

``assert_clean`` is what every cell must end with, success or failure: every worker VM of the
run TERMINATED (at most one ever launched) with its VNIC gone, no live volume attachment, no
PAR, at most one volume ever created (no duplicate) and no volume left that is not a checked
import; on success exactly one AVAILABLE volume, marked verified, holding the image's raw
bytes, the one the report names.

``RESULTS`` collects one ``Cell`` per (fault, step); ``conftest.py`` prints them as a table.
"""

from __future__ import annotations

import itertools
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import oci

from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.pipeline import StepRun, run_step_in_process
from vdimport_worker.cli import EXIT_REJECTED

REPO = Path(__file__).resolve().parents[2]
for folder in (REPO / "dags", REPO / "tests"):  # the DAG's helpers (as Airflow puts dags/ on sys.path), runkit
    if str(folder) not in sys.path:  # also when airflowkit runs as a script of its own
        sys.path.insert(0, str(folder))

from runkit import run_commands, run_pars, run_resources  # noqa: E402, F401 - re-exported
from vdimport_dag.settings import DagSettings  # noqa: E402 - needs dags/ on sys.path
from vdimport_dag.steps import CLEANUP_STEP, LAST_VM_STEP, LAUNCH_STEP, STEP_ORDER  # noqa: E402

DAG = DagSettings()  # the defaults the DAG runs with: step_retries, cleanup_retries
BUCKET = "vdimport-fault-matrix"
OPTIONS = {"backup_policy": "bronze"}  # so that assign_backup_policy has work to do
# The steps' environment besides the emulator's: the SDK's back-off and the pollers' longest
# interval shortened (what the emulator answers in milliseconds, OCI takes seconds for).
QUICK = {"VDIMPORT_RETRY_BASE_SECONDS": "0.02", "VDIMPORT_POLL_MAX_SECONDS": "0.1"}
LIVE_ATTACHMENT = ("ATTACHING", "ATTACHED", "DETACHING")
GONE_VOLUME = ("TERMINATING", "TERMINATED")
# The tag on a checked volume: detach_volume sets "verified", report "delivered".
STATE_TAG, CHECKED = "vdimport-state", ("verified", "delivered")
RUN_COMMAND = "RunCommand"  # the emulator's pseudo-operation: a script running on the worker VM

# --- the image and its upload ---------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    request: dict[str, Any]  # the import request (the DAG run conf) for the uploaded image
    expected: bytes  # qemu-img convert -O raw of the image: what a volume must hold
    image: Path


def build_image(work: Path) -> tuple[Path, bytes]:
    """A small GPT disk (ext4 with files, vfat) as qcow2, and its raw bytes."""
    from vdimport_local.diskimages import Partition, build_disk, convert, raw_bytes

    files = {"etc/hostname": b"vdimport-faults\n", "data.bin": bytes(range(256)) * 256}
    raw = build_disk(work / "disk.raw", [Partition("ext4", 16, files), Partition("vfat", 8)], table="gpt")
    image = convert(raw, "qcow2", work / "disk.qcow2")
    raw.unlink()
    return image, raw_bytes(image, "qcow2")


def upload(emu: EmulatorHandle, image: Path, name: str, metadata: dict[str, str] | None = None, bucket: str = BUCKET) -> dict[str, Any]:
    """Put ``image`` into ``bucket`` (created when missing) with object ``metadata`` (import
    options); the request the OCI Function would send for it."""
    storage = emu.client(oci.object_storage.ObjectStorageClient)
    namespace = storage.get_namespace().data
    try:
        storage.create_bucket(namespace, oci.object_storage.models.CreateBucketDetails(name=bucket, compartment_id=emu.tenancy))
    except oci.exceptions.ServiceError as exc:
        if exc.status != 409:
            raise
    reply = storage.put_object(namespace, bucket, name, image.read_bytes(), opc_meta=metadata or {})
    return {"namespace": namespace, "bucket": bucket, "object": name, "etag": reply.headers["etag"], "size": image.stat().st_size}


_numbers = itertools.count(1)


def new_run_id(label: str) -> str:
    return f"faults__{label}__{time.time_ns() % 10**9}_{next(_numbers)}"


# --- what each step calls -----------------------------------------------------------------

Profile = dict[str, tuple[str, ...]]  # step -> the operations it called, in first-call order


def operations_by_step(emu: EmulatorHandle, windows: Iterable[tuple[str, float, float]]) -> Profile:
    """The emulator's request log cut into the steps' time windows; ``RunCommand`` added where a
    step created a Run Command (the script the worker VM runs is what that fault hits)."""
    calls = emu.calls()
    profile: Profile = {}
    for step, start, end in windows:
        seen: list[str] = []
        for call in calls:
            if start <= call["time"] < end and call["operation"] not in seen:
                seen.append(call["operation"])
        if "CreateInstanceAgentCommand" in seen:
            seen.append(RUN_COMMAND)
        profile[step] = tuple(seen)
    return profile


def api_operations(operations: Iterable[str]) -> list[str]:
    return [op for op in operations if op != RUN_COMMAND]


# --- the DAG's semantics, in-process ------------------------------------------------------


@dataclass
class Attempt:
    step: str
    try_number: int
    exit_code: int
    cause: str | None
    seconds: float
    output: str


@dataclass
class DagOutcome:
    run_id: str
    state: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    failed_step: str | None = None
    cause: str | None = None
    cleanup_ran: bool = False

    @property
    def succeeded(self) -> bool:
        return self.failed_step is None and "report" in self.state

    def retries(self, step: str | None = None) -> int:
        """Failed attempts that were tried again (of ``step``, or of every step)."""
        tries: dict[str, int] = {}
        for attempt in self.attempts:
            tries[attempt.step] = tries.get(attempt.step, 0) + 1
        return sum(n - 1 for s, n in tries.items() if step in (None, s))

    def last(self, step: str) -> Attempt | None:
        found = [a for a in self.attempts if a.step == step]
        return found[-1] if found else None


@dataclass
class Hooks:
    """Called around each step: ``before(step)`` ahead of its first attempt, ``after(step)``
    once it succeeded or ran out of tries; ``env(step)`` adds to the step's environment."""

    before: Callable[[str, dict[str, dict[str, Any]]], None] = lambda step, state: None
    after: Callable[[str], None] = lambda step: None
    env: Callable[[str], dict[str, str]] = lambda step: {}


def run_like_the_dag(
    emu: EmulatorHandle, run_id: str, request: dict[str, Any], env: dict[str, str], hooks: Hooks | None = None
) -> DagOutcome:
    hooks = hooks or Hooks()
    outcome = DagOutcome(run_id)

    def attempt(step: str) -> bool:
        retries = DAG.cleanup_retries if step == CLEANUP_STEP else DAG.step_retries
        upstream = {s: outcome.state[s] for s in STEP_ORDER[: STEP_ORDER.index(step)] if s in outcome.state}
        hooks.before(step, outcome.state)
        try:
            for try_number in range(1, retries + 2):
                run: StepRun = run_step_in_process(step, run_id, request, upstream, {**env, **hooks.env(step)})
                cause = None if run.exit_code == 0 else run.cause
                outcome.attempts.append(Attempt(step, try_number, run.exit_code, cause, run.seconds, run.output))
                if run.exit_code == 0:
                    outcome.state[step] = run.result or {}
                    return True
                if run.exit_code == EXIT_REJECTED:
                    break  # the DAG fails a rejected step at once
            return False
        finally:
            hooks.after(step)

    vm_steps = STEP_ORDER[: STEP_ORDER.index(LAST_VM_STEP) + 1]
    for step in vm_steps:
        if not attempt(step):
            outcome.failed_step = step
            break
    if LAUNCH_STEP in outcome.state:  # the teardown's ALL_DONE_SETUP_SUCCESS: its setup, launch_worker, succeeded
        outcome.cleanup_ran = True
        if not attempt(CLEANUP_STEP) and outcome.failed_step is None:
            outcome.failed_step = CLEANUP_STEP
    if outcome.failed_step is None:
        for step in STEP_ORDER[STEP_ORDER.index(CLEANUP_STEP) + 1 :]:
            if not attempt(step):
                outcome.failed_step = step
                break
    if outcome.failed_step is not None:
        last = outcome.last(outcome.failed_step)
        outcome.cause = last.cause if last else None
    return outcome


# --- what a run must leave behind ---------------------------------------------------------


def assert_one_line(cause: str | None) -> str:
    assert cause, "a failure without a cause"
    assert "\n" not in cause and "Traceback" not in cause, f"not a one-line cause: {cause!r}"
    assert "internal error" not in cause, f"an unexpected exception, not a cause: {cause}"
    return cause


def volume_bytes_equal(emu: EmulatorHandle, volume_id: str, expected: bytes) -> bool:
    path = Path(emu.admin("GET", f"volumes/{volume_id}")["path"])
    with open(path, "rb") as f:
        return f.read(len(expected)) == expected


def assert_clean(
    emu: EmulatorHandle, run_id: str, succeeded: bool, expected: bytes, report: dict[str, Any] | None = None, workers: int = 1
) -> str | None:
    """Nothing leaked and nothing duplicated (at most ``workers`` worker VMs); returns the run's volume on success."""
    instances = run_resources(emu, run_id, "instance")
    alive = [(i["id"], i["lifecycleState"]) for i in instances if i["lifecycleState"] != "TERMINATED"]
    assert not alive, f"worker VMs not terminated: {alive}"
    assert len(instances) <= workers, f"duplicate worker VMs: {[i['id'] for i in instances]}"
    vnic_attachments = [a for a in emu.resources("vnicattachment") if a.get("instanceId") in {i["id"] for i in instances}]
    vnics = {a["vnicId"] for a in vnic_attachments}
    left = [(a["id"], a["lifecycleState"]) for a in vnic_attachments if a["lifecycleState"] != "DETACHED"]
    left += [(v["id"], v["lifecycleState"]) for v in emu.resources("vnic") if v["id"] in vnics and v["lifecycleState"] != "TERMINATED"]
    assert not left, f"the worker's network interfaces are still there: {left}"
    pars = run_pars(emu, run_id)
    assert not pars, f"pre-authenticated requests left: {[p.get('name') for p in pars]}"
    volumes = run_resources(emu, run_id, "volume")
    mine = {i["id"] for i in instances} | {v["id"] for v in volumes}
    attachments = [
        (a["id"], a["lifecycleState"])
        for a in emu.resources("volumeattachment")
        if (a.get("instanceId") in mine or a.get("volumeId") in mine) and a.get("lifecycleState") in LIVE_ATTACHMENT
    ]
    assert not attachments, f"live volume attachments left: {attachments}"
    assert len(volumes) <= 1, f"duplicate volumes: {[(v['id'], v['lifecycleState']) for v in volumes]}"
    live = [v for v in volumes if v["lifecycleState"] not in GONE_VOLUME]
    unchecked = [v["id"] for v in live if (v.get("freeformTags") or {}).get(STATE_TAG) not in CHECKED]
    assert not unchecked, f"volumes left that are not a checked import (half-written?): {unchecked}"
    for volume in live:
        assert volume["lifecycleState"] == "AVAILABLE", (volume["id"], volume["lifecycleState"])
        assert volume_bytes_equal(emu, volume["id"], expected), f"volume {volume['id']} does not hold the image's bytes"
    if not succeeded:
        return None
    assert len(live) == 1, f"a successful import must leave exactly one volume, found {[v['id'] for v in live]}"
    if report is not None:
        assert report.get("volume_id") == live[0]["id"], "the report names another volume than the one the run made"
    return str(live[0]["id"])


# --- faults in the background -------------------------------------------------------------


def fault_hits(emu: EmulatorHandle, rule_id: int) -> int:
    for rule in emu.admin("GET", "faults"):
        if rule["id"] == rule_id:
            return int(rule["hits"])
    return 0


class Cancelled(Exception):
    """A background wait was called off (its cell is over)."""


def wait_for(
    condition: Callable[[], bool], what: str, timeout: float = 60.0, interval: float = 0.02, stop: threading.Event | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if stop is not None and stop.is_set():
            raise Cancelled(what)
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class Background:
    """``target(stop)`` in a thread; ``join()`` re-raises what it raised; ``fired`` once it returned.
    ``join(cancel=True)`` sets ``stop`` first: a wait of ``target`` on it ends quietly."""

    def __init__(self, target: Callable[[threading.Event], None], name: str = "fault"):
        self.errors: list[BaseException] = []
        self.fired = threading.Event()
        self.stop = threading.Event()

        def run() -> None:
            try:
                target(self.stop)
                self.fired.set()
            except Cancelled:
                pass
            except BaseException as exc:
                self.errors.append(exc)

        self._thread = threading.Thread(target=run, daemon=True, name=name)
        self._thread.start()

    def join(self, timeout: float = 130.0, cancel: bool = False) -> None:
        if cancel:
            self.stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"{self._thread.name} did not finish"
        if self.errors:
            raise self.errors[0]


class Watcher(Background):
    """``action()`` in a thread once fault rule ``rule_id`` has hit."""

    def __init__(self, emu: EmulatorHandle, rule_id: int, action: Callable[[], None], timeout: float = 120.0):
        def target(stop: threading.Event) -> None:
            wait_for(lambda: fault_hits(emu, rule_id) >= 1, f"fault {rule_id} to hit", timeout, stop=stop)
            action()

        super().__init__(target, name=f"fault-{rule_id}")


# --- the table ----------------------------------------------------------------------------


@dataclass
class Cell:
    fault: str
    step: str
    status: str  # ok | fail | n/a
    text: str  # what the table shows
    cause: str | None = None  # a clean failure's one-line cause (a footnote)
    seconds: float = 0.0


RESULTS: dict[tuple[str, str], Cell] = {}
ROWS: list[tuple[str, str]] = []  # (key, label) of every fault, in table order
NOT_RUN: dict[tuple[str, str], str] = {}  # cells deliberately not run, and why (a short mark)
NOTES: list[str] = []  # printed under the table
PROFILE: Profile = {}


def record(cell: Cell) -> None:
    RESULTS[(cell.fault, cell.step)] = cell


def success_text(outcome: DagOutcome, extra: str = "") -> str:
    retried = outcome.retries()
    parts = [f"task retried {retried}x"] if retried else []
    if extra:
        parts.append(extra)
    return "ok" + (f" ({', '.join(parts)})" if parts else "")


_REQUEST_ID = re.compile(r" \(opc-request-id [^)]*\)")
_OCID = re.compile(r"ocid1\.[a-z]+\.[a-z0-9]*\.[a-z0-9-]*\.[A-Za-z0-9._-]+")


def short(cause: str, limit: int = 160) -> str:
    """A cause for the table: OCIDs and request ids (different in every run) left out."""
    text = _OCID.sub("…", _REQUEST_ID.sub("", cause)).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(steps: Iterable[str] = STEP_ORDER) -> list[str]:
    """The matrix as Markdown lines: rows faults, columns steps, footnotes for the failures' causes."""
    steps = list(steps)
    lines = ["| fault \\ step | " + " | ".join(f"`{s}`" for s in steps) + " |", "|---|" + "---|" * len(steps)]
    footnotes: list[str] = []
    for key, label in ROWS:
        cells = []
        for step in steps:
            cell = RESULTS.get((key, step))
            if cell is None:
                cells.append(NOT_RUN.get((key, step), "not run"))
            elif cell.status == "fail":
                footnotes.append(f"{cell.step}, {label}: {short(cell.cause or '')}")
                cells.append(f"{cell.text} [{len(footnotes)}]")
            else:
                cells.append(cell.text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if footnotes:
        lines.append("")
        lines += [f"[{n}] {text}" for n, text in enumerate(footnotes, 1)]
    if NOTES:
        lines.append("")
        lines += NOTES
    return lines


def render_profile() -> list[str]:
    if not PROFILE:
        return []
    lines = ["| step | OCI operations (from the emulator's request log of one clean import) |", "|---|---|"]
    lines += [f"| `{step}` | {', '.join(ops) or '(none)'} |" for step, ops in PROFILE.items()]
    return lines


def counts() -> dict[str, int]:
    tally: dict[str, int] = {}
    for cell in RESULTS.values():
        tally[cell.status] = tally.get(cell.status, 0) + 1
    return tally
