"""Hostile and broken inputs through the whole local pipeline: upload -> event -> function -> DAG.

One local stack serves the module (``vdimport-local up`` in a private home, ``down`` at the
end). The corpus (``securitykit``: images, object names, metadata) is built at test time and
uploaded all at once; the pipeline runs its DAG runs side by side and each case's test then
reads its outcome, the answer ``vdimport-local import --json`` gives. Every case must end where
it says (refused by the function, failed at a named step, or imported) with a one-line cause
naming the problem, and leave nothing behind. The hostile images point at a host file full of a
random marker that must be on no volume; names and metadata carry shell syntax that would
create a canary file if anything ran it. Crafted events go straight to the function's invoke
endpoint and must start no run. Last: the emulator holds no instance, attachment or PAR and
only the successful imports' volumes, and ``down`` leaves no process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oci
import pytest
from hostilekit import Host, file_contains, make_host
from runkit import of_run
from securitykit import (
    CASES,
    EVENT_CASES,
    FUNCTION,
    SUCCESS,
    TIMINGS,
    Case,
    EventCase,
    EventContext,
    Outcome,
    canaries_found,
    canary,
    invoke,
    one_line,
    record,
    run_corpus,
)
from stackkit import cli, stack_processes

from vdimport_local import procs
from vdimport_local.airflow import free_port
from vdimport_local.diskimages import Partition, build_disk, sample_files
from vdimport_local.pipeline import STEP_ORDER
from vdimport_local.stack import DAG_ID, LocalStack
from vdimport_worker.naming import RUN_TAG

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

CORPUS_TIMEOUT = 600.0
MAX_WORKER_VMS = 8  # concurrent DAG runs (most of the corpus fails at its first step)
BEFORE_VOLUME = STEP_ORDER.index("create_volume")


@dataclass
class Local:
    home: Path
    workdir: Path
    host: Host

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return cli(self.home, *args, timeout=timeout)

    @property
    def stack(self) -> LocalStack:
        return LocalStack(self.home)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    workdir = tmp_path_factory.mktemp("security")
    disk = build_disk(workdir / "disk.raw", [Partition("ext4", 16, sample_files(seed=9, size=1 << 20))], table="gpt")
    env = Local(workdir / "home", workdir, make_host(workdir, disk))
    began = time.monotonic()
    started = env.run(
        "up", "--lifecycle-seconds", "0.2", "--airflow-port", str(free_port()), "--max-worker-vms", str(MAX_WORKER_VMS), timeout=400
    )
    TIMINGS["up"] = time.monotonic() - began
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        # A volume that cleanup deletes keeps its bytes (in volumes/deleted/) for the marker scan.
        assert env.stack.emulator().configure(keep_deleted_volume_files=True)["keep_deleted_volume_files"] is True
        yield env
    finally:
        env.run("down")


def _selected(request: pytest.FixtureRequest) -> list[Case]:
    """The cases whose tests will run (all of them unless ``-k`` narrowed the module)."""
    wanted = {
        getattr(item, "callspec").params["case"].id  # noqa: B009 - only parametrized items have one
        for item in request.session.items
        if getattr(item, "module", None) is request.module and "case" in getattr(getattr(item, "callspec", None), "params", {})
    }
    return [case for case in CASES if case.id in wanted] or list(CASES)


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest, local: Local) -> Iterator[dict[str, Outcome]]:
    began = time.monotonic()
    try:
        corpus = run_corpus(local.stack, _selected(request), local.host, local.workdir / "corpus", CORPUS_TIMEOUT)
        TIMINGS["corpus"] = time.monotonic() - began
        yield corpus
    finally:
        for found in canaries_found():  # a failed run's evidence must not outlive it in /tmp
            Path(found).unlink()


@dataclass
class Emulated:
    """The emulator's view after the corpus: resources by kind and the CreateVolume calls."""

    resources: dict[str, list[dict[str, Any]]]
    create_volume_tokens: list[str]

    def of_run(self, kind: str, run_id: str) -> list[dict[str, Any]]:
        return of_run(self.resources[kind], run_id)


