"""The preflight probe: the body ``{"vdimport": "preflight"}`` asks the deployed function whether,
from where it runs and with its own configuration and secret, Airflow is reachable and usable.

Against the fake Airflow of ``fnkit`` (given the one endpoint the probe adds, ``GET
/api/v2/dags/{dag_id}``) every probe goes through the real fdk handler (``handler(ctx, data)``,
as Fn calls it) with the emulator's Vault secret. No probe may create a DAG run or read an
object. The probe against a real Airflow 3 (deployed and unpaused, then paused), invoked
through OCI's Functions API by ``vdimport-local preflight``, is in
``tests/local/test_local_stack.py::test_preflight_passes_on_what_terraform_makes_and_names_each_gap``,
which shares the local stack's Airflow rather than starting one more.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fdk.context import InvokeContext
from fnkit import PASSWORD, USERNAME, FakeAirflow, free_port
from oci.object_storage import ObjectStorageClient

from vdimport_function.handler import PREFLIGHT_TIMEOUT_SECONDS, handler, is_preflight
from vdimport_local.emulator.client import EmulatorHandle

PROBE = b'{"vdimport": "preflight"}'
DAG_ID = "virtual_disk_import"
QCOW2 = b"QFI\xfb\x00\x00\x00\x03" + bytes(64 * 1024 - 8)
UNPAUSE_HINT = f"paused: unpause it in the Airflow UI or `airflow dags unpause {DAG_ID}`"
OBJECT_READS = ("HeadObject", "GetObject")


@dataclass
class DagApi:
    """``GET /api/v2/dags/{dag_id}`` on the fake Airflow, with Airflow's answers (200, 401, 403, 404)."""

    paused: bool = False
    forbidden: set[str] = field(default_factory=set)
    gets: list[dict[str, Any]] = field(default_factory=list)  # path and body headers of every GET


@pytest.fixture
def dag_api(fake_airflow: FakeAirflow) -> DagApi:
    api = DagApi()
    fake = fake_airflow

    class WithDagApi(fake.server.RequestHandlerClass):  # type: ignore[name-defined, misc]
        def do_GET(self) -> None:
            with fake.lock:
                api.gets.append(
                    {
                        "path": self.path,
                        "content-length": self.headers.get("content-length"),
                        "content-type": self.headers.get("content-type"),
                    }
                )
                if fake.fail_with:
                    self._answer(fake.fail_with.pop(0), {"detail": "Service Unavailable"})
                    return
                if not self._authorized():
                    return
                parts = self.path.strip("/").split("/")
                if parts[:3] != ["api", "v2", "dags"] or len(parts) != 4:
                    self._answer(404, {"detail": "Not Found"})
                    return
                if parts[3] in api.forbidden:
                    self._answer(403, {"detail": "Forbidden"})
                    return
                if parts[3] not in fake.dags:
                    self._answer(404, {"detail": f"Dag with id {parts[3]} was not found"})
                    return
                self._answer(200, {"dag_id": parts[3], "is_paused": api.paused, "is_stale": False, "has_import_errors": False})

    fake.server.RequestHandlerClass = WithDagApi
    return api


def _context(env: dict[str, str]) -> InvokeContext:
    return InvokeContext("app", "vdimport", "fn", "vdimport-trigger", "call-1", content_type="application/json", config=env)


def invoke(env: dict[str, str], body: bytes = PROBE) -> tuple[int, dict[str, Any]]:
    """The function's answer to ``body``, through the fdk handler as Fn invokes it."""
    answer = handler(_context(env), io.BytesIO(body))
    return answer.status(), json.loads(answer.body())


def object_reads(emu: EmulatorHandle, since: float) -> list[dict[str, Any]]:
    return [c for c in emu.calls() if c["time"] >= since and c["operation"] in OBJECT_READS]


def checks(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in answer["checks"]}


def _secret(emu: EmulatorHandle, content: str) -> str:
    return str(emu.admin("POST", "secrets", {"name": f"airflow-{uuid.uuid4().hex[:8]}", "content": content})["id"])


