"""The faults of the matrix: where each applies, how it is injected, and what the import must do.

Applicability is decided from ``Profile``: the operations each step called in one clean import,
read from the emulator's request log (``faultkit.operations_by_step``), so a step that starts or
stops calling an operation moves in or out of a row by itself. Every fault is armed right before
its step's first attempt and removed after the step's last attempt; retries of the faulted step
meet what is left of it (a burst of three errors, a rule that hits once, a persistent one).

What each row injects (through the emulator's fault rules, ``local/vdimport_local/emulator/faults.py``):

* 429 bursts: three 429s in a row on every operation the step calls.
* 500/503: a 500, then a 503, on every operation the step calls.
* capacity: "Out of host capacity" (500) on every launch in the planned AD; "LimitExceeded" (400)
  on every CreateVolume (a volume quota that a retry cannot fix).
* Run Command timeout: the step's next Run Command ends TIMED_OUT.
* worker terminated: the worker VM is terminated out of band (host failure, a person in the
  console) while the step's script runs on it, or while its main call is in flight.
* attach failure: the attachment goes ATTACHING -> DETACHED, as OCI shows an attach that failed.
* detach hang: the attachment stays DETACHING until the VM is terminated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from faultkit import (
    RUN_COMMAND,
    DagOutcome,
    Profile,
    Watcher,
    api_operations,
    assert_one_line,
    run_resources,
    wait_for,
)
from vdimport_dag.steps import STEP_ORDER

from vdimport_local.emulator.client import EmulatorHandle

MUTATING = ("Launch", "Create", "Attach", "Detach", "Terminate", "Update", "Delete")
CAPACITY = "Out of host capacity."
VOLUME_LIMIT = "The following service limits were exceeded: volume-count-per-ad"
DETACH_TIMEOUT_SECONDS = 1


@dataclass
class Expect:
    ok: bool
    retried_step: int | None = None  # the faulted step must have been retried exactly this often
    failed_at: str | None = None  # for a failure: the step that fails (default: the faulted one)
    cause: tuple[str, ...] = ()  # for a failure: words the cause must contain


@dataclass
class Injection:
    """One cell's fault, armed at its step: the rules it added and the watchers it started."""

    emu: EmulatorHandle
    run_id: str
    step: str
    profile: Profile
    state: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: list[int] = field(default_factory=list)
    watchers: list[Watcher] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0
    hits: int = 0
    facts: dict[str, Any] = field(default_factory=dict)

    def fault(self, operation: str, **spec: Any) -> int:
        rule = self.emu.fault(operation, **spec)
        self.rules.append(rule)
        return rule

    def instance_id(self) -> str:
        launched = self.state.get("launch_worker")
        if launched:
            return str(launched["instance_id"])
        found = run_resources(self.emu, self.run_id, "instance")
        assert found, "no worker VM of the run exists"
        return str(found[0]["id"])

    def terminate_worker_vm(self) -> None:
        """Out of band, as a host failure or a person in the console would."""
        if "launch_worker" not in self.state:  # the launch is being answered: wait for the instance
            wait_for(lambda: bool(run_resources(self.emu, self.run_id, "instance")), "the worker VM to exist", timeout=30)
        self.emu.admin("POST", f"instances/{self.instance_id()}/terminate")

    def disarm(self) -> None:
        self.ended = time.time()
        for watcher in self.watchers:
            watcher.join(cancel=True)
        rules = {r["id"]: r["hits"] for r in self.emu.admin("GET", "faults")}
        self.hits = sum(rules.get(rule, 0) for rule in self.rules)
        self.emu.clear_faults()

    def served(self, status: int) -> int:
        """Errors with ``status`` the emulator answered during the faulted step."""
        return len([c for c in self.emu.calls() if self.started <= c["time"] < self.ended and c["status"] == status])


class Fault:
    key = ""
    label = ""
    env: dict[str, str] = {}
    workers = 1  # worker VMs the run may make in all (each terminated at the end)

    def not_applicable(self, step: str, profile: Profile) -> str | None:
        """Why the fault cannot happen at ``step`` (None: it can)."""
        raise NotImplementedError

    def arm(self, inj: Injection) -> None:
        raise NotImplementedError

    def expect(self, step: str, profile: Profile) -> Expect:
        return Expect(ok=True)

    def check(self, inj: Injection, outcome: DagOutcome) -> str:
        """Cell-specific assertions once the import ended; returns a note for the table."""
        return ""


class Bursts(Fault):
    """Throttling or transient server errors on every call of the step: the SDK retries them."""

    def __init__(self, key: str, label: str, statuses: tuple[int, ...]):
        self.key, self.label, self.statuses = key, label, statuses

    def not_applicable(self, step: str, profile: Profile) -> str | None:
        return None if api_operations(profile[step]) else "the step calls no OCI API"

    def arm(self, inj: Injection) -> None:
        for operation in api_operations(inj.profile[inj.step]):
            for nth, status in enumerate(self.statuses, 1):
                inj.fault(operation, status=status, nth=nth)

    def check(self, inj: Injection, outcome: DagOutcome) -> str:
        served = sum(inj.served(status) for status in set(self.statuses))
        assert served >= 1, "no injected error was answered during the step"
        return f"SDK retried {served}x {'/'.join(str(s) for s in dict.fromkeys(self.statuses))}"