@pytest.fixture(scope="module")
def emulated(local: Local, outcomes: dict[str, Outcome]) -> Emulated:
    emulator = local.stack.emulator()
    kinds = ("instance", "volume", "volumeattachment", "par")
    return Emulated(
        {kind: emulator.resources(kind) for kind in kinds},
        [str(c.get("retryToken") or "") for c in emulator.calls("CreateVolume")],
    )


def _expected(case: Case) -> str:
    if case.where == SUCCESS:
        return "imported; the volume holds the image's bytes"
    return "refused by the function" if case.where == FUNCTION else f"fails at `{case.where}`"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_upload(case: Case, outcomes: dict[str, Outcome], emulated: Emulated, local: Local) -> None:
    """User-visible: the upload ends where the case says, with one line naming the cause; a
    refused image made no volume; a failed run left no worker, PAR, attachment or volume; an
    accepted one holds exactly the image's bytes; nothing in the name or metadata ran."""
    outcome = outcomes[case.id]
    result = outcome.result
    error = result.get("error")
    report = result.get("report") or {}
    actual = error or f"imported: {result.get('source_format')} -> {result.get('volume_size_gb')} GB volume {report.get('volume_name')!r}"
    row = record(case.group, case.id, case.what, _expected(case), actual)
    row.passed = False

    assert not [c for c in canaries_found() if c.startswith(canary(case.id))], "the name or a metadata value was executed"
    assert outcome.where == case.where, f"expected {case.where}, got {outcome.where}: {error}"
    run_id = result.get("dag_run_id")
    if case.where == SUCCESS:
        assert error is None
        _assert_volume_holds(case, outcome, local)
    else:
        assert isinstance(error, str) and one_line(error), f"the cause is not one line: {error!r}"
        assert "Traceback" not in error and "internal error" not in error, error
        assert re.search(case.cause, error), f"the cause does not say /{case.cause}/: {error}"
        if case.where == FUNCTION:
            assert run_id is None
            assert error.startswith("not imported: the function skipped the upload: ")
        else:
            assert error.startswith(f"{case.where}: ")
            states = {s["name"]: s["state"] for s in result["steps"]}
            assert all(states[s] == "success" for s in STEP_ORDER[: STEP_ORDER.index(case.where)] if s != "terminate_worker"), states
    if run_id is not None:
        _assert_nothing_left(case, run_id, emulated)
    row.passed = True


def _assert_volume_holds(case: Case, outcome: Outcome, local: Local) -> None:
    assert case.expected_bytes is not None
    expected = case.expected_bytes(local.host, outcome.image)
    path = Path(outcome.result["volume_path"])
    with open(path, "rb") as f:
        assert f.read(len(expected)) == expected, f"{path}: the volume does not hold the image's bytes"
    report = outcome.result["report"]
    assert report["source"]["object"] == case.object_name()
    assert report["checks"]["verify"] == "identical"


def _assert_nothing_left(case: Case, run_id: str, emulated: Emulated) -> None:
    instances = emulated.of_run("instance", run_id)
    assert all(i["lifecycleState"] == "TERMINATED" for i in instances), [(i["id"], i["lifecycleState"]) for i in instances]
    prefixes = tuple(f"vdimport-{r['freeformTags'][RUN_TAG]}" for kind in ("instance", "volume") for r in emulated.of_run(kind, run_id))
    assert not [p["name"] for p in emulated.resources["par"] if prefixes and str(p.get("name", "")).startswith(prefixes)], "a PAR is left"
    volumes = [v for v in emulated.of_run("volume", run_id) if v["lifecycleState"] not in ("TERMINATING", "TERMINATED")]
    mine = {i["id"] for i in instances} | {v["id"] for v in emulated.of_run("volume", run_id)}
    attached = [
        a["id"]
        for a in emulated.resources["volumeattachment"]
        if (a.get("instanceId") in mine or a.get("volumeId") in mine) and a.get("lifecycleState") in ("ATTACHING", "ATTACHED", "DETACHING")
    ]
    assert not attached, f"live attachments left: {attached}"
    if case.where == SUCCESS:
        assert len(volumes) == 1, volumes
        return
    assert not volumes, f"a failed run left volumes: {[v['id'] for v in volumes]}"
    if STEP_ORDER.index(case.where) < BEFORE_VOLUME:
        assert not [t for t in emulated.create_volume_tokens if prefixes and t.startswith(prefixes)], "a refused image got a volume created"