# --- against the fake Airflow ---------------------------------------------------------------
def test_probe_against_a_working_airflow_is_ok(
    emu: EmulatorHandle, env: dict[str, str], fake_airflow: FakeAirflow, dag_api: DagApi, caplog: pytest.LogCaptureFixture
) -> None:
    started = time.time()
    with caplog.at_level(logging.INFO, logger="vdimport"):
        status, answer = invoke(env)
    assert status == 200
    assert answer == {
        "decision": "preflight",
        "ok": True,
        "airflow_url": fake_airflow.url,
        "dag_id": DAG_ID,
        "checks": [
            {"name": "login", "ok": True, "detail": f"user {USERNAME!r} logged in (POST /auth/token gave a token)"},
            {"name": "dag", "ok": True, "detail": f"DAG {DAG_ID} is deployed and not paused"},
        ],
    }
    assert "preflight: login ok, dag ok" in caplog.text
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("preflight:")] == ["preflight: login ok, dag ok"]
    # the secret was read from the Vault, no object was, nothing was triggered
    assert [c for c in emu.calls("GetSecretBundle") if c["time"] >= started]
    assert object_reads(emu, started) == []
    assert fake_airflow.posts == [] and fake_airflow.runs == {}
    # the GET carries no body
    assert dag_api.gets == [{"path": f"/api/v2/dags/{DAG_ID}", "content-length": None, "content-type": None}]
    text = caplog.text + json.dumps(answer)
    assert PASSWORD not in text and "eyJ" not in text and "access_token" not in text


def test_a_warm_function_probes_with_its_cached_token(env: dict[str, str], fake_airflow: FakeAirflow, dag_api: DagApi) -> None:
    invoke(env)
    status, answer = invoke(env)
    assert status == 200 and answer["ok"] is True
    assert checks(answer)["login"]["detail"] == f"user {USERNAME!r} has a valid token from an earlier login"
    assert fake_airflow.logins == 1
    fake_airflow.tokens.clear()  # revoked: the GET answers 401, the probe logs in again once, as a trigger does
    status, answer = invoke(env)
    assert answer["ok"] is True, answer
    assert fake_airflow.logins == 2
    assert fake_airflow.posts == []


