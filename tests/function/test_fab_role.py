"""The function's Airflow login under the FAB auth manager, the one the official Helm chart deploys.

One real Airflow 3 (api-server, scheduler, dag-processor on loopback) with ``auth_manager="fab"``
and the repository's DAG folder, plus a second, test-only DAG beside it. The login starts out
as the previous values made it (FAB role ``User``) and its role carries a stale grant; then the
script of ``createUserJob`` in ``charts/airflow/values.yaml`` runs, read from that file and run
with bash in Airflow's environment, exactly as the chart's job runs it. From then on the login
(``POST /auth/token``, as the function logs in) may trigger ``virtual_disk_import`` and read
its runs, and is refused (403) everything else tried here: deleting or changing a run,
clearing tasks, other DAGs, connections. The DAG is paused, so the runs stay queued. Select
with ``-m e2e``, skip with ``-m "not e2e"``.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from vdimport_function.airflow import AirflowAuthError, AirflowClient
from vdimport_function.oci_access import Credentials
from vdimport_local.airflow import ApiError, LocalAirflow

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
VALUES = REPO / "charts" / "airflow" / "values.yaml"
DAG_ID = "virtual_disk_import"
OTHER_DAG_ID = "vdimport_test_other"
ROLE = "vdimport-trigger"
USERNAME, PASSWORD = "vdimport", "function-login-password"  # a loopback-only test instance
# What the role holds afterwards, read back through FAB's own API: the chart's comment says why.
ROLE_PERMISSIONS = {
    ("can_read", f"DAG:{DAG_ID}"),
    ("can_edit", f"DAG:{DAG_ID}"),
    ("can_read", f"DAG Run:{DAG_ID}"),
    ("can_create", f"DAG Run:{DAG_ID}"),
    ("can_read", "Website"),
}
CONF = {"namespace": "ns", "bucket": "uploads", "object": "disk.qcow2", "etag": "etag-1", "size": 65536, "metadata": {}}
OTHER_DAG = f'''
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

with DAG("{OTHER_DAG_ID}", schedule=None, is_paused_upon_creation=True):
    EmptyOperator(task_id="nothing")
'''


def _dags_folder(where: Path) -> Path:
    """The repository's dags/ (every entry, linked, .airflowignore too) and one more DAG file."""
    where.mkdir()
    for entry in DAGS.iterdir():
        if entry.name != "__pycache__":
            (where / entry.name).symlink_to(entry)
    (where / "vdimport_test_other.py").write_text(OTHER_DAG)
    return where


