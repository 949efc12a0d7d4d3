"""The README's retry, literally: a user in a real browser (headless chromium, playwright-core)
opens the failed run in the Airflow UI, clicks the failed task, presses Clear, keeps the
dialog's defaults and confirms; the run then finishes with one checked volume.

The write fails on the worker (an injected Run Command failure; no task retries here), the
cleanup removes the worker and the half-written volume, the "user fixes the cause" (the fault
is removed) and clears ``write_image`` in the UI. What the UI sent is checked twice: the
request body the page POSTed (captured in the browser) and the server's audit log of it.
Screenshots of the run before and after go to the test's artifacts folder (see conftest.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from airflowstack import Stack
from dagkit import DAG_ID

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

Browser = Callable[..., dict[str, Any]]  # the conftest's browser fixture
TASK = "write_image"


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _downstream(stack: Stack, task_id: str) -> set[str]:
    """Every task after ``task_id`` in the DAG (as the API describes it): what "Downstream" clears."""
    edges = {t["task_id"]: t["downstream_task_ids"] for t in stack.airflow.api("GET", f"/api/v2/dags/{DAG_ID}/tasks")["tasks"]}
    found: set[str] = set()
    todo = list(edges[task_id])
    while todo:
        task = todo.pop()
        if task not in found:
            found.add(task)
            todo.extend(edges[task])
    return found


def _clear_audit(stack: Stack, run_id: str) -> list[dict[str, Any]]:
    """The server's record of the (non dry-run) clears of the run: who, and the body it got."""
    reply = stack.airflow.api("GET", f"/api/v2/eventLogs?dag_id={DAG_ID}&event=post_clear_task_instances&limit=100")
    found = []
    for entry in reply.get("event_logs", []):
        try:
            body = json.loads(entry.get("extra") or "{}")
        except ValueError:
            continue
        if body.get("dag_run_id") == run_id and body.get("dry_run") is False:
            found.append({"owner": entry.get("owner"), "body": body})
    return found


def _cause(stack: Stack, run_id: str, task_id: str, try_number: int) -> str:
    lines = [line for line in stack.airflow.task_log(DAG_ID, run_id, task_id, try_number).splitlines() if "FAILED: " in line]
    return lines[-1].strip() if lines else "(no FAILED line in its log)"


def test_clear_of_a_failed_write_in_the_ui_finishes_the_run(e2e: Stack, browser: Browser) -> None:
    conf = e2e.upload("ui/clear-in-browser.qcow2")
    e2e.emu.fault("RunCommand", action="fail", nth=3)  # the run's scripts: ready, download, write: the write fails
    run_id = e2e.trigger(conf)
    state, tasks = e2e.finish(run_id)
    assert state == "failed" and tasks[TASK] == "failed", tasks
    downstream = _downstream(e2e, TASK)
    assert "report" in downstream and "upstream_failed" in {tasks[t] for t in downstream}, tasks
    failed_run = e2e.airflow.dag_run(DAG_ID, run_id)
    assert e2e.airflow.task_instances(DAG_ID, run_id)[TASK]["try_number"] == 1, "retries ran out at once (retries 0)"
    e2e.emu.clear_faults()  # the user fixes the cause

    result = browser("clear", run_id=run_id, task_id=TASK)

    # What the dialog's defaults sent, as the page POSTed it: this task with its downstream tasks, all of them.
    body = result["clear_request"]
    print(f"clearTaskInstances body: {json.dumps(body, sort_keys=True)}")
    assert body is not None, "the page sent no clearTaskInstances request"
    assert body["include_downstream"] is True and body["only_failed"] is False and body["include_upstream"] is False, body
    assert body["dry_run"] is False and body["dag_run_id"] == run_id and body["task_ids"] == [[TASK, -1]], body
    assert body["include_past"] is False and body["include_future"] is False, body
    preview = result["dry_run_request"]  # what the dialog listed the affected tasks with
    assert preview["dry_run"] is True, preview
    assert {k: v for k, v in preview.items() if k != "dry_run"} == {k: body[k] for k in preview if k != "dry_run"}, (preview, body)
    assert result["task_state_before"] == "Failed", result
    assert {TASK, *downstream} <= set(result["affected_tasks"]), (sorted(downstream), result["affected_tasks"])
    assert result["clear_response"] == {"status": 200, "task_ids": result["affected_tasks"]}, result["clear_response"]

    # The Clear really happened, by the server's own records: its audit log has the admin's clear with
    # that body, the run was queued again after it had failed, and the task was tried again.
    audit = _clear_audit(e2e, run_id)
    assert [a["owner"] for a in audit] == [e2e.airflow.username], audit
    assert {k: audit[0]["body"][k] for k in ("include_downstream", "only_failed", "include_upstream")} == {
        "include_downstream": True,
        "only_failed": False,
        "include_upstream": False,
    }
    requeued = e2e.airflow.dag_run(DAG_ID, run_id)
    assert _time(requeued["queued_at"]) > _time(failed_run["end_date"]), (failed_run["end_date"], requeued["queued_at"])
    run = e2e.airflow.wait_for_run(DAG_ID, run_id, timeout=150)
    tries = e2e.airflow.task_instances(DAG_ID, run_id)
    assert tries[TASK]["try_number"] == 2, {t: (ti["state"], ti["try_number"]) for t, ti in tries.items()}
    final = browser("screenshot", run_id=run_id, name="6-run-finished")
    print(f"run after the UI clear: {run['state']}; screenshots: {[*result['screenshots'], *final['screenshots']]}")

    # ...and the run finished: one checked volume holding the image, every worker terminated, no PAR.
    states = {t: (ti["state"], ti["try_number"]) for t, ti in tries.items()}
    cause = "" if tries[TASK]["state"] == "success" else f"; {TASK} try 2: {_cause(e2e, run_id, TASK, 2)}"
    assert run["state"] == "success", f"the run {run['state']} after the Clear{cause}: {states}"
    assert {state for state, _ in states.values()} == {"success"}, states
    e2e.assert_clean(run_id, succeeded=True)
