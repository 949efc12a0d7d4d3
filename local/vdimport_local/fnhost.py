"""The function's real fdk behind a local invoke endpoint: what OCI Functions does around the container.

In OCI, an Events rule invokes the function; the Fn agent starts the function's container
(the fdk listening on a unix socket, ``FN_FORMAT=http-stream``), passes the function's
configuration as environment variables and forwards each invocation as ``POST /call`` with
``Fn-Call-Id`` and ``Fn-Deadline`` headers. :func:`serve` does the same on one machine: it
runs ``fdk images/function/func.py handler`` as a child process with the configuration as its
environment, and answers ``POST /invoke`` on a loopback port (the URL the emulator's Events
rule posts to) by forwarding the body to the fdk's socket.

The fdk answers 200 with the function's JSON, or 502 when the handler raised (Airflow
unreachable, bad credentials): the Events rule then redelivers, as OCI's at-least-once
delivery does. Every invocation is appended to ``invocations.jsonl`` (call id, status, the
function's answer), which is how ``vdimport-local import`` learns that an upload was skipped.
A dead fdk is started again on the next invocation, as Fn starts a new container.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

if str(REPO_DAGS := Path(__file__).resolve().parents[2] / "dags") not in sys.path:
    sys.path.insert(0, str(REPO_DAGS))  # as Airflow puts the DAGs folder on sys.path
from vdimport_dag.containers import function_command, remove

REPO = Path(__file__).resolve().parents[2]
FUNCTION_DIR = REPO / "images" / "function"
FUNCTION_VENV = Path(os.environ.get("VDIMPORT_FUNCTION_VENV") or REPO / ".venv-function")
INVOCATIONS = "invocations.jsonl"
SOCKET = "fn.sock"
INVOKE_PATH = "/invoke"
TIMEOUT_SECONDS = 120.0  # func.yaml's timeout
START_TIMEOUT_SECONDS = 30.0
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")

log = logging.getLogger("vdimport.fnhost")


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over the fdk's unix socket (what the Fn agent speaks to the container)."""

    def __init__(self, path: Path, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def _fdk_command() -> list[str]:
    """The image's entry point (``fdk func.py handler``) from ``.venv-function``: the image's own
    packages, so a dependency of the development venv (uvloop) cannot change how it runs."""
    fdk = FUNCTION_VENV / "bin" / "fdk"
    if not fdk.exists():
        raise RuntimeError(f"{fdk} is missing: run `make setup` (it builds .venv-function from images/function/requirements.txt)")
    return [str(fdk), str(FUNCTION_DIR / "func.py"), "handler"]


class FdkContainer:
    """The function's fdk: this machine's ``.venv-function`` as a process, or, given ``image``, the
    function image itself under podman as OCI Functions runs it: its own entry point and user, a
    read-only root file system, the configuration as its environment, and the socket directory
    ``/tmp/iofs`` mounted from the host (``FN_LISTENER=unix:/tmp/iofs/lsnr.sock``)."""

    def __init__(self, workdir: Path, config: Mapping[str, str], image: str | None = None):
        self.workdir = workdir
        self.image = image
        self.socket = (workdir / "iofs" / SOCKET) if image else (workdir / SOCKET)
        self.config = dict(config)
        self.process: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()
        self.name = f"vdimport-function-{uuid.uuid4().hex[:10]}"

    def _command(self) -> tuple[list[str], dict[str, str]]:
        if not self.image:
            return _fdk_command(), self.environment()
        command, env, _ = function_command(self.image, self.name, self.environment(), self.workdir)
        return command, env

    def environment(self) -> dict[str, str]:
        env = {k: os.environ[k] for k in BASE_ENV if k in os.environ}
        env.update(
            {
                "FN_LISTENER": f"unix:{self.socket}",
                "FN_FORMAT": "http-stream",
                "FN_APP_NAME": "vdimport-local",
                "FN_FN_NAME": "vdimport-trigger",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.config)
        return env

    def ensure_running(self) -> None:
        with self.lock:
            if self.process is not None and self.process.poll() is None and self.socket.exists():
                return
            if self.process is not None:
                log.warning("the function's fdk exited (%s); starting it again", self.process.poll())
                self.stop()
            self.socket.unlink(missing_ok=True)
            command, env = self._command()
            with open(self.workdir / "function.log", "ab") as output:
                self.process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            while not self.socket.exists():
                if self.process.poll() is not None:
                    raise RuntimeError(f"the function's fdk exited with {self.process.returncode}; see {self.workdir / 'function.log'}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the function's fdk did not listen on {self.socket} within {START_TIMEOUT_SECONDS:.0f} s")
                time.sleep(0.05)
            log.info("function fdk %d listening on %s", self.process.pid, self.socket)

    def invoke(self, body: bytes, call_id: str) -> tuple[int, bytes]:
        """``POST /call`` as the Fn agent sends it; (status, body)."""
        self.ensure_running()
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=TIMEOUT_SECONDS)
        connection = _UnixConnection(self.socket, TIMEOUT_SECONDS + 5)
        try:
            connection.request(
                "POST",
                "/call",
                body=body,
                headers={
                    "Content-Type": "application/json",
                    "Fn-Call-Id": call_id,
                    "Fn-Deadline": deadline.isoformat().replace("+00:00", "Z"),
                },
            )
            reply = connection.getresponse()
            return reply.status, reply.read()
        finally:
            connection.close()

    def stop(self) -> None:
        process, self.process = self.process, None
        if self.image and process is not None:  # the podman client going away does not stop the container
            subprocess.run(remove(self.name), capture_output=True, timeout=60, check=False)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.socket.unlink(missing_ok=True)
        (self.socket.parent / f"phony{SOCKET}").unlink(missing_ok=True)


def _record(path: Path, lock: threading.Lock, entry: dict[str, Any]) -> None:
    with lock, open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def invocations(workdir: Path) -> Iterator[dict[str, Any]]:
    """Every recorded invocation, oldest first."""
    path = Path(workdir) / INVOCATIONS
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            with contextlib.suppress(ValueError):
                yield json.loads(line)


def serve(workdir: Path, port: int, config: Mapping[str, str], host: str = "127.0.0.1", image: str | None = None) -> None:
    """Run the invoke endpoint and the fdk (``image``: in the function image) until SIGTERM/SIGINT;
    writes ``workdir/endpoint`` once listening."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    container = FdkContainer(workdir, config, image)
    container.ensure_running()
    record_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != INVOKE_PATH:
                self._answer(404, b'{"message": "use POST /invoke"}')
                return
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            call_id = uuid.uuid4().hex
            started = time.time()
            try:
                status, answer = container.invoke(body, call_id)
            except (OSError, RuntimeError, http.client.HTTPException) as exc:
                status, answer = 502, json.dumps({"message": f"function unavailable: {exc}"}).encode()
            try:
                parsed: Any = json.loads(answer) if answer else None
            except ValueError:
                parsed = answer.decode(errors="replace")[:2000]
            event: dict[str, Any] = {}
            with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):  # a malformed event is recorded too
                raw = json.loads(body)
                event = {
                    "eventID": raw.get("eventID"),
                    "eventType": raw.get("eventType"),
                    "object": raw["data"]["resourceName"],
                    "bucket": raw["data"]["additionalDetails"]["bucketName"],
                    "etag": raw["data"]["additionalDetails"]["eTag"],
                }
            entry = {"time": started, "seconds": round(time.time() - started, 3), "callId": call_id, "status": status, "event": event}
            entry["answer"] = parsed
            _record(workdir / INVOCATIONS, record_lock, entry)
            log.info("invocation %s: HTTP %d %s", call_id, status, parsed if isinstance(parsed, dict) else "")
            self._answer(status, answer)

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    stopping = threading.Event()

    def stop(*_: object) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    endpoint = f"http://{host}:{server.server_address[1]}{INVOKE_PATH}"
    (workdir / "endpoint").write_text(endpoint + "\n")
    log.info("function invoke endpoint %s (fdk socket %s)", endpoint, container.socket)
    try:
        server.serve_forever(0.2)
    finally:
        server.server_close()
        container.stop()
        (workdir / "endpoint").unlink(missing_ok=True)
