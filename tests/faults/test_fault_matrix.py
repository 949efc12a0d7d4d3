"""The fault matrix at the step-runner level: every fault at every step where it can happen.

Each cell is one import of a small real disk image, run like the DAG runs it (``faultkit.
run_like_the_dag``: retries without delay, no retry after a rejection, cleanup whatever happened),
with the fault armed at its step. Each cell must end in success (one checked volume holding the
image's bytes) or a clean failure (a one-line cause, no volume left), and in both cases with every
worker VM terminated, no attachment, no PAR and no duplicate VM or volume (``faultkit.assert_clean``).
A cell is "n/a" only where the step makes none of the calls the fault hits (``faultmatrix``).
"""

from __future__ import annotations

import time

import pytest
from faultkit import QUICK, Cell, Hooks, Profile, Source, assert_clean, new_run_id, record, run_like_the_dag, success_text
from faultmatrix import STEP_LEVEL, Fault, Injection, check_expectation
from vdimport_dag.steps import CLEANUP_STEP, LAUNCH_STEP, STEP_ORDER

from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.pipeline import step_environment

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("step", STEP_ORDER)
@pytest.mark.parametrize("fault", STEP_LEVEL, ids=lambda fault: fault.key)
def test_fault_at_step_ends_cleanly(emu: EmulatorHandle, source: Source, profile: Profile, fault: Fault, step: str) -> None:
    reason = fault.not_applicable(step, profile)
    if reason:
        record(Cell(fault.key, step, "n/a", "n/a", cause=reason))
        return
    run_id = new_run_id(f"{fault.key}-{step}")
    injection = Injection(emu, run_id, step, profile)

    def before(current: str, state: dict[str, dict[str, object]]) -> None:
        if current == step:
            injection.state = state
            injection.started = time.time()
            fault.arm(injection)

    def after(current: str) -> None:
        if current == step:
            injection.disarm()

    env = step_environment(emu, {**QUICK, **fault.env})
    started = time.monotonic()
    outcome = run_like_the_dag(emu, run_id, source.request, env, Hooks(before, after))
    seconds = time.monotonic() - started
    try:
        assert injection.hits >= 1, "the fault never hit: the cell tested nothing"
        check_expectation(fault, step, profile, outcome)
        note = fault.check(injection, outcome)
        if outcome.failed_step is not None and LAUNCH_STEP in outcome.state:  # the teardown ran
            cleanup = outcome.last(CLEANUP_STEP)
            assert cleanup is not None and cleanup.exit_code == 0, f"cleanup did not succeed: {cleanup and cleanup.cause}"
        assert_clean(emu, run_id, outcome.succeeded, source.expected, outcome.state.get("report"), workers=fault.workers)
    except AssertionError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "assertion failed"
        record(Cell(fault.key, step, "FAILED", f"**TEST FAILED**: {first}", outcome.cause, seconds))
        raise
    if outcome.succeeded:
        record(Cell(fault.key, step, "ok", success_text(outcome, note), None, seconds))
    else:
        where = "" if outcome.failed_step == step else f" at {outcome.failed_step}"
        record(Cell(fault.key, step, "fail", f"clean fail{where}", outcome.cause, seconds))