# --- events straight to the function ----------------------------------------------------------
@dataclass
class EventRun:
    answers: dict[str, tuple[int, Any]]
    runs_before: dict[str, str]
    runs_after: dict[str, str]
    volumes_before: int
    volumes_after: int
    replayed_run: str


def _runs(local: Local) -> dict[str, str]:
    reply = local.stack.airflow().api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")
    return {r["dag_run_id"]: r["state"] for r in reply.get("dag_runs", [])}


def _live_volumes(local: Local) -> int:
    return len([v for v in local.stack.emulator().resources("volume") if v["lifecycleState"] not in ("TERMINATING", "TERMINATED")])


def _real_event(local: Local, outcome: Outcome) -> dict[str, Any]:
    obj = outcome.uploaded
    assert obj is not None
    for event in local.stack.emulator().admin("GET", "events"):
        data = event.get("data", {})
        if data.get("resourceName") == obj.name and data.get("additionalDetails", {}).get("eTag") == obj.etag:
            return dict(event)
    raise AssertionError(f"no createobject event for {obj.name}")


@pytest.fixture(scope="module")
def events(local: Local, outcomes: dict[str, Outcome]) -> EventRun:
    """Every crafted event posted once, after the corpus (the replays need its imports)."""
    imported = outcomes.get("name-shell-syntax") or next((o for o in outcomes.values() if o.where == SUCCESS), None)
    skipped = outcomes.get("empty-object") or next((o for o in outcomes.values() if o.where == FUNCTION), None)
    if imported is None or imported.where != SUCCESS or skipped is None or skipped.where != FUNCTION:
        return EventRun({}, {}, {}, 0, 0, "")  # -k left no import and no skipped upload to replay: test_event skips
    state = local.stack.state() or {}
    ctx = EventContext(state["namespace"], state["bucket"], _real_event(local, imported), _real_event(local, skipped))
    runs_before, volumes_before = _runs(local), _live_volumes(local)
    began = time.monotonic()
    answers = {case.id: invoke(state["function_url"], case.payload(ctx)) for case in EVENT_CASES}
    TIMINGS["events"] = time.monotonic() - began
    return EventRun(answers, runs_before, _runs(local), volumes_before, _live_volumes(local), str(imported.result["dag_run_id"]))


@pytest.mark.parametrize("case", EVENT_CASES, ids=[c.id for c in EVENT_CASES])
def test_event(case: EventCase, events: EventRun) -> None:
    """User-visible: the function answers (200, so Events does not redeliver) with its decision
    and a one-line reason, and no DAG run or volume appears; a replay names the existing run."""
    if case.id not in events.answers:
        pytest.skip("the selected corpus holds no imported and no skipped upload whose events could be replayed")
    status, answer = events.answers[case.id]
    reason = answer.get("reason") if isinstance(answer, dict) else None
    decision = answer.get("decision") if isinstance(answer, dict) else None
    row = record("event", case.id, case.what, f"function: {case.decision}", f"HTTP {status} {decision}: {reason or answer}")
    row.passed = False

    assert status == 200, answer
    assert decision == case.decision, answer
    assert one_line(reason), f"the reason is not one line: {reason!r}"
    assert re.search(case.reason, str(reason)), reason
    assert events.runs_after == events.runs_before, "an event started a DAG run"
    assert events.volumes_after == events.volumes_before
    if case.decision == "duplicate":
        assert answer["dag_run_id"] == events.replayed_run
    row.passed = True