class Capacity(Fault):
    key = "capacity"
    label = "capacity / limit errors"

    def not_applicable(self, step: str, profile: Profile) -> str | None:
        ops = profile[step]
        return None if "LaunchInstance" in ops or "CreateVolume" in ops else "the step allocates no capacity"

    def arm(self, inj: Injection) -> None:
        ops = inj.profile[inj.step]
        if "LaunchInstance" in ops:
            planned = inj.state["inspect_object"]["plan"]["availability_domain"]
            inj.facts["planned_ad"] = planned
            where = {"availabilityDomain": planned}
            inj.fault("LaunchInstance", status=500, code="InternalError", message=CAPACITY, times=1000, match=where)
        if "CreateVolume" in ops:
            inj.fault("CreateVolume", status=400, code="LimitExceeded", message=VOLUME_LIMIT, times=1000)

    def expect(self, step: str, profile: Profile) -> Expect:
        if "LaunchInstance" in profile[step]:
            return Expect(ok=True)  # another availability domain
        return Expect(ok=False, cause=("LimitExceeded",))

    def check(self, inj: Injection, outcome: DagOutcome) -> str:
        if "planned_ad" not in inj.facts:
            return ""
        worker_ad = outcome.state["launch_worker"]["availability_domain"]
        assert worker_ad != inj.facts["planned_ad"], "the worker was launched where there is no capacity"
        assert outcome.state["create_volume"]["availability_domain"] == worker_ad, "the volume is not where the worker is"
        return f"launched in AD {worker_ad[-1]}"


class RunCommandTimeout(Fault):
    key = "runcommand-timeout"
    label = "Run Command timeout"

    def not_applicable(self, step: str, profile: Profile) -> str | None:
        return None if RUN_COMMAND in profile[step] else "the step runs no command on the worker"

    def arm(self, inj: Injection) -> None:
        inj.fault(RUN_COMMAND, action="timeout")

    def expect(self, step: str, profile: Profile) -> Expect:
        return Expect(ok=True, retried_step=1)


class WorkerTerminated(Fault):
    key = "worker-terminated"
    label = "worker VM terminated mid-step"

    def not_applicable(self, step: str, profile: Profile) -> str | None:
        launch = next(s for s in STEP_ORDER if "LaunchInstance" in profile[s])
        terminate = next(s for s in STEP_ORDER if "TerminateInstance" in profile[s])
        inside = STEP_ORDER.index(launch) <= STEP_ORDER.index(step) <= STEP_ORDER.index(terminate)
        return None if inside else "no worker VM exists during the step"

    def arm(self, inj: Injection) -> None:
        ops = inj.profile[inj.step]
        if RUN_COMMAND in ops:
            rule = inj.fault(RUN_COMMAND, action="hang")  # the script runs (IN_PROGRESS) until the VM goes
        else:
            operation = next(op for op in ops if op.startswith(MUTATING))
            rule = inj.fault(operation, action="hang", seconds=0.5)  # the call is in flight when the VM goes
        inj.watchers.append(Watcher(inj.emu, rule, inj.terminate_worker_vm))

    workers = 2  # the lost one and the one the run resumes with

    def expect(self, step: str, profile: Profile) -> Expect:
        # The import resumes: the step that needed the lost worker fails once (or a later step
        # finds its result stale), and the retry launches a fresh worker, downloads again onto it
        # and attaches the volume to it (StepContext.need). Exactly one volume results.
        return Expect(ok=True)

    def check(self, inj: Injection, outcome: DagOutcome) -> str:
        assert inj.watchers and inj.watchers[0].fired.is_set(), "the worker VM was not terminated"
        return ""


class AttachFailure(Fault):
    key = "attach-failure"
    label = "attach failure"

    def not_applicable(self, step: str, profile: Profile) -> str | None:
        return None if "AttachVolume" in profile[step] else "the step attaches nothing"

    def arm(self, inj: Injection) -> None:
        inj.fault("AttachVolume", action="stall", seconds=0.2, state="DETACHED")

    def expect(self, step: str, profile: Profile) -> Expect:
        return Expect(ok=True, retried_step=1)


class DetachHang(Fault):
    key = "detach-hang"
    label = "detach hang"
    env = {"VDIMPORT_DETACH_TIMEOUT_SECONDS": str(DETACH_TIMEOUT_SECONDS)}  # the step's deadline, shortened

    def not_applicable(self, step: str, profile: Profile) -> str | None:
        return None if "DetachVolume" in profile[step] else "the step detaches nothing"

    def arm(self, inj: Injection) -> None:
        inj.fault("DetachVolume", action="stall")  # DETACHING until the worker is terminated

    def expect(self, step: str, profile: Profile) -> Expect:
        return Expect(ok=False, cause=("detaching volume", f"still not done after {DETACH_TIMEOUT_SECONDS} s"))

    def check(self, inj: Injection, outcome: DagOutcome) -> str:
        cleanup = outcome.state.get("terminate_worker") or {}
        assert cleanup.get("volumes_deleted"), "cleanup did not delete the volume whose detach never finished"
        return ""


STEP_LEVEL: list[Fault] = [
    Bursts("429", "429 bursts", (429, 429, 429)),
    Bursts("5xx", "500/503", (500, 503)),
    Capacity(),
    RunCommandTimeout(),
    WorkerTerminated(),
    AttachFailure(),
    DetachHang(),
]


def check_expectation(fault: Fault, step: str, profile: Profile, outcome: DagOutcome) -> None:
    expect = fault.expect(step, profile)
    if expect.ok:
        assert outcome.succeeded, f"expected the import to succeed; {outcome.failed_step} failed: {outcome.cause}"
        if expect.retried_step is not None:
            assert outcome.retries(step) == expect.retried_step, f"{step} retried {outcome.retries(step)}x, not {expect.retried_step}x"
        return
    assert not outcome.succeeded, "expected a clean failure, the import succeeded"
    if expect.failed_at != "*":
        assert outcome.failed_step == (expect.failed_at or step), f"failed at {outcome.failed_step}, not {expect.failed_at or step}"
    cause = assert_one_line(outcome.cause)
    for word in expect.cause:
        assert word in cause, f"the cause does not say {word!r}: {cause}"
