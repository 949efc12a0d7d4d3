"""A real, private Airflow 3 on this machine: for the end-to-end tests and ``vdimport-local up``.

``LocalAirflow.start(home)`` runs ``airflow db migrate`` and then the api-server, scheduler
(LocalExecutor) and dag-processor as child processes, each in its own process group, with a
private ``AIRFLOW_HOME`` (SQLite metadata database, logs, the admin password), listening on
a free loopback port only. It waits until the health endpoint reports every component
healthy and the expected DAGs are parsed without import errors. Login: the simple auth
manager with one admin user whose password is known (``admin``/``admin`` by default), or
with ``auth_manager="fab"`` the FAB auth manager the official Helm chart deploys (the admin
created with ``airflow users create --role Admin`` after the migration).

``stop()`` ends exactly the processes it started (checked by PID and start time, so a
reused PID is never hit) and everything they started, including task and step subprocesses
that left the process group: SIGTERM, then SIGKILL after a grace period. A second process can
find and stop a running instance with ``LocalAirflow.attach(home)`` (``home/instance.json``).

The REST helpers (``trigger``, ``wait_for_run``, ``clear``, ...) use the public API
(``/auth/token``, ``/api/v2/...``) the way the OCI Function and a user in the UI do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import procs

REPO = Path(__file__).resolve().parents[2]
log = logging.getLogger("vdimport.local.airflow")
DEFAULT_DAGS = REPO / "dags"
COMPONENTS = ("api-server", "scheduler", "dag-processor")
INSTANCE_FILE = "instance.json"
FINISHED_RUN_STATES = ("success", "failed")
AUTH_MANAGERS = {
    "simple": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    "fab": "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager",
}


DB_ERROR_ATTEMPTS = 5  # 0.5 + 1 + 2 + 4 s of back-off at most


class AirflowError(RuntimeError):
    """Airflow did not start, or an API call failed; the message says which and why."""


class ApiError(AirflowError):
    def __init__(self, method: str, path: str, status: int, body: str):
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _airflow_command() -> list[str]:
    sibling = Path(sys.executable).parent / "airflow"
    if sibling.exists():
        return [str(sibling)]
    found = shutil.which("airflow")
    return [found] if found else [sys.executable, "-m", "airflow"]


def _airflow_cli(args: list[str], env: dict[str, str], what: str) -> None:
    """Run ``airflow ARGS`` to completion; fail with the tail of its output (never its arguments)."""
    done = subprocess.run(
        [*_airflow_command(), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise AirflowError(f"{what} failed:\n{done.stdout[-3000:]}")


@dataclass
class LocalAirflow:
    home: Path
    port: int
    username: str
    password: str
    processes: dict[str, tuple[int, int]] = field(default_factory=dict)  # component -> (pid, start time)
    extra_users: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)  # name -> (role, password)
    auth_manager: str = "simple"  # a key of AUTH_MANAGERS
    environ: dict[str, str] = field(default_factory=dict, repr=False)  # of its processes (set by start)
    _popen: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    _token: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- lifecycle --------------------------------------------------------
    @classmethod
    def start(
        cls,
        home: Path,
        *,
        dags_folder: Path = DEFAULT_DAGS,
        env: Mapping[str, str] | None = None,
        config: Mapping[str, str] | None = None,
        pools: Mapping[str, int] | None = None,
        wait_for_dags: Iterable[str] = (),
        username: str = "admin",
        password: str = "admin",  # noqa: S107 - a loopback-only development instance with a known login
        port: int = 0,
        extra_users: Mapping[str, tuple[str, str]] | None = None,
        auth_manager: str = "simple",
        timeout: float = 180.0,
    ) -> LocalAirflow:
        """Start Airflow in ``home`` (created; an earlier database there is reused).

        ``env`` is the environment of every Airflow process (and so of the tasks and their
        step subprocesses; default: this process's); ``config`` adds ``AIRFLOW__SECTION__KEY``
        settings; ``pools`` are created or resized once the API is up; ``extra_users`` adds
        logins (name -> (role, password)), e.g. a ``user`` for the function. ``auth_manager``:
        ``"simple"`` (roles ``admin``, ``user``, ...) or ``"fab"`` (FAB roles ``Admin``, ``User``,
        ...; the users are created with ``airflow users create`` after ``airflow db migrate``).
        """
        if auth_manager not in AUTH_MANAGERS:
            raise ValueError(f"auth_manager must be one of {sorted(AUTH_MANAGERS)}, not {auth_manager!r}")
        home = Path(home).resolve()
        home.mkdir(parents=True, exist_ok=True)
        (home / "logs").mkdir(exist_ok=True)
        if (home / INSTANCE_FILE).exists():
            earlier = cls.attach(home)
            if any(earlier.running().values()):
                raise AirflowError(f"an Airflow started in {home} is still running ({earlier.url}); stop it first")
        instance = cls(home, port or free_port(), username, password, extra_users=dict(extra_users or {}), auth_manager=auth_manager)
        environment = instance._environment(Path(dags_folder).resolve(), env, config)
        instance.environ = environment
        _airflow_cli(["db", "migrate"], environment, "airflow db migrate")
        if auth_manager == "fab":
            instance._create_fab_users(environment)
        # Write-ahead log: readers no longer block writers. With SQLite's rollback journal a burst
        # of triggered runs (55 uploads at once in tests/security) once crashed the scheduler with
        # "database is locked". (A longer busy timeout is no cure: it turned the same contention
        # into minute-long stalls of the single api-server process.)
        with contextlib.closing(sqlite3.connect(home / "airflow.db")) as db:
            db.execute("PRAGMA journal_mode=WAL")
        try:
            for component in COMPONENTS:
                instance._spawn(component, environment)
            instance._save()
            instance.wait_healthy(timeout)
            for name, slots in (pools or {}).items():
                instance.set_pool(name, slots)
            for dag_id in wait_for_dags:
                instance.wait_for_dag(dag_id, timeout)
        except BaseException:
            instance.stop()
            raise
        return instance

    def _environment(self, dags_folder: Path, env: Mapping[str, str] | None, config: Mapping[str, str] | None) -> dict[str, str]:
        secrets_file = self.home / "secrets.json"
        if secrets_file.exists():
            keys = json.loads(secrets_file.read_text())
        else:
            from cryptography.fernet import Fernet

            keys = {"jwt": secrets.token_urlsafe(48), "api": secrets.token_urlsafe(32), "fernet": Fernet.generate_key().decode()}
            secrets_file.write_text(json.dumps(keys))
            secrets_file.chmod(0o600)
        passwords = self.home / "passwords.json"
        logins = {self.username: ("admin", self.password), **self.extra_users}
        passwords.write_text(json.dumps({name: password for name, (_, password) in logins.items()}) + "\n")
        passwords.chmod(0o600)
        base = dict(os.environ if env is None else env)
        base = {k: v for k, v in base.items() if not k.startswith("AIRFLOW__") and k != "AIRFLOW_HOME"}
        path = base.get("PATH", os.defpath)
        base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{path}"  # airflow, vdimport-step
        settings = {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__FERNET_KEY": keys["fernet"],
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__AUTH_MANAGER": AUTH_MANAGERS[self.auth_manager],
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{name}:{role}" for name, (role, _) in logins.items()),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": f"{self.url}/",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": keys["api"],
            "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt"],
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        }
        if self.auth_manager != "simple":  # FAB keeps its users in the metadata database
            del settings["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"], settings["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
        settings.update(config or {})
        return {**base, **settings}

    def _create_fab_users(self, env: dict[str, str]) -> None:
        """The admin (role ``Admin``) and the extra users in FAB's tables; an existing user is kept as it is."""
        logins = {self.username: ("Admin", self.password), **self.extra_users}
        for name, (role, password) in logins.items():
            names = ["--email", f"{name}@vdimport.invalid", "--firstname", name, "--lastname", "local"]
            command = ["users", "create", "--role", role, "--username", name, "--password", password, *names]
            _airflow_cli(command, env, f"airflow users create {name} (role {role})")

    def _spawn(self, component: str, env: dict[str, str]) -> None:
        log = open(self.home / "logs" / f"{component}.log", "ab")  # noqa: SIM115 - the child holds it
        try:
            args = [*_airflow_command(), component]
            if component == "api-server":
                args += ["--host", "127.0.0.1", "--port", str(self.port)]
            process = subprocess.Popen(
                args, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        finally:
            log.close()
        stat = procs.stat(process.pid)
        self._popen[component] = process
        self.processes[component] = (process.pid, stat[1] if stat else 0)

    def _save(self) -> None:
        data = {"port": self.port, "username": self.username, "processes": {k: list(v) for k, v in self.processes.items()}}
        (self.home / INSTANCE_FILE).write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def attach(cls, home: Path) -> LocalAirflow:
        """The instance started in ``home`` by another process (to call its API or stop it)."""
        home = Path(home).resolve()
        data = json.loads((home / INSTANCE_FILE).read_text())
        password = json.loads((home / "passwords.json").read_text())[data["username"]]
        processes = {k: (int(v[0]), int(v[1])) for k, v in data["processes"].items()}
        return cls(home, int(data["port"]), data["username"], password, processes)

    def __enter__(self) -> LocalAirflow:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def running(self) -> dict[str, bool]:
        return {name: procs.alive(pid, start) for name, (pid, start) in self.processes.items()}

    def process_tree(self) -> dict[int, int]:
        """The living processes of this instance and all their descendants: pid -> start time."""
        leaders = {pid: start for pid, start in self.processes.values() if procs.alive(pid, start)}
        return {**leaders, **procs.descendants(leaders)}

    @staticmethod
    def alive(processes: Mapping[int, int]) -> list[int]:
        """Those of ``processes`` (pid -> start time, as from ``process_tree``) still running."""
        return [pid for pid, start in processes.items() if procs.alive(pid, start)]

    def stop(self, grace: float = 20.0) -> None:
        """Stop every process this instance started and all their descendants."""
        procs.stop_tree(dict(self.processes.values()), grace, reap=self._reap)
        for process in self._popen.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        self._reap()
        (self.home / INSTANCE_FILE).unlink(missing_ok=True)

    def _reap(self) -> None:
        for process in self._popen.values():
            process.poll()

    def wait_healthy(self, timeout: float = 180.0) -> dict[str, Any]:
        """Wait until the metadatabase, scheduler and dag-processor report healthy."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            for name, process in self._popen.items():
                if process.poll() is not None:
                    raise AirflowError(f"airflow {name} exited with {process.returncode}:\n{self.log_tail(name)}")
            try:
                last = self._request("GET", "/api/v2/monitor/health", auth=False)
                states = [last.get(part, {}).get("status") for part in ("metadatabase", "scheduler", "dag_processor")]
                if all(state == "healthy" for state in states):
                    return dict(last)
            except (OSError, ApiError) as exc:
                last = exc
            if time.monotonic() > deadline:
                raise AirflowError(f"Airflow not healthy after {timeout:.0f} s (last: {last})")
            time.sleep(0.5)

    def log_tail(self, component: str, lines: int = 40) -> str:
        path = self.home / "logs" / f"{component}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # --- REST API ---------------------------------------------------------
    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        """One API call; a "Database error" 500 (SQLite busy under load: the transaction was rolled
        back, so the call is safe to repeat) is retried with back-off, a few times."""
        for attempt in range(DB_ERROR_ATTEMPTS):
            try:
                return self._request_once(method, path, body, auth)
            except ApiError as exc:
                if exc.status != 500 or "Database error" not in exc.body or attempt == DB_ERROR_ATTEMPTS - 1:
                    raise
                log.warning("%s %s: Airflow's database was busy (HTTP 500); trying again", method, path)
                time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def _request_once(self, method: str, path: str, body: Any, auth: bool) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310 - our loopback URL
        request.add_header("content-type", "application/json")
        if auth:
            request.add_header("authorization", f"Bearer {self.token()}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - our loopback URL
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise ApiError(method, path, exc.code, exc.read().decode(errors="replace")) from None
        return json.loads(raw) if raw else None

    def token(self) -> str:
        """A JWT from ``POST /auth/token`` (cached)."""
        if self._token is None:
            reply = self._request("POST", "/auth/token", {"username": self.username, "password": self.password}, auth=False)
            self._token = str(reply["access_token"])
        return self._token

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """``method path`` of the public API (``/api/v2/...``) with the admin's token."""
        try:
            return self._request(method, path, body)
        except ApiError as exc:
            if exc.status != 401:
                raise
            self._token = None  # expired: log in again once
            return self._request(method, path, body)

    def set_pool(self, name: str, slots: int, description: str = "") -> None:
        body = {"name": name, "slots": slots, "description": description or f"{name} (vdimport local)", "include_deferred": True}
        try:
            self.api("POST", "/api/v2/pools", body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            # only slots change: Airflow refuses any other field on default_pool
            self.api("PATCH", f"/api/v2/pools/{urllib.parse.quote(name)}?update_mask=slots", {"slots": slots})

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until ``dag_id`` is parsed; fail early on an import error."""
        deadline = time.monotonic() + timeout
        while True:
            errors = self.api("GET", "/api/v2/importErrors").get("import_errors", [])
            if errors:
                details = "\n".join(f"{e.get('filename')}: {e.get('stack_trace', '')[-1500:]}" for e in errors)
                raise AirflowError(f"DAG import errors:\n{details}")
            try:
                return dict(self.api("GET", f"/api/v2/dags/{dag_id}"))
            except ApiError as exc:
                if exc.status != 404:
                    raise
            if time.monotonic() > deadline:
                raise AirflowError(f"DAG {dag_id} not parsed after {timeout:.0f} s:\n{self.log_tail('dag-processor')}")
            time.sleep(0.5)

    def trigger(self, dag_id: str, conf: Mapping[str, Any], run_id: str | None = None) -> dict[str, Any]:
        """``POST /api/v2/dags/{dag_id}/dagRuns`` as the function does (``logical_date`` null)."""
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf)}
        if run_id:
            body["dag_run_id"] = run_id
        return dict(self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", body))

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}"))

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300.0, states: Iterable[str] = FINISHED_RUN_STATES) -> dict[str, Any]:
        """Poll the run until its state is one of ``states``."""
        wanted = set(states)
        deadline = time.monotonic() + timeout
        while True:
            run = self.dag_run(dag_id, run_id)
            if run.get("state") in wanted:
                return run
            if time.monotonic() > deadline:
                raise AirflowError(f"run {run_id} still {run.get('state')} after {timeout:.0f} s")
            time.sleep(0.5)

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """The run's task instances by task id."""
        reply = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances?limit=1000")
        return {ti["task_id"]: ti for ti in reply.get("task_instances", [])}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        quoted = urllib.parse.quote(run_id, safe="")
        reply = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/xcomEntries/{key}?deserialize=true")
        value = reply.get("value")
        return json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value

    def clear(self, dag_id: str, run_id: str, task_ids: list[str], include_downstream: bool = True, only_failed: bool = False) -> Any:
        """Clear task instances of one run, as the UI's Clear button does."""
        body = {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": task_ids,
            "include_downstream": include_downstream,
            "include_upstream": False,
            "only_failed": only_failed,
            "reset_dag_runs": True,
        }
        return self.api("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", body)

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The task's log as text (the lines the UI shows)."""
        quoted = urllib.parse.quote(run_id, safe="")
        reply = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/logs/{try_number}?full_content=true")
        content = reply.get("content", [])
        if isinstance(content, str):
            return content
        return "\n".join(str(item.get("event", item)) if isinstance(item, dict) else str(item) for item in content)
