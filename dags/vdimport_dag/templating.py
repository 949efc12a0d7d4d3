"""What each task passes to ``vdimport-step``: Jinja macros rendered when the task runs.

``--request`` is the run's params merged with its conf (conf wins, ``None`` params dropped, so
a function-triggered run's ``metadata`` options are not overridden by empty UI fields);
``--state`` is ``{step: result}`` of the earlier steps that have a result (their XComs);
``--run-id`` is the DAG run id, from which the runner derives names and tags.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from .steps import upstream_steps

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
    """``{step: result}`` of every step before ``step`` that left a result in XCom."""
    state: dict[str, Any] = {}
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


MACROS = {
    "vdimport_request": request_json,
    "vdimport_state": state_json,
    "vdimport_run_label": run_label,
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