def test_wrong_password_fails_the_login_check(
    emu: EmulatorHandle, env: dict[str, str], fake_airflow: FakeAirflow, dag_api: DagApi, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "nope-Wr0ng-" + uuid.uuid4().hex[:6]
    env = env | {"VDIMPORT_AIRFLOW_SECRET_ID": _secret(emu, json.dumps({"username": USERNAME, "password": wrong}))}
    with caplog.at_level(logging.INFO, logger="vdimport"):
        status, answer = invoke(env)
    assert status == 200 and answer["ok"] is False
    login, dag = answer["checks"]
    assert login["name"] == "login" and login["ok"] is False
    assert f"refused the login of user {USERNAME!r} (HTTP 401)" in login["detail"]
    assert "credentials secret" in login["detail"]
    assert dag == {"name": "dag", "ok": False, "detail": "not checked: the login failed"}
    assert f"preflight: login failed (Airflow at {fake_airflow.url} refused the login" in caplog.text
    assert wrong not in caplog.text and wrong not in json.dumps(answer)
    assert dag_api.gets == [] and fake_airflow.posts == [] and fake_airflow.runs == {}


@pytest.mark.parametrize(
    ("content", "cause"),
    [("password=hunter2", "is not JSON"), (json.dumps({"username": USERNAME}), "is not JSON")],
    ids=["not-json", "no-password"],
)
def test_a_malformed_secret_fails_the_login_check(
    emu: EmulatorHandle, env: dict[str, str], fake_airflow: FakeAirflow, content: str, cause: str
) -> None:
    status, answer = invoke(env | {"VDIMPORT_AIRFLOW_SECRET_ID": _secret(emu, content)})
    assert status == 200 and answer["ok"] is False
    assert cause in checks(answer)["login"]["detail"]
    assert "hunter2" not in json.dumps(answer)
    assert fake_airflow.logins == 0


def test_an_unreadable_secret_fails_the_login_check(env: dict[str, str], fake_airflow: FakeAirflow) -> None:
    missing = "ocid1.vaultsecret.oc1..doesnotexist" + uuid.uuid4().hex[:8]
    status, answer = invoke(env | {"VDIMPORT_AIRFLOW_SECRET_ID": missing})
    assert status == 200 and answer["ok"] is False
    assert f"cannot read the Airflow credentials secret {missing}: HTTP 404" in checks(answer)["login"]["detail"]
    assert fake_airflow.logins == 0


def test_a_paused_dag_fails_the_dag_check_with_the_unpause_hint(
    env: dict[str, str], fake_airflow: FakeAirflow, dag_api: DagApi, caplog: pytest.LogCaptureFixture
) -> None:
    dag_api.paused = True
    with caplog.at_level(logging.INFO, logger="vdimport"):
        status, answer = invoke(env)
    assert status == 200 and answer["ok"] is False
    login, dag = answer["checks"]
    assert login["ok"] is True
    assert dag == {"name": "dag", "ok": False, "detail": f"DAG {DAG_ID} is {UNPAUSE_HINT}"}
    assert f"preflight: login ok, dag failed (DAG {DAG_ID} is {UNPAUSE_HINT})" in caplog.text
    assert fake_airflow.posts == []


def test_a_missing_dag_fails_the_dag_check(env: dict[str, str], fake_airflow: FakeAirflow, dag_api: DagApi) -> None:
    fake_airflow.dags.clear()
    status, answer = invoke(env)
    assert status == 200 and answer["ok"] is False
    detail = checks(answer)["dag"]["detail"]
    assert f"has no DAG {DAG_ID} (HTTP 404" in detail and "not deployed or not parsed yet" in detail


def test_a_dag_the_user_may_not_read_fails_the_dag_check(env: dict[str, str], fake_airflow: FakeAirflow, dag_api: DagApi) -> None:
    dag_api.forbidden.add(DAG_ID)
    status, answer = invoke(env)
    assert status == 200 and answer["ok"] is False
    assert f"Airflow user {USERNAME!r} may not read DAG {DAG_ID} (HTTP 403)" in checks(answer)["dag"]["detail"]


def test_the_configured_dag_id_is_probed(env: dict[str, str], fake_airflow: FakeAirflow, dag_api: DagApi) -> None:
    fake_airflow.dags.add("other_import")
    status, answer = invoke(env | {"VDIMPORT_DAG_ID": "other_import"})
    assert status == 200
    assert answer["ok"] is True and answer["dag_id"] == "other_import"
    assert [g["path"] for g in dag_api.gets] == ["/api/v2/dags/other_import"]


def test_5xx_is_retried_within_the_probe(env: dict[str, str], fake_airflow: FakeAirflow, dag_api: DagApi) -> None:
    fake_airflow.fail_with = [503]  # the login's first attempt
    assert invoke(env)[1]["ok"] is True
    fake_airflow.fail_with = [503, 503]  # the GET's both attempts
    status, answer = invoke(env)
    assert status == 200 and answer["ok"] is False
    assert "failed 2 times, last: HTTP 503" in checks(answer)["dag"]["detail"]


def test_an_unreachable_airflow_fails_within_the_reduced_retries(env: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    env = env | {"VDIMPORT_AIRFLOW_URL": down, "VDIMPORT_AIRFLOW_RETRIES": "5", "VDIMPORT_AIRFLOW_BACKOFF_SECONDS": "0.2"}
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="vdimport"):
        status, answer = invoke(env)
    assert time.monotonic() - started < 10
    assert status == 200 and answer["ok"] is False and answer["airflow_url"] == down
    detail = checks(answer)["login"]["detail"]
    assert f"Airflow at {down} is unavailable: POST /auth/token failed 2 times" in detail, detail
    assert "Connection refused" in detail or "ConnectionRefusedError" in detail, detail
    assert caplog.text.count("retrying in") == 1  # 2 attempts, where a trigger makes 5
    assert "(attempt 1 of 2)" in caplog.text
    assert f"the probe makes 2 attempt(s) of at most {PREFLIGHT_TIMEOUT_SECONDS:g} s; a trigger 5 of 5 s" in detail, detail


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An address that accepts connections and never answers (a stuck proxy, a hung api-server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    host, port = sock.getsockname()[:2]
    yield f"http://{host}:{port}"
    sock.close()


def test_an_airflow_that_never_answers_fails_within_10_seconds(env: dict[str, str], silent_server: str) -> None:
    """A trigger waits VDIMPORT_AIRFLOW_TIMEOUT_SECONDS per attempt; the probe at most a few seconds."""
    env = env | {"VDIMPORT_AIRFLOW_URL": silent_server, "VDIMPORT_AIRFLOW_TIMEOUT_SECONDS": "30"}
    started = time.monotonic()
    status, answer = invoke(env)
    elapsed = time.monotonic() - started
    assert 2 * PREFLIGHT_TIMEOUT_SECONDS <= elapsed < 10, elapsed
    assert status == 200 and answer["ok"] is False
    detail = checks(answer)["login"]["detail"]
    assert "POST /auth/token failed 2 times" in detail and "timed out" in detail, detail
    assert f"at most {PREFLIGHT_TIMEOUT_SECONDS:g} s; a trigger 3 of 30 s" in detail, detail


def test_a_misconfigured_function_answers_a_failed_config_check(env: dict[str, str], fake_airflow: FakeAirflow) -> None:
    status, answer = invoke(env | {"VDIMPORT_BUCKETS": " "})
    assert status == 200 and answer["ok"] is False
    assert answer["airflow_url"] == fake_airflow.url and answer["dag_id"] == DAG_ID
    assert [(c["name"], c["ok"]) for c in answer["checks"]] == [("config", False), ("login", False), ("dag", False)]
    assert "VDIMPORT_BUCKETS is not set" in answer["checks"][0]["detail"]
    assert fake_airflow.logins == 0


# --- what is not a probe -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b'{"vdimport": "preflight", "x": 1}',
        b'{"vdimport": "Preflight"}',
        b'{"vdimport": ["preflight"]}',
        b'{"Vdimport": "preflight"}',
        b'[{"vdimport": "preflight"}]',
        b'"preflight"',
        b"preflight",
        b"{}",
        b"",
    ],
)
def test_other_bodies_take_the_event_path(
    body: bytes, env: dict[str, str], fake_airflow: FakeAirflow, dag_api: DagApi, caplog: pytest.LogCaptureFixture
) -> None:
    assert not is_preflight(body)
    with caplog.at_level(logging.INFO, logger="vdimport"):
        status, answer = invoke(env, body)
    assert status == 200 and answer["decision"] == "rejected", answer
    assert "preflight:" not in caplog.text
    assert fake_airflow.logins == 0 and dag_api.gets == [] and fake_airflow.posts == []


@pytest.mark.parametrize("body", [PROBE, b'  {"vdimport":"preflight"}\n', b'{"vdimport": "pre\\u0066light"}'])
def test_the_probe_is_the_json_object_whatever_its_spacing(body: bytes) -> None:
    assert is_preflight(body)


def test_a_real_event_is_not_a_probe(
    emu: EmulatorHandle,
    env: dict[str, str],
    fake_airflow: FakeAirflow,
    dag_api: DagApi,
    osc: ObjectStorageClient,
    ns: str,
    bucket: str,
    events: Callable[..., list[dict[str, Any]]],
) -> None:
    etag = osc.put_object(ns, bucket, "disk.qcow2", QCOW2).headers["etag"]
    [event] = events(bucket, "disk.qcow2")
    assert event["data"]["additionalDetails"]["eTag"] == etag
    status, answer = invoke(env, json.dumps(event).encode())
    assert status == 200 and answer["decision"] == "triggered", answer
    assert len(fake_airflow.runs) == 1 and dag_api.gets == []
