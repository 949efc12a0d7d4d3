"""The local step runner: a step as a subprocess of the Airflow worker instead of a pod.

Two ways to run it (``VDIMPORT_LOCAL_RUNNER``): ``subprocess``, the step runner package on this
machine, or ``container``, the step-runner image under podman as the pod runs it
(``containers.py``). Same CLI
(``vdimport-step <step> --run-id ... --request ... --state ...``), same environment
contract (the Airflow worker's environment without ``AIRFLOW*`` variables, plus an optional
ConfigMap-like ``KEY=VALUE`` file), same XCom (the result file the CLI writes to ``$VDIMPORT_RESULT_PATH`` becomes the
task's return value). The step's output goes line by line into the task log, and a failure
raises with the step's one-line cause (its last ``FAILED:`` line).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from .containers import remove, step_command
from .steps import EXIT_REJECTED

# Longer --request/--state values go through a file (the CLI accepts @file): one argv string
# may not exceed 128 KiB on Linux.
ARG_FILE_THRESHOLD = 32 * 1024
STOP_GRACE_SECONDS = 15.0


def resolve_command(setting: str = "") -> list[str]:
    """The step runner command: the setting (shell words), ``vdimport-step`` on PATH or next to
    this Python, else ``python -m vdimport_worker``."""
    if setting.strip():
        return shlex.split(setting)
    found = shutil.which("vdimport-step")
    if found:
        return [found]
    sibling = Path(sys.executable).parent / "vdimport-step"
    if sibling.exists():
        return [str(sibling)]
    return [sys.executable, "-m", "vdimport_worker"]


def read_env_file(path: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, optional quotes), the local stand-in for the ConfigMap."""
    env: dict[str, str] = {}
    if not path:
        return env
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise AirflowException(f"{path}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


class LocalStepOperator(BaseOperator):
    """Run one import step as ``vdimport-step`` in a subprocess; its result is the XCom."""

    template_fields: Sequence[str] = ("arguments", "labels")
    ui_color = "#d9ecf2"

    def __init__(
        self,
        *,
        step: str,
        arguments: list[str],
        labels: dict[str, str] | None = None,
        command: str = "",
        env_file: str = "",
        runner: str = "subprocess",
        image: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.step = step
        self.arguments = arguments
        self.labels = labels or {}
        self.command = command
        self.env_file = env_file
        self.runner = runner
        self.image = image
        self._process: subprocess.Popen[str] | None = None
        self._container: str | None = None

    def _arguments(self, workdir: Path) -> list[str]:
        argv = list(self.arguments)
        for index, value in enumerate(argv[:-1]):
            if value in ("--request", "--state") and len(argv[index + 1]) > ARG_FILE_THRESHOLD:
                spill = workdir / f"{value[2:]}.json"
                spill.write_text(argv[index + 1])
                argv[index + 1] = f"@{spill}"
        return argv

    def execute(self, context: Any) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix=f"vdimport-{self.step}-") as tmp:
            workdir = Path(tmp)
            result_path = workdir / "xcom" / "return.json"
            # The worker's environment without Airflow's own settings and credentials, as a pod has none.
            env = {k: v for k, v in os.environ.items() if not k.lstrip("_").startswith("AIRFLOW")}
            env.update(read_env_file(self.env_file))
            env.update({"VDIMPORT_RESULT_PATH": str(result_path), "PYTHONUNBUFFERED": "1"})
            arguments = self._arguments(workdir)
            if self.runner == "container":
                self._container = f"vdimport-{self.step.replace('_', '-')}-{uuid.uuid4().hex[:10]}"
                argv, env = step_command(self.image, self._container, arguments, env, workdir)
                self.log.info(
                    "Running %s %s in container %s of image %s (labels %s)",
                    self.step,
                    shlex.join(arguments[1:3]),
                    self._container,
                    self.image,
                    self.labels,
                )
            else:
                argv = resolve_command(self.command) + arguments
                self.log.info(
                    "Running %s as a local subprocess (labels %s)", shlex.join(argv[: len(argv) - len(arguments) + 3]), self.labels
                )
            tail: deque[str] = deque(maxlen=50)
            try:
                self._process = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    errors="replace",
                    start_new_session=True,  # its own process group, so stopping it stops its children too
                )
                assert self._process.stdout is not None
                for line in self._process.stdout:
                    line = line.rstrip("\n")
                    tail.append(line)
                    self.log.info("%s", line)
                code = self._process.wait()
            finally:
                self._stop()
                if self._process is not None and self._process.stdout is not None:
                    self._process.stdout.close()
            if code != 0:
                cause = next((line.split("FAILED: ", 1)[1] for line in reversed(tail) if "FAILED: " in line), None)
                if code == EXIT_REJECTED:  # the request or image is wrong: a retry would fail the same way
                    raise AirflowFailException(f"step {self.step} rejected the import (not retried): {cause or 'see the log above'}")
                raise AirflowException(f"step {self.step} failed (exit {code}): {cause or 'see the log above'}")
            if not result_path.exists():
                raise AirflowException(f"step {self.step} exited 0 but wrote no result to $VDIMPORT_RESULT_PATH")
            try:
                result = json.loads(result_path.read_text())
            except ValueError as exc:
                raise AirflowException(f"step {self.step} wrote a result that is not JSON: {exc}") from None
            if not isinstance(result, dict):
                raise AirflowException(f"step {self.step} wrote a result that is not a JSON object")
            return result

    def _stop(self) -> None:
        """Stop the step's process group (and its container) if it is still running (timeout, kill, crash)."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        if self._container:  # podman's client going away does not stop the container
            subprocess.run(remove(self._container), capture_output=True, timeout=60, check=False)
        self.log.warning("Stopping step %s (pid %s)", self.step, process.pid)
        for sig, wait in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def on_kill(self) -> None:
        self._stop()
