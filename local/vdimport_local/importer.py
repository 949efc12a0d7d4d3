"""``vdimport-local import``: upload a disk image to the local bucket and follow what happens.

Only the upload is ours: the emulator emits the object's ``createobject`` event, the Events
rule invokes the function, the function triggers the DAG, Airflow runs the steps. This
module then watches that chain as a user would: it knows the run id in advance (the
function derives it from namespace, bucket, object and etag), reads the function's recorded
answer to learn why an upload was *not* imported, follows the run's task instances through
the Airflow API, and reads the report XCom and the volume's backing file at the end.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import oci

from vdimport_function.handler import dag_run_id

from . import fnhost
from .airflow import ApiError, LocalAirflow
from .pipeline import STEP_ORDER
from .stack import DAG_ID, LocalStack

MIB = 1024 * 1024
DEFAULT_PART_SIZE = 64 * MIB  # above this, a multipart upload (as `oci os object put` does above 128 MiB)
DECISION_TIMEOUT_SECONDS = 180.0  # covers the Events service's redeliveries to a failing function


class ImportFailed(RuntimeError):
    """The upload was not imported; the message is the one-line cause."""


@dataclass(frozen=True)
class UploadedObject:
    namespace: str
    bucket: str
    name: str
    etag: str
    size: int

    @property
    def run_id(self) -> str:
        return dag_run_id(self.namespace, self.bucket, self.name, self.etag)


def parse_metadata(items: list[str]) -> dict[str, str]:
    """``key=value`` pairs as ``opc-meta-*`` metadata; a clear error for anything else."""
    metadata: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--meta {item!r}: expected key=value")
        if any(c.isspace() or not c.isprintable() for c in key):
            raise ValueError(f"--meta {item!r}: a metadata key may not contain spaces or control characters")
        metadata[key] = value
    return metadata


class _Progress:
    """A progress bar on a terminal, a line per quarter otherwise (CI logs)."""

    def __init__(self, label: str, total: int, stream: TextIO):
        self.label, self.total, self.stream = label, max(total, 1), stream
        self.done = 0
        self.started = time.monotonic()
        self.tty = stream.isatty()
        self.last_quarter = 0
        self.lock = threading.Lock()

    def add(self, count: int) -> None:
        with self.lock:
            self.done = min(self.total, self.done + count)
            fraction = self.done / self.total
            rate = self.done / max(time.monotonic() - self.started, 1e-6) / 1e6
            text = f"{self.label}: {fraction:4.0%} {self.done / 1e6:8.1f}/{self.total / 1e6:.1f} MB {rate:6.1f} MB/s"
            if self.tty:
                width = 30
                bar = "#" * int(width * fraction)
                self.stream.write(f"\r[{bar:<{width}}] {text}")
                if self.done >= self.total:
                    self.stream.write("\n")
            elif math.floor(fraction * 4) > self.last_quarter:
                self.last_quarter = math.floor(fraction * 4)
                self.stream.write(f"    {text}\n")
            self.stream.flush()


class Importer:
    def __init__(self, stack: LocalStack, log: TextIO = sys.stderr):
        self.stack = stack
        self.state = stack.require()
        self.log = log
        self.emulator = stack.emulator()
        self.airflow: LocalAirflow = stack.airflow()

    def say(self, text: str) -> None:
        self.log.write(text + "\n")
        self.log.flush()

    # --- upload -----------------------------------------------------------------------------
    def upload(self, path: Path, name: str, metadata: Mapping[str, str], part_size: int = DEFAULT_PART_SIZE) -> UploadedObject:
        """Upload ``path`` as ``name`` (multipart above ``part_size``) with a progress display."""
        storage = self.emulator.client(oci.object_storage.ObjectStorageClient)
        namespace, bucket = self.state["namespace"], self.state["bucket"]
        size = path.stat().st_size
        kind = "multipart, " if size > part_size else ""
        self.say(f"==> Uploading {path} to oci://{bucket}@{namespace}/{name} ({kind}{size / 1e6:.1f} MB)")
        progress = _Progress("    upload", size, self.log)
        manager = oci.object_storage.UploadManager(storage, allow_parallel_uploads=True, parallel_process_count=3)
        reply = manager.upload_file(
            namespace,
            bucket,
            name,
            str(path),
            part_size=part_size,
            metadata=dict(metadata),
            progress_callback=progress.add,
        )
        if progress.done < size:  # single-part uploads report once at the end, or not at all
            progress.add(size - progress.done)
        etag = reply.headers["etag"]
        return UploadedObject(namespace, bucket, name, etag, size)

    # --- the function's decision ------------------------------------------------------------
    def _run_exists(self, run_id: str) -> bool:
        try:
            self.airflow.dag_run(DAG_ID, run_id)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def _event_id(self, obj: UploadedObject) -> str | None:
        for event in reversed(self.emulator.admin("GET", "events")):
            data = event.get("data", {})
            details = data.get("additionalDetails", {})
            if data.get("resourceName") == obj.name and details.get("eTag") == obj.etag and details.get("bucketName") == obj.bucket:
                return str(event["eventID"])
        return None

    def _deliveries_exhausted(self, obj: UploadedObject) -> bool:
        """The Events service gave up on this object's event: its last attempt failed and will not be retried."""
        event_id = self._event_id(obj)
        if not event_id:
            return False
        attempts = [d for d in self.emulator.admin("GET", "events/deliveries") if d.get("eventID") == event_id]
        return bool(attempts) and not attempts[-1].get("willRetry") and attempts[-1].get("status") != 200

    def wait_for_trigger(self, obj: UploadedObject, timeout: float = DECISION_TIMEOUT_SECONDS) -> str:
        """The run id once the function has triggered the run; ImportFailed with its reason if it did not."""
        run_id = obj.run_id
        deadline = time.monotonic() + timeout
        reported_error: str | None = None
        while True:
            if self._run_exists(run_id):
                self.say(f"==> The function triggered DAG run {run_id}")
                return run_id
            for entry in fnhost.invocations(self.stack.function_dir):
                event = entry.get("event") or {}
                if event.get("etag") != obj.etag or event.get("object") != obj.name:
                    continue
                answer = entry.get("answer")
                if entry.get("status") == 200 and isinstance(answer, dict) and answer.get("decision") in ("skipped", "rejected"):
                    raise ImportFailed(f"not imported: the function {answer['decision']} the upload: {answer.get('reason')}")
                if entry.get("status") != 200:
                    message = answer.get("message") if isinstance(answer, dict) else answer
                    if message != reported_error:
                        reported_error = str(message)
                        self.say(f"    the function failed (the event will be redelivered): {reported_error}")
            if self._deliveries_exhausted(obj) and not self._run_exists(run_id):
                cause = reported_error or "no delivery of the event succeeded"
                raise ImportFailed(f"not imported: the function failed on every delivery of the upload's event: {cause}")
            if time.monotonic() > deadline:
                raise ImportFailed(
                    f"no DAG run {run_id} after {timeout:.0f} s: the upload's event was not acted on; see: vdimport-local logs function"
                )
            time.sleep(0.3)

    # --- following the run ------------------------------------------------------------------
    def follow(self, run_id: str, timeout: float, show: bool = True) -> dict[str, Any]:
        """Poll the run until it ends, printing each step as it starts and finishes; the final run."""
        seen: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while True:
            run = self.airflow.dag_run(DAG_ID, run_id)
            if show:
                tasks = self.airflow.task_instances(DAG_ID, run_id)
                for step in STEP_ORDER:
                    ti = tasks.get(step)
                    state = (ti or {}).get("state")
                    if not ti or not state or seen.get(step) == state:
                        continue
                    seen[step] = state
                    if state == "running":
                        self.say(f"    .. {step}")
                    elif state in ("success", "failed", "upstream_failed", "skipped", "up_for_retry"):
                        mark = {"success": "ok", "failed": "FAILED", "up_for_retry": "retry"}.get(state, state)
                        seconds = ti.get("duration")
                        duration = f"{seconds:7.1f} s" if isinstance(seconds, int | float) else ""
                        self.say(f"    {mark:>6} {step:<22} {duration}")
            if run.get("state") in ("success", "failed"):
                return dict(run)
            if time.monotonic() > deadline:
                raise ImportFailed(f"run {run_id} still {run.get('state')} after {timeout:.0f} s; follow it in the Airflow UI")
            time.sleep(1.0)

    def failure_cause(self, run_id: str, tasks: Mapping[str, Mapping[str, Any]]) -> str:
        """The one-line cause of the first failed step (its ``FAILED:`` line)."""
        failed = [s for s in STEP_ORDER if (tasks.get(s) or {}).get("state") == "failed"]
        if not failed:
            return "the run failed without a failed step (timed out or was stopped); see the Airflow UI"
        step = failed[0]
        try_number = int(tasks[step].get("try_number") or 1)
        try:
            text = self.airflow.task_log(DAG_ID, run_id, step, max(try_number, 1))
        except ApiError:
            text = ""
        for line in reversed(text.splitlines()):
            if "FAILED: " in line:
                return f"{step}: {line.split('FAILED: ', 1)[1].strip()}"
        for line in reversed(text.splitlines()):
            if "failed (exit" in line or "Error" in line:
                return f"{step}: {line.strip()[:300]}"
        return f"{step} failed; see: vdimport-local logs {step}"

    def result(self, obj: UploadedObject | None, run_id: str | None, run: Mapping[str, Any] | None, error: str | None) -> dict[str, Any]:
        """The ``--json`` answer (and the data of the printed report)."""
        out: dict[str, Any] = {
            "state": "failed",
            "dag_run_id": run_id,
            "object": None,
            "volume_id": None,
            "volume_size_gb": None,
            "vpus_per_gb": None,
            "availability_domain": None,
            "source_format": None,
            "virtual_size": None,
            "steps": [],
            "volume_path": None,
            "volumes": [],
            "error": error,
            "airflow_url": None,
        }
        if obj is not None:
            out["object"] = {"namespace": obj.namespace, "bucket": obj.bucket, "name": obj.name, "etag": obj.etag, "size": obj.size}
        if run_id and run is not None:
            quoted = urllib.parse.quote(run_id, safe="")
            out["airflow_url"] = f"{self.airflow.url}/dags/{DAG_ID}/runs/{quoted}"
            tasks = self.airflow.task_instances(DAG_ID, run_id)
            out["steps"] = [
                {"name": s, "state": (tasks.get(s) or {}).get("state"), "seconds": (tasks.get(s) or {}).get("duration")} for s in STEP_ORDER
            ]
            if run.get("state") == "success":
                report = self.airflow.xcom(DAG_ID, run_id, "report")
                out.update(
                    state="success",
                    volume_id=report["volume_id"],
                    volume_size_gb=report["volume_size_gb"],
                    vpus_per_gb=report["vpus_per_gb"],
                    availability_domain=report["availability_domain"],
                    source_format=report["source"]["format"],
                    virtual_size=report["source"]["virtual_size"],
                    volume_path=self.emulator.admin("GET", f"volumes/{report['volume_id']}")["path"],
                    # every volume of the run: more than one from a multi-disk OVA
                    volumes=[
                        {**volume, "volume_path": self.emulator.admin("GET", f"volumes/{volume['volume_id']}")["path"]}
                        for volume in report.get("volumes") or []
                    ],
                    report=report,
                )
            elif out["error"] is None:
                out["error"] = self.failure_cause(run_id, tasks)
        return out


