"""Run an import's steps in order as ``vdimport-step`` subprocesses against the emulator.

The same CLI, environment contract and result files as the DAG's pods; used by the tests
and ``make demo`` where no Airflow runs. Like the DAG's teardown, a failure anywhere after the
worker launch succeeded still runs ``terminate_worker`` so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import oci

from vdimport_worker.steps import CLEANUP_STEP, STEP_NAMES

from .emulator.client import EmulatorHandle

STEP_ORDER: tuple[str, ...] = STEP_NAMES  # the step runner's order; the DAG keeps its own copy (tested equal)
LOCAL_SUBNET = "ocid1.subnet.oc1.iad.aaaavdimportlocal"
# Command output larger than Run Command's 1 KB of text (vdimport_worker/output.py): private,
# no object events, never an import bucket.
WORK_BUCKET = "vdimport-work"


def ensure_work_bucket(emulator: EmulatorHandle, name: str = WORK_BUCKET) -> None:
    """The work bucket in the emulator, created when missing (in OCI, Terraform makes it)."""
    storage = emulator.client(oci.object_storage.ObjectStorageClient)
    details = oci.object_storage.models.CreateBucketDetails(name=name, compartment_id=emulator.tenancy, object_events_enabled=False)
    try:
        storage.create_bucket(storage.get_namespace().data, details)
    except oci.exceptions.ServiceError as exc:
        if exc.status != 409:
            raise


def step_environment(emulator: EmulatorHandle, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment for local mode: API-key auth against the emulator, and the work
    bucket it names (made here, so that every environment names one that exists)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VDIMPORT_")}
    env.update(
        {
            "VDIMPORT_AUTH": "config_file",
            "VDIMPORT_OCI_CONFIG": str(emulator.config_path),
            "VDIMPORT_OCI_ENDPOINT": emulator.endpoint,
            "VDIMPORT_COMPARTMENT_ID": emulator.tenancy,
            "VDIMPORT_SUBNET_ID": LOCAL_SUBNET,
            "VDIMPORT_POLL_MAX_SECONDS": "0.5",
            "VDIMPORT_RETRY_BASE_SECONDS": "0.1",
            "VDIMPORT_WORK_BUCKET": WORK_BUCKET,
        }
    )
    env.update(extra or {})
    if env["VDIMPORT_WORK_BUCKET"]:
        ensure_work_bucket(emulator, env["VDIMPORT_WORK_BUCKET"])
    return env


@dataclass
class StepRun:
    name: str
    exit_code: int
    seconds: float
    output: str
    result: dict[str, Any] | None

    @property
    def cause(self) -> str:
        """The one-line cause a failed step logged last."""
        for line in reversed(self.output.splitlines()):
            if "FAILED: " in line:
                return line.split("FAILED: ", 1)[1]
        return f"{self.name} exited {self.exit_code}"


@dataclass
class ImportOutcome:
    run_id: str
    state: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[StepRun] = field(default_factory=list)
    failed_step: str | None = None
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.failed_step is None

    @property
    def report(self) -> dict[str, Any] | None:
        return self.state.get("report")


@contextlib.contextmanager
def _step_files(step: str, run_id: str, request: dict[str, Any], state: dict[str, Any]) -> Iterator[tuple[list[str], Path]]:
    """The CLI arguments of one step (state passed as a file) and where its result will be."""
    with tempfile.TemporaryDirectory(prefix="vdimport-step-") as tmp:
        state_path = Path(tmp) / "state.json"
        state_path.write_text(json.dumps(state))
        yield [step, "--run-id", run_id, "--request", json.dumps(request), "--state", f"@{state_path}"], Path(tmp) / "return.json"


def _result(code: int, result_path: Path) -> dict[str, Any] | None:
    return json.loads(result_path.read_text()) if code == 0 and result_path.exists() else None


def run_step(
    step: str,
    run_id: str,
    request: dict[str, Any],
    state: dict[str, Any],
    env: dict[str, str],
    on_output: Callable[[str], None] | None = None,
) -> StepRun:
    with _step_files(step, run_id, request, state) as (argv, result_path):
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "vdimport_worker", *argv],
            env={**env, "VDIMPORT_RESULT_PATH": str(result_path)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if on_output:
                on_output(line.rstrip("\n"))
        code = process.wait()
        return StepRun(step, code, time.monotonic() - started, "".join(lines), _result(code, result_path))


StepRunner = Callable[[str, str, dict[str, Any], dict[str, Any], dict[str, str], Callable[[str], None] | None], StepRun]


@contextlib.contextmanager
def _step_process_environment(env: dict[str, str]) -> Iterator[None]:
    """``env`` as this process's environment (``VDIMPORT_*`` replaced), and the root logger, restored after."""
    saved_env = dict(os.environ)
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    try:
        for key in [k for k in os.environ if k.startswith("VDIMPORT_")]:
            del os.environ[key]
        os.environ.update(env)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def run_step_in_process(
    step: str,
    run_id: str,
    request: dict[str, Any],
    state: dict[str, Any],
    env: dict[str, str],
    on_output: Callable[[str], None] | None = None,
) -> StepRun:
    """Like :func:`run_step`, but calling the same CLI entry point in this process.

    Saves the interpreter start-up and SDK import of a subprocess (about a second per step),
    which matters to test suites running hundreds of steps. The process environment is
    swapped for the duration of the call, so this is not thread-safe; a step that crashes
    the interpreter takes the caller with it. Use :func:`run_step` for anything but tests.
    """
    from vdimport_worker.cli import run as run_cli

    with _step_files(step, run_id, request, state) as (argv, result_path):
        buffer = io.StringIO()
        started = time.monotonic()
        with _step_process_environment({**env, "VDIMPORT_RESULT_PATH": str(result_path)}), contextlib.redirect_stdout(buffer):
            try:
                code = run_cli(argv)
            except SystemExit as exc:  # argparse rejected the arguments
                code = exc.code if isinstance(exc.code, int) else 2
        output = buffer.getvalue()
        if on_output:
            for line in output.splitlines():
                on_output(line)
        return StepRun(step, code, time.monotonic() - started, output, _result(code, result_path))


def run_import(
    emulator: EmulatorHandle,
    run_id: str,
    request: dict[str, Any],
    steps: Sequence[str] = STEP_ORDER,
    env: dict[str, str] | None = None,
    on_output: Callable[[str], None] | None = None,
    state: dict[str, dict[str, Any]] | None = None,
    runner: StepRunner = run_step,
) -> ImportOutcome:
    """Run ``steps`` in order; stop at the first failure, then clean up as the DAG would.

    ``runner`` runs one step: :func:`run_step` (a subprocess, as the DAG's pods) or
    :func:`run_step_in_process` (faster, for tests).
    """
    environment = env or step_environment(emulator)
    outcome = ImportOutcome(run_id, dict(state or {}))
    for step in steps:
        run = runner(step, run_id, request, outcome.state, environment, on_output)
        outcome.runs.append(run)
        if run.exit_code != 0:
            outcome.failed_step, outcome.error = step, run.cause
            # The DAG's teardown runs once its setup, launch_worker, succeeded (a failed launch
            # cleans up after itself).
            if "launch_worker" in outcome.state and step != CLEANUP_STEP and CLEANUP_STEP in steps:
                outcome.runs.append(runner(CLEANUP_STEP, run_id, request, outcome.state, environment, on_output))
            return outcome
        outcome.state[step] = run.result or {}
    return outcome