def _run_create_user_job(airflow: LocalAirflow) -> subprocess.CompletedProcess[str]:
    """``createUserJob.args`` of the values, with its env from the secret ``airflow-api-user``."""
    job = yaml.safe_load(VALUES.read_text())["createUserJob"]
    secret = {"username": USERNAME, "password": PASSWORD}
    env = dict(airflow.environ)
    for variable in job["env"]:
        ref = variable["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "airflow-api-user", ref
        env[variable["name"]] = secret[ref["key"]]
    assert job["args"][0] == "bash", job["args"]
    return subprocess.run(job["args"], env=env, capture_output=True, text=True, timeout=180, check=False)


def _still_alive(processes: dict[int, int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (alive := LocalAirflow.alive(processes)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAirflow]:
    """Airflow with FAB, the DAG paused, the login as the earlier values left it (role User)."""
    work = tmp_path_factory.mktemp("fab-airflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VDIMPORT_")}
    env |= {"VDIMPORT_STEP_RUNNER": "local", "VDIMPORT_LOCAL_STEP_COMMAND": "false"}
    instance = LocalAirflow.start(
        work / "home",
        dags_folder=_dags_folder(work / "dags"),
        env=env,
        wait_for_dags=[DAG_ID, OTHER_DAG_ID],
        auth_manager="fab",
        extra_users={USERNAME: ("User", PASSWORD)},
    )
    processes = instance.process_tree()
    try:
        assert instance.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": True})["is_paused"] is True
        yield instance
    finally:
        processes |= instance.process_tree()
        instance.stop()
        assert not _still_alive(processes), "Airflow processes left running"


def _role(airflow: LocalAirflow) -> set[tuple[str, str]]:
    reply = airflow.api("GET", f"/auth/fab/v1/roles/{ROLE}")
    return {(a["action"]["name"], a["resource"]["name"]) for a in reply["actions"]}


def _user_roles(airflow: LocalAirflow) -> list[str]:
    return [r["name"] for r in airflow.api("GET", f"/auth/fab/v1/users/{USERNAME}")["roles"]]


@pytest.fixture(scope="module")
def chart_job(airflow: LocalAirflow) -> subprocess.CompletedProcess[str]:
    """The chart's job, run once over a stale role (a hand-made grant to delete any run)."""
    assert _user_roles(airflow) == ["User"]
    stale = {"name": ROLE, "actions": [{"action": {"name": "can_delete"}, "resource": {"name": "DAG Runs"}}]}
    airflow.api("POST", "/auth/fab/v1/roles", stale)
    return _run_create_user_job(airflow)


@pytest.fixture(scope="module")
def login(airflow: LocalAirflow, chart_job: subprocess.CompletedProcess[str]) -> LocalAirflow:
    """A REST client of the same Airflow logged in as the function's user (no processes of its own)."""
    assert chart_job.returncode == 0, chart_job.stdout + chart_job.stderr
    return LocalAirflow(airflow.home, airflow.port, USERNAME, PASSWORD)


@pytest.fixture(scope="module")
def run_id(login: LocalAirflow) -> str:
    """A run the login triggered, as the function does."""
    return str(login.trigger(DAG_ID, CONF, run_id="upload__fab__1")["dag_run_id"])


def _status(client: LocalAirflow, method: str, path: str, body: Any = None) -> int:
    try:
        client.api(method, path, body)
    except ApiError as exc:
        return exc.status
    return 200


def test_the_chart_job_leaves_exactly_the_role_and_the_user(airflow: LocalAirflow, chart_job: subprocess.CompletedProcess[str]) -> None:
    """Exact permissions (the stale grant removed), the User role dropped; a re-run (every upgrade) changes nothing."""
    assert chart_job.returncode == 0, chart_job.stdout + chart_job.stderr
    assert f"user {USERNAME}: role {ROLE} only" in chart_job.stdout
    assert _role(airflow) == ROLE_PERMISSIONS
    assert _user_roles(airflow) == [ROLE]
    again = _run_create_user_job(airflow)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _role(airflow) == ROLE_PERMISSIONS
    assert _user_roles(airflow) == [ROLE]


def test_the_login_triggers_the_dag_and_reads_its_runs(airflow: LocalAirflow, login: LocalAirflow, run_id: str) -> None:
    run = login.dag_run(DAG_ID, run_id)
    assert run["conf"] == CONF and run["state"] == "queued" and run["triggering_user_name"] == USERNAME
    assert run_id in [r["dag_run_id"] for r in login.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"]]
    assert [d["dag_id"] for d in login.api("GET", "/api/v2/dags")["dags"]] == [DAG_ID]  # the other DAG is not even listed


def test_the_login_is_refused_deleting_a_run(airflow: LocalAirflow, login: LocalAirflow, run_id: str) -> None:
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
    assert _status(login, "DELETE", path) == 403
    assert airflow.dag_run(DAG_ID, run_id)["state"] == "queued"  # still there


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", f"/api/v2/dags/{DAG_ID}/dagRuns/RUN", {"state": "failed"}),
        ("POST", f"/api/v2/dags/{DAG_ID}/dagRuns/RUN/clear", {"dry_run": False}),
        ("POST", f"/api/v2/dags/{DAG_ID}/clearTaskInstances", {"dry_run": False, "dag_run_id": "RUN", "task_ids": ["validate_request"]}),
        ("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/RUN/taskInstances", None),
        ("DELETE", f"/api/v2/dags/{DAG_ID}", None),
        ("POST", f"/api/v2/dags/{OTHER_DAG_ID}/dagRuns", {"logical_date": None, "conf": {}}),
        ("GET", f"/api/v2/dags/{OTHER_DAG_ID}", None),
        ("PATCH", f"/api/v2/dags/{OTHER_DAG_ID}", {"is_paused": False}),
        ("GET", "/api/v2/connections", None),
        ("GET", "/api/v2/variables", None),
        ("GET", "/auth/fab/v1/roles", None),
    ],
    ids=[
        "fail-run",
        "clear-run",
        "clear-task-instances",
        "read-task-instances",
        "delete-dag",
        "trigger-other-dag",
        "read-other-dag",
        "unpause-other-dag",
        "connections",
        "variables",
        "roles",
    ],
)
def test_the_login_is_refused_everything_else(
    airflow: LocalAirflow, login: LocalAirflow, run_id: str, method: str, path: str, body: Any
) -> None:
    before = airflow.dag_run(DAG_ID, run_id)
    quoted = urllib.parse.quote(run_id, safe="")
    if isinstance(body, dict) and body.get("dag_run_id") == "RUN":
        body = body | {"dag_run_id": run_id}
    assert _status(login, method, path.replace("/RUN", f"/{quoted}"), body) == 403
    assert airflow.dag_run(DAG_ID, run_id) == before
    assert airflow.api("GET", f"/api/v2/dags/{OTHER_DAG_ID}")["is_paused"] is True


def test_fab_lets_the_login_pause_the_dag_it_may_trigger(login: LocalAirflow) -> None:
    """Known and documented: FAB asks ``can_edit`` on the DAG for every POST to its runs, and that
    same permission is what pausing takes. (The DAG is paused already; this changes nothing.)"""
    assert login.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": True})["is_paused"] is True


def test_the_functions_client_triggers_with_the_login(airflow: LocalAirflow, login: LocalAirflow) -> None:
    """images/function's AirflowClient: POST /auth/token, then the run; a repeat is a 409, not an error."""
    client = AirflowClient(airflow.url, lambda refresh: Credentials(USERNAME, PASSWORD), retries=1)
    first = client.trigger(DAG_ID, "upload__fab__client", CONF)
    assert (first.dag_run_id, first.created, first.state) == ("upload__fab__client", True, "queued")
    assert client.trigger(DAG_ID, "upload__fab__client", CONF).created is False
    with pytest.raises(AirflowAuthError, match=r"may not trigger DAG vdimport_test_other \(HTTP 403\)"):
        client.trigger(OTHER_DAG_ID, "upload__fab__other", {})