def run_import(
    stack: LocalStack,
    path: Path,
    *,
    name: str | None = None,
    metadata: Mapping[str, str] | None = None,
    wait: bool = False,
    timeout: float = 1800.0,
    part_size: int = DEFAULT_PART_SIZE,
    log: TextIO = sys.stderr,
    show_steps: bool = True,
) -> dict[str, Any]:
    """Upload and (with ``wait``) follow the import; the result dict (``state`` success|failed|triggered)."""
    importer = Importer(stack, log)
    obj: UploadedObject | None = None
    run_id: str | None = None
    try:
        if not path.is_file():
            raise ImportFailed(f"{path}: not a file")
        obj = importer.upload(path, name or path.name, metadata or {}, part_size)
        run_id = importer.wait_for_trigger(obj)
        if not wait:
            result = importer.result(obj, run_id, None, None)
            result["state"] = "triggered"
            return result
        run = importer.follow(run_id, timeout, show_steps)
        return importer.result(obj, run_id, run, None)
    except ImportFailed as exc:
        run = None
        if run_id is not None:
            try:
                run = importer.airflow.dag_run(DAG_ID, run_id)
            except ApiError:
                run = None
        return importer.result(obj, run_id if run is not None else None, run, str(exc))


def render_report(result: Mapping[str, Any], extra: Callable[[], list[str]] | None = None) -> str:
    """The report a person reads at the end of an import."""
    lines = ["", "==================== vdimport report ===================="]
    obj = result.get("object") or {}
    if obj:
        lines.append(f"object        oci://{obj['bucket']}@{obj['namespace']}/{obj['name']}  ({obj['size'] / 1e6:.1f} MB)")
    lines.append(f"run           {result.get('dag_run_id') or '-'}")
    lines.append(f"result        {result['state'].upper()}")
    report = result.get("report")
    if report:
        volumes = result.get("volumes") or [{**report, "volume_path": result.get("volume_path")}]
        for volume in volumes:
            lines.extend(_volume_lines(volume, len(volumes) > 1))
        for warning in report.get("warnings") or []:
            lines.append(f"warning       {warning}")
    if result.get("error"):
        lines.append(f"error         {result['error']}")
    steps = [s for s in result.get("steps") or [] if s.get("state")]
    if steps:
        total = sum(s["seconds"] or 0 for s in steps)
        lines.append(f"steps         {len(steps)} ran, {total:.1f} s of step time:")
        for step in steps:
            seconds = f"{step['seconds']:7.1f} s" if isinstance(step.get("seconds"), int | float) else ""
            lines.append(f"                {step['name']:<22} {step['state']:<16} {seconds}")
    lines.extend(extra() if extra else [])
    if result.get("airflow_url"):
        lines.append(f"in Airflow    {result['airflow_url']}")
    lines.append("==========================================================")
    return "\n".join(lines)


def _volume_lines(volume: Mapping[str, Any], several: bool) -> list[str]:
    src = volume["source"]
    lines = [f"disk {volume.get('disk', 1)}        {src.get('member')}"] if several else []
    lines.append(f"volume        {volume['volume_name']}  ({volume['volume_id']})")
    lines.append(f"size          {volume['volume_size_gb']} GB at {volume['vpus_per_gb']} VPUs/GB in {volume['availability_domain']}")
    lines.append(f"source        {src['format']}, {src['virtual_size']} bytes virtual, {src['allocated_size']} allocated")
    lines.append(f"verify        {volume['checks']['verify']}")
    fsck = volume["checks"]["fsck"]
    for part in fsck if isinstance(fsck, list) else []:
        lines.append(f"fsck          partition {part['number']}: {part['fs']} {part['status']}")
    if fsck == "skipped":
        lines.append("fsck          skipped")
    lines.append(f"volume file   {volume.get('volume_path')}")
    return lines


def to_json(result: Mapping[str, Any]) -> str:
    return json.dumps(result, indent=1, default=str)
