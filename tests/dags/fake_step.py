"""A stand-in for ``vdimport-step`` (the same CLI contract) for DAG tests without OCI.

``fake_step.py <step> --run-id ID --request JSON --state JSON|@file``: appends one JSON line
(step, run id, request, state, its VDIMPORT_*/FAKE_* env, the names of any AIRFLOW* variables,
its pid) to ``$FAKE_STEP_LOG``, prints a few log
lines, and then fails like the real runner (``FAILED: <cause>``, exit 1) when ``step`` is in
``$FAKE_STEP_FAIL`` (comma-separated), rejects it (exit 3) when in ``$FAKE_STEP_REJECT``, sleeps ``$FAKE_STEP_SLEEP`` seconds when it names
this step (``step:seconds``), else writes ``{"step": ..., "fake": true}`` to
``$VDIMPORT_RESULT_PATH``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def _json(value: str) -> object:
    if value.startswith("@"):
        value = Path(value[1:]).read_text()
    return json.loads(value)


def main(argv: list[str]) -> int:
    step = argv[0]
    options = dict(zip(argv[1::2], argv[2::2], strict=False))
    record = {
        "step": step,
        "run_id": options["--run-id"],
        "request": _json(options["--request"]),
        "state": _json(options.get("--state", "{}")),
        "state_from_file": options.get("--state", "").startswith("@"),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("VDIMPORT_", "FAKE_"))},
        "airflow_env": sorted(k for k in os.environ if k.lstrip("_").startswith("AIRFLOW")),
        "pid": os.getpid(),
    }
    log = os.environ.get("FAKE_STEP_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps(record) + "\n")
    print(f"fake {step}: starting for run {record['run_id']}", flush=True)
    for item in os.environ.get("FAKE_STEP_SLEEP", "").split(","):
        name, _, seconds = item.partition(":")
        if name == step:
            time.sleep(float(seconds))
    if step in os.environ.get("FAKE_STEP_FAIL", "").split(","):
        print(f"FAILED: injected failure of {step}", flush=True)
        return 1
    if step in os.environ.get("FAKE_STEP_REJECT", "").split(","):
        print(f"FAILED: {step} rejects the request", flush=True)
        return 3
    result_path = Path(os.environ.get("VDIMPORT_RESULT_PATH", "/airflow/xcom/return.json"))
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps({"step": step, "fake": True}))
    print(f"fake {step}: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
