"""The local stack behind ``vdimport-local up``, ``status`` and ``down``.

Three services run in the background, each in its own session, recorded by PID and start
time in ``HOME/stack.json`` so ``down`` (from any shell) stops exactly them:

- the OCI emulator (Object Storage, Compute, Block Volume, Run Command, Vault, Events);
- a real Airflow 3 (api-server, scheduler, dag-processor; LocalExecutor, SQLite) with the
  ``virtual_disk_import`` DAG and the local step runner;
- the OCI Function's real fdk behind a local invoke endpoint (``fnhost``).

``up`` wires them as OCI is wired: a bucket with object events on (and the work bucket for
large command output, without events: ``pipeline.step_environment``); an Events rule that sends
that bucket's ``createobject`` events to the function; a Vault secret holding the login of
an Airflow user with the ``user`` role that the function reads through the Secrets API
(as in production, no credentials in the function's configuration).

``up`` is idempotent: when every service is running it only reports them; when some died it
stops the rest and starts all again (state persists in HOME: objects, volumes, runs).
Home: ``$VDIMPORT_LOCAL_HOME``, default ``~/.vdimport-local``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oci

from . import procs
from .airflow import INSTANCE_FILE, REPO, LocalAirflow, free_port
from .emulator.client import EmulatorHandle
from .pipeline import WORK_BUCKET, step_environment

DAG_ID = "virtual_disk_import"
REAPER_DAG_ID = "vdimport_reaper"
TOPIC_NAME = "vdimport-imports"  # the emulated Notifications topic each import's outcome goes to
DAGS = REPO / "dags"
BUCKET = "vdimport-images"
CREATE_EVENT = "com.oraclecloud.objectstorage.createobject"
SECRET_NAME = "vdimport-airflow-trigger"  # noqa: S105 - the Vault secret's name, not its content
FUNCTION_USER = "vdimport-trigger"
FUNCTION_NAME = "vdimport-trigger"  # the function's display name, as terraform/functions.tf names it
PREFERRED_AIRFLOW_PORT = 8080
STATE_FILE = "stack.json"
STEP_IMAGE = "localhost/vdimport-worker:dev"  # what `make images` builds
FUNCTION_IMAGE = "localhost/vdimport-function:dev"
SERVICES = ("emulator", "airflow", "function")
LOG_FILES = {
    "emulator": "emulator/emulator.log",
    "function": "function/function.log",
    "function-host": "function/host.log",
    "api-server": "airflow/logs/api-server.log",
    "scheduler": "airflow/logs/scheduler.log",
    "dag-processor": "airflow/logs/dag-processor.log",
}


class StackError(RuntimeError):
    """The local stack could not be started or reached; the message says what to do."""


def default_home() -> Path:
    return Path(os.environ.get("VDIMPORT_LOCAL_HOME") or Path.home() / ".vdimport-local").expanduser()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _pick_port(*preferred: int | None) -> int:
    for port in preferred:
        if port and _port_free(port):
            return port
    return free_port()


@dataclass(frozen=True)
class UpOptions:
    lifecycle_seconds: float = 1.0
    max_worker_vms: int = 4
    airflow_port: int | None = None
    timeout: float = 240.0
    runner: str = "subprocess"  # how steps run: subprocess, container (the image under podman), auto
    image: str = STEP_IMAGE
    function_image: str = FUNCTION_IMAGE


def resolve_runner(wanted: str, image: str) -> str:
    """``auto``: the step-runner image under podman when both are on this machine (``make images``), else a subprocess."""
    if wanted != "auto":
        return wanted
    if shutil.which("podman") is None:
        return "subprocess"
    found = subprocess.run(["podman", "image", "exists", image], capture_output=True, check=False)
    return "container" if found.returncode == 0 else "subprocess"


class LocalStack:
    """The stack in one home directory: start, inspect and stop it, and reach its services."""

    def __init__(self, home: Path | None = None):
        self.home = Path(home or default_home()).expanduser().resolve()
        self.emulator_dir = self.home / "emulator"
        self.airflow_home = self.home / "airflow"
        self.function_dir = self.home / "function"
        self.state_path = self.home / STATE_FILE

    # --- state ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.state_path.read_text()))
        except (OSError, ValueError):
            return None

    def require(self) -> dict[str, Any]:
        """The running stack's state, or a StackError telling the user to run ``up``."""
        state = self.state()
        if state is None:
            raise StackError(f"the local stack is not running (no {self.state_path}); start it with: vdimport-local up")
        down = [name for name, ok in self.running(state).items() if not ok]
        if down:
            raise StackError(f"local stack services not running: {', '.join(down)}; restart with: vdimport-local up")
        return state

    def running(self, state: Mapping[str, Any] | None = None) -> dict[str, bool]:
        state = state if state is not None else self.state()
        if not state:
            return dict.fromkeys(SERVICES, False)
        result = {name: procs.alive(*state["processes"][name]) for name in ("emulator", "function")}
        airflow = self._airflow_or_none()
        result["airflow"] = airflow is not None and all(airflow.running().values())
        return {name: result[name] for name in SERVICES}

    def _airflow_or_none(self) -> LocalAirflow | None:
        if not (self.airflow_home / INSTANCE_FILE).exists():
            return None
        try:
            return LocalAirflow.attach(self.airflow_home)
        except (OSError, ValueError, KeyError):
            return None

    def emulator(self) -> EmulatorHandle:
        return EmulatorHandle(self.emulator_dir)

    def airflow(self) -> LocalAirflow:
        return LocalAirflow.attach(self.airflow_home)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One ``up``/``down`` at a time per home."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # --- up ---------------------------------------------------------------------------------
    def up(self, options: UpOptions | None = None, say: Any = print) -> tuple[dict[str, Any], bool]:
        """Start what is not running; (state, started) where started is False if all was up."""
        options = options or UpOptions()
        with self._locked():
            state = self.state()
            if state is not None and all(self.running(state).values()):
                return state, False
            if state is not None:
                say("==> Some services are not running; restarting the stack")
                self._stop(state, say)
            return self._start(options, state or {}, say), True

    def _start(self, options: UpOptions, earlier: Mapping[str, Any], say: Any) -> dict[str, Any]:
        ports = dict(earlier.get("ports", {}))
        started: dict[str, Any] = {"home": str(self.home), "processes": {}, "ports": ports}
        try:
            say(f"==> Starting the OCI emulator (state in {self.emulator_dir})")
            emulator = EmulatorHandle.start(
                self.emulator_dir,
                "--port",
                str(_pick_port(ports.get("emulator"))),
                "--lifecycle-seconds",
                str(options.lifecycle_seconds),
                timeout=60,
            )
            assert emulator.process is not None
            started["processes"]["emulator"] = [emulator.process.pid, procs.start_time(emulator.process.pid)]
            ports["emulator"] = int(emulator.endpoint.rsplit(":", 1)[1])
            started["emulator_url"] = emulator.endpoint
            storage = emulator.client(oci.object_storage.ObjectStorageClient)
            namespace = str(storage.get_namespace().data)
            self._ensure_bucket(emulator, storage, namespace)
            started.update(namespace=namespace, bucket=BUCKET, work_bucket=WORK_BUCKET)

            trigger_password = secrets.token_urlsafe(24)
            say("==> Starting Airflow (api-server, scheduler, dag-processor) with the virtual_disk_import DAG")
            airflow_port = _pick_port(options.airflow_port, ports.get("airflow"), PREFERRED_AIRFLOW_PORT)
            topic = self._ensure_topic(emulator)
            started["topic_id"] = topic
            started["runner"] = {"steps": resolve_runner(options.runner, options.image), "image": options.image}
            env = step_environment(
                emulator,
                {
                    "VDIMPORT_STEP_RUNNER": "local",
                    "VDIMPORT_MAX_WORKER_VMS": str(options.max_worker_vms),
                    "VDIMPORT_NOTIFICATION_TOPIC_ID": topic,
                    "VDIMPORT_AIRFLOW_UI_URL": f"http://127.0.0.1:{airflow_port}",
                    "VDIMPORT_REAPER_BUCKETS": BUCKET,
                    "VDIMPORT_LOCAL_RUNNER": started["runner"]["steps"],
                    "VDIMPORT_LOCAL_IMAGE": options.image,
                },
            )
            airflow = LocalAirflow.start(
                self.airflow_home,
                dags_folder=DAGS,
                env=env,
                config={"AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5"},
                wait_for_dags=[DAG_ID, REAPER_DAG_ID],
                port=airflow_port,
                extra_users={FUNCTION_USER: ("user", trigger_password)},
                timeout=options.timeout,
            )
            ports["airflow"] = airflow.port
            started.update(airflow_url=airflow.url, login={"username": airflow.username, "password": airflow.password})

            # The function reads its Airflow login from Vault, as in OCI: a new secret version per `up`.
            secret = emulator.admin(
                "POST", "secrets", {"name": SECRET_NAME, "content": json.dumps({"username": FUNCTION_USER, "password": trigger_password})}
            )
            started["secret_id"] = secret["id"]

            say("==> Starting the OCI Function (fdk) behind a local invoke endpoint")
            function_config = {
                "VDIMPORT_AIRFLOW_URL": airflow.url,
                "VDIMPORT_AIRFLOW_SECRET_ID": secret["id"],
                "VDIMPORT_BUCKETS": BUCKET,
                "VDIMPORT_DAG_ID": DAG_ID,
                "VDIMPORT_OCI_AUTH": "config_file",
                "VDIMPORT_OCI_CONFIG": str(emulator.config_path),
                "VDIMPORT_OCI_ENDPOINT": emulator.endpoint,
            }
            function_image = options.function_image if started["runner"]["steps"] == "container" else None
            started["runner"]["function_image"] = function_image
            function_url, function_process = self._start_function(function_config, _pick_port(ports.get("function")), function_image)
            started["processes"]["function"] = function_process
            started["function_url"] = function_url
            ports["function"] = int(function_url.rsplit(":", 1)[1].split("/", 1)[0])
            # As OCI shows it: the function (GetFunction, InvokeFunction) and the rule's FAAS action.
            function = emulator.admin(
                "POST",
                "functions",
                {"displayName": FUNCTION_NAME, "compartmentId": emulator.tenancy, "config": function_config, "url": function_url},
            )
            started["function_id"] = function["id"]

            for rule in emulator.admin("GET", "events/rules"):
                if rule.get("bucketName") == BUCKET:
                    emulator.admin("DELETE", f"events/rules/{rule['id']}")
            rule = emulator.admin(
                "POST",
                "events/rules",
                {"url": function_url, "eventTypes": [CREATE_EVENT], "bucketName": BUCKET, "functionId": function["id"]},
            )
            started["event_rule"] = rule["id"]
            self.state_path.write_text(json.dumps(started, indent=1) + "\n")
            self.state_path.chmod(0o600)
        except BaseException as exc:
            say(f"!!! up failed ({type(exc).__name__}); stopping what was started")
            self._stop(started, lambda _msg: None)
            if isinstance(exc, Exception) and not isinstance(exc, StackError):
                raise StackError(f"{type(exc).__name__}: {exc} (logs in {self.home})") from exc
            raise
        return started

    @staticmethod
    def _ensure_topic(emulator: EmulatorHandle) -> str:
        """The Notifications topic the step runner tells each import's outcome (made once)."""
        topics = emulator.client(oci.ons.NotificationControlPlaneClient)
        for topic in topics.list_topics(emulator.tenancy, name=TOPIC_NAME).data:
            return str(topic.topic_id)
        details = oci.ons.models.CreateTopicDetails(
            name=TOPIC_NAME, compartment_id=emulator.tenancy, description="vdimport import outcomes"
        )
        return str(topics.create_topic(details).data.topic_id)

    @staticmethod
    def _ensure_bucket(emulator: EmulatorHandle, storage: Any, namespace: str) -> None:
        models = oci.object_storage.models
        try:
            storage.create_bucket(
                namespace, models.CreateBucketDetails(name=BUCKET, compartment_id=emulator.tenancy, object_events_enabled=True)
            )
        except oci.exceptions.ServiceError as exc:
            if exc.status != 409:
                raise
            storage.update_bucket(namespace, BUCKET, models.UpdateBucketDetails(object_events_enabled=True))

    def _start_function(self, config: dict[str, str], port: int, image: str | None = None) -> tuple[str, list[int]]:
        self.function_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.function_dir / "config.json"
        config_path.write_text(json.dumps(config, indent=1) + "\n")
        config_path.chmod(0o600)
        endpoint_file = self.function_dir / "endpoint"
        endpoint_file.unlink(missing_ok=True)
        with open(self.function_dir / "host.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "vdimport_local.cli", "function-host", "--workdir", str(self.function_dir), "--port", str(port)]
                + (["--image", image] if image else []),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        record = [process.pid, procs.start_time(process.pid)]
        deadline = time.monotonic() + 60
        while not endpoint_file.exists():
            if process.poll() is not None:
                raise StackError(f"the function host exited with {process.returncode}; see {self.function_dir / 'host.log'}")
            if time.monotonic() > deadline:
                procs.stop_tree({record[0]: record[1]}, grace=5)
                raise StackError(f"the function host did not start; see {self.function_dir / 'host.log'}")
            time.sleep(0.05)
        return endpoint_file.read_text().strip(), record

    # --- down -------------------------------------------------------------------------------
    def down(self, say: Any = print) -> list[int]:
        """Stop everything ``up`` started; returns the PIDs still alive afterwards (none, normally)."""
        with self._locked():
            state = self.state() or {"processes": {}}
            return self._stop(state, say)

    def _stop(self, state: Mapping[str, Any], say: Any) -> list[int]:
        recorded = {int(pid): int(start) for pid, start in state.get("processes", {}).values()}
        airflow = self._airflow_or_none()
        everything = procs.tree(recorded)
        if airflow is not None:
            everything.update(airflow.process_tree())
        function = state.get("processes", {}).get("function")
        if function:
            say("==> Stopping the function")
            procs.stop_tree({function[0]: function[1]}, grace=10)
        if airflow is not None:
            say("==> Stopping Airflow")
            airflow.stop()
        emulator = state.get("processes", {}).get("emulator")
        if emulator:
            say("==> Stopping the OCI emulator")
            procs.stop_tree({emulator[0]: emulator[1]}, grace=20)
        self.state_path.unlink(missing_ok=True)
        return [pid for pid, start in everything.items() if procs.alive(pid, start)]

    # --- status -----------------------------------------------------------------------------
    def status(self, runs: int = 10) -> dict[str, Any]:
        """Services and URLs, recent runs, and every emulator resource still alive."""
        state = self.state()
        running = self.running(state)
        report: dict[str, Any] = {"home": str(self.home), "up": bool(state) and all(running.values())}
        if not state:
            report["services"] = {name: {"running": False} for name in SERVICES}
            return report
        report["services"] = {
            "emulator": {"running": running["emulator"], "url": state.get("emulator_url"), "pid": state["processes"]["emulator"][0]},
            "airflow": {"running": running["airflow"], "url": state.get("airflow_url"), "login": state.get("login", {}).get("username")},
            "function": {"running": running["function"], "url": state.get("function_url"), "pid": state["processes"]["function"][0]},
        }
        report["bucket"] = {"namespace": state.get("namespace"), "name": state.get("bucket")}
        report["runner"] = state.get("runner") or {"steps": "subprocess"}
        if running["airflow"]:
            with contextlib.suppress(Exception):
                reply = self.airflow().api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?order_by=-run_after&limit={runs}")
                report["runs"] = [
                    {
                        "dag_run_id": r["dag_run_id"],
                        "state": r["state"],
                        "object": (r.get("conf") or {}).get("object"),
                        "start_date": r.get("start_date"),
                        "end_date": r.get("end_date"),
                    }
                    for r in reply.get("dag_runs", [])
                ]
        if running["emulator"]:
            emulator = self.emulator()
            gone = {"TERMINATED", "TERMINATING", "DETACHED"}
            report["resources"] = {
                "instances": [_brief(r) for r in emulator.resources("instance") if r.get("lifecycleState") not in gone],
                "attachments": [_brief(r) for r in emulator.resources("volumeattachment") if r.get("lifecycleState") not in gone],
                "pars": [{"id": r.get("id"), "name": r.get("name"), "object": r.get("objectName")} for r in emulator.resources("par")],
                "volumes": [_brief(r) for r in emulator.resources("volume") if r.get("lifecycleState") not in gone],
            }
            report["notifications"] = [
                {"time": m.get("timeStamp"), "title": m.get("title")} for m in emulator.messages(state.get("topic_id"))[-runs:]
            ]
        return report

    def log_path(self, service: str) -> Path:
        return self.home / LOG_FILES[service]


def _brief(resource: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("id", "displayName", "lifecycleState", "availabilityDomain", "sizeInGBs")
    return {k: resource[k] for k in keys if resource.get(k) is not None}
