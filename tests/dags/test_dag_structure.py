"""The DAG as Airflow parses it: tasks and order, trigger rules, VM cap, pool, retries, timeouts, params."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from airflow.sdk import TriggerRule
from dagkit import DAGS, clear_vdimport_env, parse_dag

from vdimport_local.pipeline import STEP_ORDER as PIPELINE_STEP_ORDER
from vdimport_worker.request import OPTION_KEYS

RUNNERS = ("kubernetes", "local")
OPERATOR = {"kubernetes": "StepPodOperator", "local": "LocalStepOperator"}  # StepPodOperator is a KubernetesPodOperator


def test_dag_files_do_not_import_the_step_runner_package() -> None:
    """The Airflow image has no vdimport_worker: the DAG and its helpers must not import it."""
    for path in [*DAGS.glob("*.py"), *DAGS.glob("vdimport_dag/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(name.split(".")[0] == "vdimport_worker" for name in names), f"{path.name} imports {names}"
            assert not any(name.split(".")[0] == "vdimport_local" for name in names), f"{path.name} imports {names}"


@pytest.mark.parametrize("runner", RUNNERS)
def test_dagbag_loads_one_dag_with_a_task_per_step_in_order(load_dag: Callable[..., Any], runner: str) -> None:
    dag = load_dag(step_runner=runner)
    from vdimport_dag.steps import STEP_ORDER

    assert tuple(STEP_ORDER) == tuple(PIPELINE_STEP_ORDER), "the DAG's step order differs from the step runner's"
    assert [t.task_id for t in dag.topological_sort()] == ["begin", *STEP_ORDER, "outcome"]
    assert {type(t).__name__ for t in dag.tasks if t.task_id != "begin"} == {OPERATOR[runner]}
    assert type(dag.timetable).__name__ == "NullTimetable", "no schedule: runs come from uploads or the UI"
    assert not dag.catchup


def test_dependencies_and_trigger_rules(load_dag: Callable[..., Any]) -> None:
    dag = load_dag()
    upstream = {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}
    chain = list(PIPELINE_STEP_ORDER)
    for index, step in enumerate(chain[1:10], 1):  # launch_worker .. detach_volume: a plain chain
        assert upstream[step] == [chain[index - 1]], step
    assert upstream["terminate_worker"] == sorted(["launch_worker", "detach_volume"])
    assert upstream["tune_volume"] == sorted(["detach_volume", "terminate_worker"])
    assert upstream["assign_backup_policy"] == ["tune_volume"]
    assert upstream["report"] == ["assign_backup_policy"]
    assert upstream["outcome"] == sorted(["begin", "report"]) and upstream["inspect_object"] == ["begin"]
    assert [t.task_id for t in dag.leaves] == ["outcome"], "outcome is the only leaf"
    # Airflow's setup/teardown: Clear brings the pair along, Mark failed/success keeps the teardown.
    assert sorted(t.task_id for t in dag.tasks if t.is_setup) == ["begin", "launch_worker"]
    assert sorted(t.task_id for t in dag.tasks if t.is_teardown) == ["outcome", "terminate_worker"]
    assert dag.get_task("outcome").on_failure_fail_dagrun, "a run that delivered no volume must end failed"
    assert not dag.get_task("terminate_worker").on_failure_fail_dagrun
    rules = {t.task_id: TriggerRule(t.trigger_rule).value for t in dag.tasks}
    assert rules.pop("terminate_worker") == rules.pop("outcome") == "all_done_setup_success"
    assert set(rules.values()) == {"all_success"}


def test_clear_of_any_data_step_brings_its_setup_and_teardown(load_dag: Callable[..., Any]) -> None:
    """What the UI's Clear (with downstream) selects, computed by Airflow's own partial_subset."""
    dag = load_dag()
    for step in PIPELINE_STEP_ORDER[2:10]:  # wait_worker_ready .. detach_volume
        subset = dag.partial_subset(task_ids=[step], include_downstream=True, include_upstream=False)
        chosen = set(subset.task_dict)
        assert {"launch_worker", "terminate_worker", step, "report"} <= chosen, (step, sorted(chosen))
        assert "inspect_object" not in chosen
    tail = dag.partial_subset(task_ids=["tune_volume"], include_downstream=True, include_upstream=False)
    assert set(tail.task_dict) == {"tune_volume", "assign_backup_policy", "report", "begin", "outcome"}, "no worker relaunch"


def test_worker_vm_cap_pool_and_priorities(load_dag: Callable[..., Any]) -> None:
    dag = load_dag()
    assert dag.max_active_runs == 4
    running = [t for t in dag.tasks if t.task_id != "begin"]  # begin is an EmptyOperator: it never runs
    assert {t.pool for t in running} == {"default_pool"}
    assert {str(t.weight_rule) for t in running} == {"upstream"}
    dag = load_dag(max_worker_vms=2, step_pool="vdimport_steps")
    assert dag.max_active_runs == 2
    assert {t.pool for t in dag.tasks if t.task_id != "begin"} == {"vdimport_steps"}


def test_retries_backoff_and_timeouts(load_dag: Callable[..., Any]) -> None:
    from vdimport_dag.steps import STEP_TIMEOUTS

    dag = load_dag()
    for task in [dag.get_task(step) for step in PIPELINE_STEP_ORDER]:
        cleanup = task.task_id == "terminate_worker"
        assert task.retries == (6 if cleanup else 2), task.task_id
        assert task.retry_delay == timedelta(seconds=60)
        assert task.retry_exponential_backoff == 2.0
        assert task.max_retry_delay == timedelta(seconds=900)
        assert task.execution_timeout == timedelta(seconds=STEP_TIMEOUTS[task.task_id]), task.task_id
    assert set(STEP_TIMEOUTS) == set(PIPELINE_STEP_ORDER)
    # The long steps get hours, the API-only steps minutes.
    assert dag.get_task("write_image").execution_timeout >= timedelta(hours=6)
    assert dag.get_task("report").execution_timeout <= timedelta(minutes=15)

    dag = load_dag(step_retries=0, cleanup_retries=1, step_retry_delay_seconds=5, step_timeouts=json.dumps({"write_image": 120}))
    assert dag.get_task("inspect_object").retries == 0
    assert dag.get_task("terminate_worker").retries == 1
    assert dag.get_task("report").retry_delay == timedelta(seconds=5)
    assert dag.get_task("write_image").execution_timeout == timedelta(seconds=120)
    assert dag.get_task("verify_image").execution_timeout == timedelta(seconds=STEP_TIMEOUTS["verify_image"])


def test_params_are_typed_documented_and_match_the_request(load_dag: Callable[..., Any]) -> None:
    dag = load_dag()
    params = dag.params
    assert list(params) == ["namespace", "bucket", "object", *OPTION_KEYS]
    for name in params:
        param = params.get_param(name)
        assert param.description and param.schema.get("title"), name
        assert "type" in param.schema, name
    for name in ("namespace", "bucket", "object"):
        assert params.get_param(name).schema["type"] == "string"
        assert not params.get_param(name).has_value, f"{name} is required: no default"
    for name in OPTION_KEYS:
        # No defaults of the DAG's own: the step runner has them, and options from the
        # object metadata must not be overridden by an unset UI field.
        assert params.get_param(name).value is None, name
        assert "null" in params.get_param(name).schema["type"], name
    assert params.get_param("ad_number").schema["enum"] == [None, 0, 1, 2, 3]  # 0: any, as in the reference DAG
    assert params.get_param("fsck").schema["enum"] == [None, "off", "check", "strict"]
    assert params.get_param("tags").schema["type"] == ["null", "object"]
    assert params.get_param("verify").schema["type"] == ["null", "boolean"]


def _serialized(dag: Any) -> Any:
    """The DAG as the scheduler and the API server see it (from the serialized form)."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.from_dict(DagSerialization.to_dict(dag))