# --- after everything ----------------------------------------------------------------------------
def test_no_host_byte_on_any_volume(local: Local, outcomes: dict[str, Outcome]) -> None:
    """User-visible: no volume the emulator ever held (any run, any state, deleted ones too) contains the host file's marker."""
    emulator = local.stack.emulator()
    files = {p for p in (emulator.data_dir / "volumes").rglob("*") if p.is_file()}
    assert len(files) >= len([o for o in outcomes.values() if o.result["state"] == "success"])
    leaked = sorted(p.name for p in files if file_contains(p, local.host.marker))
    assert not leaked, f"host bytes reached volumes: {leaked}"


def test_marker_scan_is_not_vacuous(tmp_path: Path, local: Local) -> None:
    sparse = tmp_path / "volume.img"
    with open(sparse, "wb") as f:
        f.truncate(1 << 30)
        f.seek(512 << 20)
        f.write(b"x" * ((8 << 20) - 10) + local.host.marker + b"y" * 4096)
    assert file_contains(sparse, local.host.marker)


def test_a_deleted_volume_is_still_scanned(local: Local) -> None:
    """The scan's premise: a volume deleted by cleanup (say after a failed verify) keeps its bytes
    in volumes/deleted/, so host bytes written to it and then "cleaned up" are still found."""
    emulator = local.stack.emulator()
    blockstorage = emulator.client(oci.core.BlockstorageClient)
    ad = emulator.client(oci.identity.IdentityClient).list_availability_domains(emulator.tenancy).data[0].name
    details = oci.core.models.CreateVolumeDetails(
        availability_domain=ad, compartment_id=emulator.tenancy, size_in_gbs=50, display_name="scan-premise"
    )
    volume = blockstorage.create_volume(details).data
    needle = b"SCAN-PREMISE-" + os.urandom(16).hex().encode()  # not the marker: this volume is the test's own
    path = Path(emulator.admin("GET", f"volumes/{volume.id}")["path"])
    with open(path, "r+b") as f:
        f.seek(3 << 30)
        f.write(needle)
    blockstorage.delete_volume(volume.id)
    deleted = [p for p in (emulator.data_dir / "volumes").rglob("*") if p.is_file() and file_contains(p, needle)]
    assert [p.parent.name for p in deleted] == ["deleted"] and not path.exists()


def test_nothing_was_executed(outcomes: dict[str, Outcome], events: EventRun) -> None:
    """No name, metadata key or value, or event field ran: no canary file exists anywhere it could land."""
    found = canaries_found()
    assert not found, f"user input was executed: {found}"


def test_nothing_left_in_the_emulator(local: Local, outcomes: dict[str, Outcome], events: EventRun) -> None:
    """User-visible (``vdimport-local status --json``): no instance, attachment or PAR alive, and
    exactly the successful imports' volumes."""
    done = local.run("status", "--json")
    assert done.returncode == 0, done.stderr
    resources = json.loads(done.stdout)["resources"]
    assert resources["instances"] == [] and resources["attachments"] == [] and resources["pars"] == [], resources
    imported = {o.result["volume_id"] for o in outcomes.values() if o.result["state"] == "success"}
    assert {v["id"] for v in resources["volumes"]} == imported


def test_down_leaves_nothing_running(local: Local) -> None:
    """Last: ``down`` stops every process of the stack (by PID and by command line)."""
    state = json.loads((local.home / "stack.json").read_text())
    recorded = {pid: start for pid, start in state["processes"].values()}
    everything = {**procs.tree(recorded), **local.stack.airflow().process_tree()}
    done = local.run("down")
    assert done.returncode == 0, done.stderr
    assert [pid for pid, start in everything.items() if procs.alive(pid, start)] == []
    assert stack_processes(local.home) == []
