"""Helpers for the function tests: a fake Airflow 3 API on loopback and the test credentials."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from vdimport_local.airflow import free_port

USERNAME = "vdimport-trigger"
PASSWORD = "s3cret-Pa55word!"


def _jwt(claims: dict[str, Any]) -> str:
    def enc(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{enc({'alg': 'HS512', 'typ': 'JWT'})}.{enc(claims)}.c2lnbmF0dXJl"


class FakeAirflow:
    """The two Airflow 3 endpoints the function uses, with Airflow's answers (JWT, 201, 409, 401, 404)."""

    def __init__(self, token_seconds: int = 3600):
        self.users = {USERNAME: PASSWORD}
        self.dags = {"virtual_disk_import"}
        self.runs: dict[str, dict[str, Any]] = {}
        self.logins = 0
        self.posts: list[dict[str, Any]] = []
        self.fail_with: list[int] = []  # answer these statuses first (e.g. 503s), one per request
        self.token_seconds = token_seconds
        self.tokens: set[str] = set()
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _authorized(self) -> bool:
                """Whether the request carries a token this Airflow issued; answers 401 when not."""
                auth = self.headers.get("authorization", "")
                if auth.startswith("Bearer ") and auth[7:] in fake.tokens:
                    return True
                self._answer(401, {"detail": "Not authenticated"})
                return False

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"null")
                with fake.lock:
                    if fake.fail_with:
                        status = fake.fail_with.pop(0)
                        self._answer(status, {"detail": "Service Unavailable"})
                        return
                    if self.path == "/auth/token":
                        if not isinstance(body, dict) or fake.users.get(body.get("username")) != body.get("password"):
                            self._answer(401, {"detail": "Invalid credentials"})
                            return
                        fake.logins += 1
                        token = _jwt({"sub": body["username"], "exp": int(time.time()) + fake.token_seconds, "jti": uuid.uuid4().hex})
                        fake.tokens.add(token)
                        self._answer(201, {"access_token": token})
                        return
                    if not self._authorized():
                        return
                    parts = self.path.strip("/").split("/")
                    if parts[:3] != ["api", "v2", "dags"] or len(parts) != 5 or parts[4] != "dagRuns":
                        self._answer(404, {"detail": "Not Found"})
                        return
                    if parts[3] not in fake.dags:
                        self._answer(404, {"detail": f"The Dag with ID: `{parts[3]}` was not found"})
                        return
                    fake.posts.append(body)
                    if "logical_date" not in body:
                        self._answer(422, {"detail": "logical_date: Field required"})
                        return
                    run_id = body["dag_run_id"]
                    if run_id in fake.runs:
                        self._answer(409, {"detail": f"DAG Run with run_id: `{run_id}` already exists"})
                        return
                    fake.runs[run_id] = body
                    self._answer(200, {"dag_run_id": run_id, "state": "queued", "conf": body["conf"]})

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


__all__ = ["PASSWORD", "USERNAME", "FakeAirflow", "free_port"]
