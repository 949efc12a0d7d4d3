"""Fixtures of the fault matrix, and the matrix printed as a Markdown table at the end of the session.

``source``: a small real disk image (qcow2) uploaded to the session emulator, with the raw bytes a
volume must hold. ``profile``: one clean import run like the DAG runs it, cut into the steps'
windows of the emulator's request log: which OCI operations each step calls (this decides where a
fault applies). ``airflow_matrix``: the Airflow-backed rows, started in a child process by the
first test of this folder when any of them is selected (``airflowkit``). The table (rows faults,
columns steps) goes to the terminal summary, and to the file named by ``VDIMPORT_FAULT_MATRIX_MD``
when set.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faultkit
import pytest
from airflowkit import ROWS as AIRFLOW_ROWS
from airflowkit import AirflowMatrix
from faultkit import (
    OPTIONS,
    QUICK,
    Hooks,
    Profile,
    Source,
    assert_clean,
    build_image,
    new_run_id,
    operations_by_step,
    run_like_the_dag,
    upload,
)
from faultmatrix import STEP_LEVEL

from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.pipeline import step_environment

faultkit.ROWS[:] = [(fault.key, fault.label) for fault in STEP_LEVEL] + list(AIRFLOW_ROWS)


@pytest.fixture(scope="session")
def disk_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    return build_image(tmp_path_factory.mktemp("fault-matrix-image"))


@pytest.fixture(scope="session")
def source(emulator: EmulatorHandle, disk_image: tuple[Path, bytes]) -> Source:
    image, expected = disk_image
    return Source(upload(emulator, image, "faults/disk.qcow2", OPTIONS), expected, image)


@pytest.fixture(scope="session")
def profile(emulator: EmulatorHandle, source: Source) -> Profile:
    """The operations each step calls, from one clean import (which must itself be clean)."""
    emulator.clear_faults()
    emulator.configure(lifecycle_seconds=0.0)
    windows: list[tuple[str, float, float]] = []
    started: dict[str, float] = {}

    def before(step: str, state: dict[str, Any]) -> None:
        started[step] = time.time()

    def after(step: str) -> None:
        windows.append((step, started[step], time.time()))

    run_id = new_run_id("profile")
    outcome = run_like_the_dag(emulator, run_id, source.request, step_environment(emulator, QUICK), Hooks(before, after))
    assert outcome.succeeded and outcome.retries() == 0, f"the clean import failed at {outcome.failed_step}: {outcome.cause}"
    assert_clean(emulator, run_id, True, source.expected, outcome.state["report"])
    found = operations_by_step(emulator, windows)
    faultkit.PROFILE.clear()
    faultkit.PROFILE.update(found)
    return found


@pytest.fixture(scope="session")
def airflow_matrix(tmp_path_factory: pytest.TempPathFactory, disk_image: tuple[Path, bytes]) -> Iterator[AirflowMatrix]:
    matrix = AirflowMatrix(tmp_path_factory.mktemp("fault-matrix-airflow"), disk_image[0])
    yield matrix
    matrix.close()


@pytest.fixture(scope="session", autouse=True)
def _airflow_rows_early(request: pytest.FixtureRequest) -> None:
    """Start the Airflow rows with the first test here, so that they run alongside the step-level cells."""
    if any(item.path.name == "test_fault_matrix_airflow.py" for item in request.session.items):
        request.getfixturevalue("airflow_matrix")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not faultkit.RESULTS:
        return
    tally = faultkit.counts()
    names = {"ok": "ok", "fail": "clean failures", "n/a": "n/a", "FAILED": "TEST FAILURES"}
    lines = [
        f"{len(faultkit.RESULTS)} cells run: " + ", ".join(f"{n} {names.get(status, status)}" for status, n in sorted(tally.items())),
        "",
        *faultkit.render(),
    ]
    profile = faultkit.render_profile()
    if profile:
        lines += ["", *profile]
    terminalreporter.write_sep("=", "fault matrix")
    for line in lines:
        terminalreporter.write_line(line)
    target = os.environ.get("VDIMPORT_FAULT_MATRIX_MD")
    if target:
        Path(target).write_text("\n".join(lines) + "\n")
