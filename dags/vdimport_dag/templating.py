"""What each task passes to ``vdimport-step``: Jinja macros rendered when the task runs.

``--request`` is the run's params merged with its conf (conf wins, ``None`` params dropped, so
a function-triggered run's ``metadata`` options are not overridden by empty UI fields);
``--state`` is ``{step: result}`` of the earlier steps that have a result (their XComs);
``--run-id`` is the DAG run id (a tag on what the run makes; its identity is the key
``inspect_object`` mints, carried in the state).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from .steps import STEP_ORDER, upstream_steps

LABEL_MAX = 63
_LABEL_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


def request_json(params: Mapping[str, Any] | None, dag_run: Any) -> str:
    """The import request for ``vdimport-step --request``: params, then the run conf on top."""
    request: dict[str, Any] = {k: v for k, v in dict(params or {}).items() if v is not None}
    conf = getattr(dag_run, "conf", None) or {}
    if isinstance(conf, Mapping):
        request.update(conf)
    return json.dumps(request, sort_keys=True, default=str)


def state_json(ti: Any, step: str) -> str:
    """``{step: result}`` of every step before ``step`` that left a result in XCom.

    The first step gets the run instance's key from any later step's result instead (``{step:
    {"run_key": ...}}``): this run instance's own XComs, which a Clear keeps until each task runs
    again, so re-running the first step of a run keeps its key and its resources; a new run (also
    one re-using a deleted run's id) has none and gets a new key.
    """
    state: dict[str, Any] = {}
    if step == STEP_ORDER[0]:
        for later in STEP_ORDER[1:]:
            result = ti.xcom_pull(task_ids=later)
            if isinstance(result, dict) and isinstance(result.get("run_key"), str):
                state[later] = {"run_key": result["run_key"]}
        return json.dumps(state, sort_keys=True)
    for earlier in upstream_steps(step):
        result = ti.xcom_pull(task_ids=earlier)
        if isinstance(result, dict):
            state[earlier] = result
    return json.dumps(state, sort_keys=True)


def run_label(run_id: str) -> str:
    """``run_id`` as a Kubernetes label value (``kubectl logs -l vdimport/run=...``).

    Characters a label cannot hold become ``-``; a value longer than 63 characters keeps its
    start and gets a short hash of the whole run id, so distinct runs keep distinct labels.
    """
    text = _LABEL_BAD.sub("-", run_id).strip("-_.")
    if len(text) > LABEL_MAX:
        digest = hashlib.sha256(run_id.encode()).hexdigest()[:10]
        text = text[: LABEL_MAX - len(digest) - 1].rstrip("-_.") + "-" + digest
    return text or hashlib.sha256(run_id.encode()).hexdigest()[:10]


FAILURE_KEY = "vdimport_failure"  # XCom a failed step's task leaves: {"step", "cause"}
STOPPED = "the run was stopped in Airflow before the import finished (marked failed or successful, or a task was killed)"
_CAUSE = re.compile(r"^step \S+ (?:failed \(exit -?\d+\)|rejected the import \(not retried\)): (?P<cause>.*)$", re.DOTALL)


def record_failure(context: Mapping[str, Any]) -> None:
    """A step task's ``on_failure_callback``: keep its one-line cause for the outcome message."""
    ti = context["ti"]
    text = str(context.get("exception") or "no cause was recorded").strip()
    match = _CAUSE.match(text)
    cause = (match.group("cause") if match else text).splitlines()[0][:2000] if text else "no cause was recorded"
    ti.xcom_push(key=FAILURE_KEY, value={"step": ti.task_id, "cause": cause})


def outcome_json(ti: Any, params: Mapping[str, Any] | None, dag_run: Any) -> str:
    """How the run ended, for ``vdimport-step outcome --state``: ``{"outcome": {...}}``."""
    request = json.loads(request_json(params, dag_run))
    outcome: dict[str, Any] = {
        "object_name": request.get("object"),
        "bucket": request.get("bucket"),
        "dag_run_id": getattr(dag_run, "run_id", None),
    }
    report = ti.xcom_pull(task_ids=STEP_ORDER[-1])
    if isinstance(report, dict) and report.get("volume_id"):
        outcome.update(state="succeeded", volume_id=report["volume_id"], volume_name=report.get("volume_name"))
        volumes = report.get("volumes")
        if isinstance(volumes, list) and len(volumes) > 1:  # a multi-disk OVA: name every volume
            outcome["volumes"] = [
                {"volume_id": v.get("volume_id"), "volume_name": v.get("volume_name")} for v in volumes if isinstance(v, dict)
            ]
        return json.dumps({"outcome": outcome}, sort_keys=True)
    outcome["state"] = "failed"
    for step in STEP_ORDER:
        failure = ti.xcom_pull(task_ids=step, key=FAILURE_KEY)
        if isinstance(failure, dict):
            outcome.update(failed_step=failure.get("step", step), cause=failure.get("cause"))
            break
    else:
        outcome["cause"] = STOPPED
    return json.dumps({"outcome": outcome}, sort_keys=True)


MACROS = {
    "vdimport_request": request_json,
    "vdimport_state": state_json,
    "vdimport_run_label": run_label,
    "vdimport_outcome": outcome_json,
}


def step_arguments(step: str) -> list[str]:
    """The templated arguments of ``vdimport-step`` for ``step`` (rendered by Airflow)."""
    return [
        step,
        "--run-id",
        "{{ run_id }}",
        "--request",
        "{{ vdimport_request(params, dag_run) }}",
        "--state",
        "{{ vdimport_state(ti, '" + step + "') }}",
    ]


def step_labels(step: str) -> dict[str, str]:
    """Pod labels: ``kubectl logs -l vdimport/run=<run label>`` and ``-l vdimport/step=<step>``."""
    return {
        "app.kubernetes.io/name": "vdimport-step-runner",
        "app.kubernetes.io/part-of": "vdimport",
        "vdimport/run": "{{ vdimport_run_label(run_id) }}",
        "vdimport/step": step,
    }
