"""Helpers for the idempotency and fault tests: kill a step mid-way, watch faults and calls.

``kill_step_during`` runs one ``vdimport-step`` as a real subprocess, holds one of its API
calls in the emulator (a ``hang`` fault), SIGKILLs the process while it waits for that call,
and waits until the emulator has carried the call out anyway, the way a pod killed right
after sending a create leaves the resource behind on OCI. What happened in between is
read from the emulator's admin API (fault hit counters, the call log, the history).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.pipeline import step_environment

HANG_SECONDS = 2.5  # how long the emulator holds the call the step is killed in (room for a loaded machine)


def fault_hits(emu: EmulatorHandle, rule_id: int) -> int:
    """How many calls a fault rule has hit so far (0 when the rule is gone)."""
    for rule in emu.admin("GET", "faults"):
        if rule["id"] == rule_id:
            return int(rule["hits"])
    return 0


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def calls_since(emu: EmulatorHandle, since: float, operation: str | None = None) -> list[dict[str, Any]]:
    """API calls the emulator received (and answered) since ``since`` (time.time())."""
    return [c for c in emu.calls(operation) if c["time"] >= since]


def created_since(emu: EmulatorHandle, kind: str, since: float) -> list[str]:
    """Ids of the resources of ``kind`` created since ``since``, from the emulator's history."""
    return [e["id"] for e in emu.history(kind) if e["event"] == "created" and e["time"] >= since]


def final_state(emu: EmulatorHandle, kind: str, resource_id: str) -> str | None:
    found = [r for r in emu.resources(kind) if r["id"] == resource_id]
    return found[0].get("lifecycleState") if found else None


@dataclass
class KilledStep:
    step: str
    operation: str
    output: str
    returncode: int


def kill_step_during(
    emu: EmulatorHandle,
    step: str,
    run_id: str,
    request: dict[str, Any],
    state: dict[str, Any],
    operation: str,
    nth: int = 1,
    env: dict[str, str] | None = None,
) -> KilledStep:
    """Run ``step`` as a subprocess and SIGKILL it while the emulator holds its ``nth`` ``operation`` call.

    Returns once the held call has been carried out by the emulator (the step's create
    landed after the step died), with the fault rule removed. Fails the test when the step
    ends before it reaches that call.
    """
    rule = emu.fault(operation, action="hang", seconds=HANG_SECONDS, nth=nth)
    started = time.time()
    environment = {**(env or step_environment(emu))}
    with tempfile.TemporaryDirectory(prefix="vdimport-kill-") as tmp:
        result_path = Path(tmp) / "return.json"
        state_path = Path(tmp) / "state.json"
        log_path = Path(tmp) / "output.log"
        state_path.write_text(json.dumps(state))
        environment["VDIMPORT_RESULT_PATH"] = str(result_path)
        argv = [sys.executable, "-m", "vdimport_worker", step, "--run-id", run_id, "--request", json.dumps(request)]
        with open(log_path, "wb") as log:
            process = subprocess.Popen([*argv, "--state", f"@{state_path}"], env=environment, stdout=log, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 90
                while fault_hits(emu, rule) < 1:
                    if process.poll() is not None:
                        raise AssertionError(
                            f"{step} ended (exit {process.returncode}) before its {operation} call #{nth}:\n{log_path.read_text()}"
                        )
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{step} did not reach its {operation} call #{nth} in time:\n{log_path.read_text()}")
                    time.sleep(0.02)
                process.send_signal(signal.SIGKILL)
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait()
        output = log_path.read_text()
        assert process.returncode == -signal.SIGKILL, f"{step} was not killed (exit {process.returncode}):\n{output}"
        assert not result_path.exists(), f"{step} wrote a result although it was killed mid-way"
    emu.clear_faults()
    # The held call still runs in the emulator after its client died: wait until it has.
    wait_for(lambda: len(calls_since(emu, started, operation)) >= nth, f"the held {operation} call to complete", timeout=30)
    return KilledStep(step, operation, output, process.returncode)


@dataclass(frozen=True)
class SmallImage:
    path: Path
    expected: bytes  # what qemu-img convert -O raw makes of it: the bytes a volume must hold


def small_image(work: Path) -> SmallImage:
    """A small GPT disk (ext4 with files, vfat) as qcow2: enough for every step to do real work."""
    from vdimport_local.diskimages import Partition, build_disk, convert, raw_bytes

    raw = build_disk(
        work / "disk.raw",
        [Partition("ext4", 24, {"etc/hostname": b"vdimport-test\n", "data.bin": bytes(range(256)) * 512}), Partition("vfat", 16)],
        table="gpt",
    )
    image = convert(raw, "qcow2", work / "disk.qcow2")
    raw.unlink()
    return SmallImage(image, raw_bytes(image, "qcow2"))


def upload_request(bucket: Any, image: Path, name: str, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """Upload ``image`` as ``name`` (with object metadata) and return the import request for it."""
    etag = bucket.put(name, image, metadata or {})
    return {"namespace": bucket.namespace, "bucket": bucket.name, "object": name, "etag": etag, "size": image.stat().st_size}