def test_params_accept_what_the_function_and_the_ui_send(load_dag: Callable[..., Any]) -> None:
    """Triggering validates the conf against the params (as the API server does when a run is created)."""
    dag = _serialized(load_dag())
    function_conf = {"namespace": "ns", "bucket": "b", "object": "disk.vmdk", "etag": "e", "size": 5, "metadata": {"ad_number": "2"}}
    resolved = dag.params.deep_merge(function_conf).validate()
    assert resolved["metadata"] == {"ad_number": "2"} and resolved["ad_number"] is None
    ui_conf = {**{k: None for k in dag.params}, "namespace": "ns", "bucket": "b", "object": "o", "vpus_per_gb": 20, "tags": {"a": "b"}}
    assert dag.params.deep_merge(ui_conf).validate()["vpus_per_gb"] == 20
    with pytest.raises(Exception, match="ad_number"):
        dag.params.deep_merge({**function_conf, "ad_number": 7}).validate()


def test_dag_serializes_as_the_dag_processor_stores_it(load_dag: Callable[..., Any]) -> None:
    for runner in RUNNERS:
        dag = load_dag(step_runner=runner)
        restored = _serialized(dag)
        assert sorted(t.task_id for t in restored.tasks) == sorted([*PIPELINE_STEP_ORDER, "begin", "outcome"])
        assert TriggerRule(restored.get_task("terminate_worker").trigger_rule) == TriggerRule.ALL_DONE_SETUP_SUCCESS
        assert restored.get_task("terminate_worker").is_teardown and restored.get_task("launch_worker").is_setup
        assert restored.max_active_runs == dag.max_active_runs


def test_settings_come_from_env_then_variable_then_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from vdimport_dag.settings import DagSettings, SettingsError, load_settings

    assert load_settings(env={}, variable=dict) == DagSettings()
    stored = {"pod_image": "from-variable:1", "max_worker_vms": 3, "pod_image_pull_secrets": ["ocir"]}
    settings = load_settings(env={"VDIMPORT_POD_IMAGE": "from-env:2"}, variable=lambda: stored)
    assert (settings.pod_image, settings.max_worker_vms, settings.pod_image_pull_secrets) == ("from-env:2", 3, ("ocir",))
    assert load_settings(env={"VDIMPORT_POD_IMAGE_PULL_SECRETS": "a, b"}, variable=dict).pod_image_pull_secrets == ("a", "b")
    for bad in ({"VDIMPORT_STEP_RUNNER": "docker"}, {"VDIMPORT_MAX_WORKER_VMS": "0"}, {"VDIMPORT_STEP_TIMEOUTS": "[1]"}):
        with pytest.raises(SettingsError, match=next(iter(bad))):
            load_settings(env=bad, variable=dict)
    # The real Airflow Variable (here from the environment secrets backend).
    clear_vdimport_env(monkeypatch)
    monkeypatch.setenv("AIRFLOW_VAR_VDIMPORT_DAG", json.dumps({"MAX_WORKER_VMS": 7}))
    assert load_settings().max_worker_vms == 7
    assert parse_dag().max_active_runs == 7
