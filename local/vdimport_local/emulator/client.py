"""Reaching a running emulator: OCI SDK clients for it and its admin API.

Used by the tests and by ``vdimport-local``; anything else only needs the two files the
emulator writes into its data directory (``oci_config`` and ``endpoint``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, TypeVar

import oci

T = TypeVar("T")


class EmulatorHandle:
    """An emulator by its data directory: SDK clients, admin calls, and its process if we started it."""

    def __init__(self, data_dir: Path, process: subprocess.Popen[bytes] | None = None):
        self.data_dir = Path(data_dir)
        self.process = process
        self.endpoint = (self.data_dir / "endpoint").read_text().strip()
        self.config_path = self.data_dir / "oci_config"
        self.config: dict[str, Any] = oci.config.from_file(str(self.config_path))

    # --- SDK --------------------------------------------------------------
    def client(self, cls: type[T], **kwargs: Any) -> T:
        """An SDK client of ``cls`` pointed at the emulator, signed with its key."""
        return cls(self.config, service_endpoint=self.endpoint, **kwargs)  # type: ignore[call-arg]

    @property
    def tenancy(self) -> str:
        return str(self.config["tenancy"])

    # --- admin API --------------------------------------------------------
    def admin(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        url = f"{self.endpoint}/_ocisim/{path.lstrip('/')}"
        req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - our own http endpoint
        req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback admin API
            raw = resp.read()
        return json.loads(raw) if raw else None

    def fault(self, operation: str, **spec: Any) -> int:
        return int(self.admin("POST", "faults", {"operation": operation, **spec})["id"])

    def clear_faults(self) -> None:
        self.admin("DELETE", "faults")

    def configure(self, **settings: Any) -> dict[str, Any]:
        return dict(self.admin("POST", "config", settings))

    def resources(self, kind: str) -> list[dict[str, Any]]:
        return list(self.admin("GET", f"resources?kind={kind}").get(kind, []))

    def calls(self, operation: str | None = None) -> list[dict[str, Any]]:
        return list(self.admin("GET", "calls" + (f"?operation={operation}" if operation else "")))

    def history(self, kind: str | None = None) -> list[dict[str, Any]]:
        return list(self.admin("GET", "history" + (f"?kind={kind}" if kind else "")))

    def messages(self, topic_id: str | None = None) -> list[dict[str, Any]]:
        """Notifications messages published so far, oldest first: ``messageId``, ``timeStamp``,
        ``topicId``, ``title``, ``body``, ``messageType``; ``topic_id`` narrows to one topic."""
        query = f"?topicId={urllib.parse.quote(topic_id, safe='')}" if topic_id else ""
        return list(self.admin("GET", "messages" + query))

    # --- process ----------------------------------------------------------
    @classmethod
    def start(cls, data_dir: Path, *extra_args: str, timeout: float = 30.0, log_path: Path | None = None) -> EmulatorHandle:
        """Start ``vdimport-local emulator`` as a child process and wait until it listens."""
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "endpoint").unlink(missing_ok=True)
        log_file = open(log_path or data_dir / "emulator.log", "ab")  # noqa: SIM115 - lives as long as the process
        process = subprocess.Popen(
            [sys.executable, "-m", "vdimport_local.cli", "emulator", "--data", str(data_dir), *extra_args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not (data_dir / "endpoint").exists():
            if process.poll() is not None:
                raise RuntimeError(f"emulator exited with {process.returncode}; see {log_file.name}")
            if time.monotonic() > deadline:
                process.kill()
                raise TimeoutError("emulator did not start listening in time")
            time.sleep(0.05)
        return cls(data_dir, process)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def wait_healthy(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.admin("GET", "health")
                return
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
