"""Remove what finished or deleted ``virtual_disk_import`` runs left behind: the safety net.

The import's teardown (``terminate_worker``) is the first line of cleanup; this DAG catches
what no task of a run can: a run **deleted** while it ran, a scheduler killed mid-run, cleanup
retries that ran out, a launch killed half-way. Every ``VDIMPORT_REAPER_SCHEDULE`` (default
every 10 minutes):

1. ``reap_scan`` (the step runner, with its OCI identity) lists every live worker VM,
   unfinished volume and pre-authenticated request vdimport made, by run key and DAG run id;
2. ``find_live_runs`` asks Airflow which of those DAG runs are still going *as the same run
   instance* (queued or running, and their ``inspect_object`` result carries the key);
3. ``reap`` (the step runner) removes every other run's resources that are older than the
   grace period (``VDIMPORT_REAPER_GRACE_SECONDS`` in the step runner's settings, default
   300 s), logging each removal. A verified or delivered volume is never touched, nor anything
   without vdimport's tags.

With the Kubernetes step runner it also deletes failed step pods older than
``VDIMPORT_FAILED_POD_RETENTION_HOURS`` (default 72 h; they are kept that long for ``kubectl
logs``), see ``vdimport_dag/pods_retention.py``.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, get_current_context, task
from vdimport_dag.operators import step_operator
from vdimport_dag.settings import load_settings
from vdimport_dag.templating import MACROS

IMPORT_DAG_ID = "virtual_disk_import"
ACTIVE_RUN_STATES = ("queued", "running")
SETTINGS = load_settings()
log = logging.getLogger(__name__)


def _run_state(ti: Any, run_id: str) -> str | None:
    """The import run's state, or None when Airflow has no such run (deleted)."""
    try:
        return str(ti.get_dagrun_state(dag_id=IMPORT_DAG_ID, run_id=run_id))
    except Exception as exc:  # noqa: BLE001 - the execution API answers a missing run with an error
        log.info("DAG run %r: %s (taken as deleted)", run_id, exc)
        return None


def live_keys(ti: Any, runs: dict[str, dict[str, Any]]) -> list[str]:
    """The run keys whose DAG run is still going as the run instance that made them."""
    live = []
    for key, run in sorted(runs.items()):
        run_id = run.get("dag_run_id")
        if not run_id:
            log.info("Run %s: no DAG run id on its resources; it is over", key)
            continue
        state = _run_state(ti, run_id)
        if state not in ACTIVE_RUN_STATES:
            log.info("Run %s: DAG run %r is %s", key, run_id, state or "gone")
            continue
        inspected = ti.xcom_pull(dag_id=IMPORT_DAG_ID, run_id=run_id, task_ids="inspect_object")
        current = inspected.get("run_key") if isinstance(inspected, dict) else None
        if current is None or current == key:
            # no key yet: inspect_object is being run again; give it the benefit of the doubt
            log.info("Run %s: DAG run %r is %s; leaving its resources alone", key, run_id, state)
            live.append(key)
        else:
            log.info("Run %s: DAG run %r is %s as another run instance (the id was re-used)", key, run_id, state)
    return live


with DAG(
    dag_id="vdimport_reaper",
    dag_display_name="vdimport reaper",
    description="Remove worker VMs, unfinished volumes and PARs that finished or deleted imports left behind",
    doc_md=__doc__,
    schedule=None if SETTINGS.reaper_schedule.lower() == "none" else SETTINGS.reaper_schedule,
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    user_defined_macros=MACROS,  # the step tasks' pod labels use them
    tags=["vdimport"],
) as dag:
    common: dict[str, Any] = {
        "execution_timeout": timedelta(minutes=30),
        "retries": SETTINGS.step_retries,
        "retry_delay": timedelta(seconds=SETTINGS.step_retry_delay_seconds),
        "pool": SETTINGS.step_pool,
    }
    scan = step_operator("reap_scan", SETTINGS, arguments=["reap_scan"], task_id="reap_scan", **common)

    @task(task_id="find_live_runs", retries=SETTINGS.step_retries)
    def find_live_runs() -> dict[str, Any]:
        ti = get_current_context()["ti"]
        runs = (ti.xcom_pull(task_ids="reap_scan") or {}).get("runs") or {}
        return {"live_keys": live_keys(ti, runs)}

    reap = step_operator(
        "reap",
        SETTINGS,
        arguments=["reap", "--state", "{{ ti.xcom_pull(task_ids='find_live_runs') | tojson }}"],
        task_id="reap",
        **common,
    )
    scan >> find_live_runs() >> reap

    if SETTINGS.step_runner == "kubernetes":

        @task(task_id="prune_failed_step_pods", retries=SETTINGS.step_retries)
        def prune_failed_step_pods() -> list[str]:
            """Failed step pods older than VDIMPORT_FAILED_POD_RETENTION_HOURS (kept until then for kubectl logs)."""
            from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
            from vdimport_dag.pods_retention import prune_failed_step_pods as prune

            hook = KubernetesHook(conn_id=SETTINGS.pod_kubernetes_conn_id)
            return prune(hook.core_v1_client, SETTINGS.pod_namespace, SETTINGS.failed_pod_retention_hours)

        prune_failed_step_pods()
