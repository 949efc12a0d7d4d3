"""The local step runner: the same CLI as a subprocess, result file -> XCom, output -> task log."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from dagkit import FAKE_STEP
from vdimport_dag.local_runner import ARG_FILE_THRESHOLD, LocalStepOperator, read_env_file, resolve_command

FAKE_COMMAND = f"{sys.executable} {FAKE_STEP}"


def _operator(step: str = "write_image", state: str = "{}", **kwargs: Any) -> LocalStepOperator:
    arguments = [step, "--run-id", "run-1", "--request", json.dumps({"namespace": "ns", "object": "o"}), "--state", state]
    return LocalStepOperator(task_id=step, step=step, arguments=arguments, command=FAKE_COMMAND, **kwargs)


@pytest.fixture
def fake_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "fake-steps.jsonl"
    monkeypatch.setenv("FAKE_STEP_LOG", str(log))
    for key in ("FAKE_STEP_FAIL", "FAKE_STEP_REJECT", "FAKE_STEP_SLEEP"):
        monkeypatch.delenv(key, raising=False)
    return log


def _records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


class LogLines:
    """Stands in for the operator's logger and keeps what goes to the task log."""

    def __init__(self, operator: LocalStepOperator):
        self.lines: list[str] = []
        for attribute in ("_cached_logger", "_log"):  # what BaseOperator.log returns (SDK, LoggingMixin)
            object.__setattr__(operator, attribute, self)

    def info(self, message: str, *args: Any, **_: Any) -> None:
        self.lines.append(message % args if args else message)

    warning = error = debug = info


def test_a_step_runs_as_a_subprocess_and_its_result_is_the_return_value(
    fake_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "not for steps")
    monkeypatch.setenv("FAKE_STEP_MARK", "passed through")
    env_file = tmp_path / "step.env"
    env_file.write_text("# like the ConfigMap\nVDIMPORT_COMPARTMENT_ID=ocid1.compartment.oc1..x\nexport VDIMPORT_REGION='us-ashburn-1'\n")
    operator = _operator(env_file=str(env_file), state=json.dumps({"inspect_object": {"plan": {}}}))
    logs = LogLines(operator)
    result = operator.execute({})
    assert result == {"step": "write_image", "fake": True}
    [record] = _records(fake_log)
    assert record["step"] == "write_image" and record["run_id"] == "run-1"
    assert record["request"] == {"namespace": "ns", "object": "o"}
    assert record["state"] == {"inspect_object": {"plan": {}}}
    assert record["env"]["VDIMPORT_COMPARTMENT_ID"] == "ocid1.compartment.oc1..x"
    assert record["env"]["VDIMPORT_REGION"] == "us-ashburn-1"
    assert record["env"]["VDIMPORT_RESULT_PATH"].endswith("return.json")
    assert record["env"]["FAKE_STEP_MARK"] == "passed through"
    assert record["airflow_env"] == [], "Airflow's settings and credentials stay out of the step"
    assert not Path(record["env"]["VDIMPORT_RESULT_PATH"]).exists(), "the step's scratch directory is removed"
    assert "fake write_image: starting for run run-1" in logs.lines
    assert "fake write_image: done" in logs.lines


def test_a_failing_step_fails_the_task_with_its_one_line_cause(fake_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_STEP_FAIL", "verify_image")
    with pytest.raises(AirflowException, match=r"step verify_image failed \(exit 1\): injected failure of verify_image"):
        _operator("verify_image").execute({})


def test_a_rejecting_step_fails_the_task_without_retries(fake_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exit 3 (the request or image is wrong) raises AirflowFailException: Airflow does not retry it."""
    monkeypatch.setenv("FAKE_STEP_REJECT", "inspect_object")
    with pytest.raises(AirflowFailException, match=r"step inspect_object rejected the import \(not retried\): inspect_object rejects"):
        _operator("inspect_object").execute({})
    monkeypatch.setenv("FAKE_STEP_FAIL", "verify_image")
    with pytest.raises(AirflowException) as ordinary:
        _operator("verify_image").execute({})
    assert not isinstance(ordinary.value, AirflowFailException), "exit 1 stays retryable"


def test_a_large_state_goes_through_a_file(fake_log: Path) -> None:
    big = json.dumps({"inspect_object": {"blob": "x" * (ARG_FILE_THRESHOLD + 10)}})
    _operator(state=big).execute({})
    [record] = _records(fake_log)
    assert record["state_from_file"] and record["state"] == json.loads(big)


def test_exit_zero_without_a_result_fails(fake_log: Path, tmp_path: Path) -> None:
    script = tmp_path / "silent.py"
    script.write_text("print('did nothing')\n")
    operator = LocalStepOperator(task_id="report", step="report", arguments=["report"], command=f"{sys.executable} {script}")
    with pytest.raises(AirflowException, match="wrote no result"):
        operator.execute({})


def test_killing_the_task_stops_the_step(fake_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_STEP_SLEEP", "download_image:60")
    operator = _operator("download_image")
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            operator.execute({})
        except AirflowException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 20
    while not _records(fake_log) and time.monotonic() < deadline:
        time.sleep(0.05)
    [record] = _records(fake_log)
    started = time.monotonic()
    operator.on_kill()
    thread.join(30)
    assert not thread.is_alive() and time.monotonic() - started < 10
    assert "error" in outcome, "a killed step must not count as success"
    with pytest.raises(ProcessLookupError):
        os.kill(record["pid"], 0)


def test_the_command_is_the_setting_or_vdimport_step(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_command("/opt/x/vdimport-step --flag") == ["/opt/x/vdimport-step", "--flag"]
    monkeypatch.setenv("PATH", str(tmp_path))
    fallback = resolve_command("")
    assert fallback[0].endswith("vdimport-step") or fallback[-2:] == ["-m", "vdimport_worker"]


def test_env_file_syntax(tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.write_text('A=1\n\n# c\nexport B="two words"\nC=x=y\n')
    assert read_env_file(str(path)) == {"A": "1", "B": "two words", "C": "x=y"}
    path.write_text("oops\n")
    with pytest.raises(AirflowException, match="KEY=VALUE"):
        read_env_file(str(path))
    assert read_env_file("") == {}
