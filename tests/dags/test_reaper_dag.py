"""The reaper DAG's shape, its live-run decision and the failed step pods' retention."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from dagkit import REAPER_DAG_ID, clear_vdimport_env, parse_dag
from kubernetes.client import models as k8s
from vdimport_dag.pods_retention import expired, finished_at
from vdimport_dag.settings import SettingsError, load_settings

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
KEY_A, KEY_B = "a" * 32, "b" * 32


def _reaper(monkeypatch: pytest.MonkeyPatch, **settings: Any) -> Any:
    clear_vdimport_env(monkeypatch)
    for name, value in settings.items():
        monkeypatch.setenv(f"VDIMPORT_{name.upper()}", str(value))
    return parse_dag(REAPER_DAG_ID)


def test_reaper_scans_decides_then_reaps_on_a_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    dag = _reaper(monkeypatch, step_runner="local")
    assert [t.task_id for t in dag.topological_sort()] == ["reap_scan", "find_live_runs", "reap"]
    assert dag.max_active_runs == 1 and not dag.catchup
    assert dag.schedule == "*/10 * * * *"
    assert _reaper(monkeypatch, step_runner="local", reaper_schedule="none").schedule is None
    kube = _reaper(monkeypatch, step_runner="kubernetes")
    assert "prune_failed_step_pods" in kube.task_dict, "the kubernetes runner also prunes failed step pods"


def test_a_bad_reaper_schedule_is_refused() -> None:
    with pytest.raises(SettingsError, match="VDIMPORT_REAPER_SCHEDULE"):
        load_settings({"VDIMPORT_REAPER_SCHEDULE": "every hour"}, variable=dict)


class Airflow:
    """The two Task SDK calls live_keys makes, answered from a table of runs."""

    def __init__(self, runs: dict[str, tuple[str, str | None]]):
        self.runs = runs  # run id -> (state, inspect_object's run_key)

    def get_dagrun_state(self, dag_id: str, run_id: str) -> str:
        if run_id not in self.runs:
            raise RuntimeError("DAG run not found")
        return self.runs[run_id][0]

    def xcom_pull(self, dag_id: str, run_id: str, task_ids: str) -> Any:
        key = self.runs[run_id][1]
        return {"run_key": key} if key else None


@pytest.mark.parametrize(
    ("runs", "live"),
    [
        ({"r1": ("running", KEY_A)}, [KEY_A]),  # still going as the same instance
        ({"r1": ("queued", None)}, [KEY_A]),  # inspect_object being re-run: benefit of the doubt
        ({"r1": ("running", KEY_B)}, []),  # the id was re-used after a delete: another instance
        ({"r1": ("failed", KEY_A)}, []),
        ({"r1": ("success", KEY_A)}, []),  # marked success mid-run
        ({}, []),  # deleted
    ],
)
def test_live_keys_are_the_runs_still_going_as_the_same_instance(
    runs: dict[str, tuple[str, str | None]], live: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _reaper(monkeypatch, step_runner="local")
    import vdimport_reaper

    assert vdimport_reaper.live_keys(Airflow(runs), {KEY_A: {"dag_run_id": "r1"}}) == live
    assert vdimport_reaper.live_keys(Airflow(runs), {KEY_A: {"dag_run_id": None}}) == [], "untagged: over"


def _pod(name: str, phase: str, ended: dt.datetime | None) -> k8s.V1Pod:
    state = (
        k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=1, finished_at=ended)) if ended else k8s.V1ContainerState()
    )
    status = k8s.V1PodStatus(
        phase=phase,
        container_statuses=[k8s.V1ContainerStatus(name="base", state=state, image="i", image_id="i", ready=False, restart_count=0)],
    )
    return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name=name, labels={"vdimport/run": "r"}), status=status)


def test_failed_step_pods_are_kept_for_the_retention_then_pruned() -> None:
    old = _pod("old", "Failed", NOW - dt.timedelta(hours=80))
    recent = _pod("recent", "Failed", NOW - dt.timedelta(hours=2))
    running = _pod("running", "Running", None)
    succeeded = _pod("done", "Succeeded", NOW - dt.timedelta(hours=99))
    assert [p.metadata.name for p in expired([old, recent, running, succeeded], NOW, 72)] == ["old"]
    assert expired([old], NOW, 0) == [], "0 keeps failed pods forever"
    assert finished_at(running) is None


def test_local_dag_settings_parse(load_dag: Callable[..., Any]) -> None:
    dag = load_dag(step_runner="local", failed_pod_retention_hours=0)
    assert dag.get_task("outcome").is_teardown and dag.get_task("outcome").on_failure_fail_dagrun
