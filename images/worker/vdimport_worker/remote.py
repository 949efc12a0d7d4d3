"""Run the worker-side scripts on the worker VM through the Run Command API.

No SSH, no inbound ports: each script (``vm/*.sh``, prefixed by ``vm/lib.sh`` and any ``PRELUDES``) travels as
Run Command text, at most 4 KB. Values reach the script only as shell-quoted variable
assignments, so nothing from an object name or metadata is ever parsed as shell code.
The script's last line carries its result (``VDIMPORT_RESULT {json}``) or its one-line
cause (``VDIMPORT_ERROR ...``, or ``VDIMPORT_REJECT ...`` when the image itself is unusable).
Run Command returns only the last 1 KB of output as text: the scripts whose result can be
larger (``LARGE_RESULTS``) send their whole output to an object in the work bucket instead
(``output.py``) when one is configured.

Idempotency: a command is named after the run and the script. If a command of that name
is still running (the step was killed and restarted), we wait for it instead of starting a
second one; if it succeeded, its result is reused (while its output object is there: it is
deleted once read, so a finished step run again runs the script again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import oci

from .clients import Clients, list_all
from .naming import RunNames
from .output import OutputObject, redacted
from .waiting import poll

log = logging.getLogger(__name__)

MAX_SCRIPT_BYTES = 4096
TEXT_OUTPUT_BYTES = 1024  # what Run Command keeps of a command's output as text (its end)
RUNNING_STATES = ("ACCEPTED", "IN_PROGRESS")
GONE_INSTANCE_STATES = ("STOPPING", "STOPPED", "TERMINATING", "TERMINATED")


class RemoteError(RuntimeError):
    """A worker script failed; the message is its one-line cause. ``rejected``: the script
    found the image itself unusable (``reject`` in lib.sh), so a retry cannot help."""

    def __init__(self, message: str, rejected: bool = False):
        super().__init__(message)
        self.rejected = rejected


@dataclass(frozen=True)
class ScriptResult:
    result: dict[str, Any]
    output: str
    command_id: str
    reused: bool = False


# Variables the scripts use in shell arithmetic, where bash would evaluate a string such as
# ``a[$(cmd)]`` as code: they must be non-negative integers whatever a step's input says.
NUMBERS = frozenset({"VSIZE", "OFFSET", "LENGTH", "STREAMS", "DISK", "NEED"})
# Scripts that share more than lib.sh: the parts prepended to them, in order.
PRELUDES: dict[str, tuple[str, ...]] = {"write": ("lib", "slices"), "verify": ("lib", "slices")}
# Scripts whose result can outgrow TEXT_OUTPUT_BYTES: download (qemu-img info of an image with
# many internal snapshots) and fsck (an entry per partition). With a work bucket their output
# goes to Object Storage; without one, as text, and a result that does not fit fails saying so.
LARGE_RESULTS = frozenset({"download", "fsck"})


def _script_text(name: str) -> str:
    return resources.files("vdimport_worker").joinpath("vm", f"{name}.sh").read_text()


def _code_lines(text: str) -> str:
    """The script without comment-only lines: every byte counts against the 4 KB limit."""
    return "".join(line for line in text.splitlines(keepends=True) if not line.lstrip().startswith("#"))


def build_script(name: str, variables: dict[str, str | int]) -> str:
    """The full Run Command text: quoted variables, the shared prelude, the script."""
    lines = ["#!/bin/bash"]
    for key, value in sorted(variables.items()):
        if not key.isidentifier() or not key.isupper():
            raise ValueError(f"bad script variable name {key!r}")
        if key in NUMBERS and (type(value) is not int or value < 0):
            raise ValueError(f"script variable {key} must be a non-negative integer, not {value!r}")
        lines.append(f"{key}={shlex.quote(str(value))}")
    parts = (*PRELUDES.get(name, ("lib",)), name)
    text = "\n".join(lines) + "\n" + "".join(_code_lines(_script_text(part)) for part in parts)
    size = len(text.encode())
    if size > MAX_SCRIPT_BYTES:
        raise RemoteError(f"worker script {name} is {size} bytes, over Run Command's 4 KB limit")
    return text


def fits(name: str, variables: dict[str, str | int]) -> bool:
    """Whether ``name`` with these values fits in one Run Command text."""
    try:
        build_script(name, {"RUN": "x" * 12, **variables})
    except RemoteError:
        return False
    return True


def parse_output(text: str) -> tuple[dict[str, Any] | None, str | None, bool]:
    """The result JSON, or the error line and whether it rejects the image, from a script's output tail."""
    result, error, rejected = None, None, False
    for line in text.splitlines():
        if line.startswith("VDIMPORT_RESULT "):
            try:
                result = json.loads(line[len("VDIMPORT_RESULT ") :])
            except ValueError:
                error = "the worker script printed a malformed result"
        elif line.startswith(("VDIMPORT_ERROR ", "VDIMPORT_REJECT ")):
            error = line.split(" ", 1)[1].strip()
            rejected = line.startswith("VDIMPORT_REJECT ")
    return result, error, rejected


class WorkerShell:
    def __init__(
        self,
        clients: Clients,
        names: RunNames,
        instance_id: str,
        compartment_id: str,
        poll_max: float = 10.0,
        work_bucket: str | None = None,
    ):
        self.clients = clients
        self.names = names
        self.instance_id = instance_id
        self.compartment_id = compartment_id
        self.poll_max = poll_max
        self.work_bucket = work_bucket
        self._command_live = False  # a command of ours may still be running on the worker

    def run(self, script: str, variables: dict[str, str | int], timeout_seconds: int, secret: bool = False) -> ScriptResult:
        """Run ``vm/<script>.sh`` on the worker and return its result; raise RemoteError with its cause.

        ``secret``: the variables hold a credential (the PAR URL); the script text is then
        never reused from an earlier command, and the command's display name carries no value.
        """
        text = build_script(script, {"RUN": self.names.key, **variables})
        # The same script with the same values is the same command; one carrying a
        # credential is named by the script alone, so a restarted step finds it running.
        digest = "" if secret else "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
        display = f"{self.names.prefix}-{script}{digest}"
        sink = None
        if script in LARGE_RESULTS and self.work_bucket:
            sink = OutputObject(self.clients, self.names, self.work_bucket, display)
        self._command_live = False
        try:
            return self._run(script, text, display, timeout_seconds, secret, sink)
        finally:
            if sink is not None and self._command_live:  # stopped (SIGTERM) or gave up waiting
                log.info("The %s command still runs: its output PAR stays for a retried step (else the reaper removes it)", script)
            elif sink is not None:
                self._remove(sink)

    # --- internals ---------------------------------------------------------------------------
    def _run(self, script: str, text: str, display: str, timeout_seconds: int, secret: bool, sink: OutputObject | None) -> ScriptResult:
        existing = self._latest_execution(display)
        if existing is not None and existing.lifecycle_state in RUNNING_STATES:
            log.info("A %s command from an earlier attempt is still running on the worker; waiting for it", script)
            self._command_live = True
            return self._finish(script, existing.instance_agent_command_id, timeout_seconds, sink, reused=True)
        if existing is not None and existing.lifecycle_state == "SUCCEEDED" and not secret:
            output = self._output(self._execution(existing.instance_agent_command_id), sink)
            parsed = parse_output(output)[0] if output is not None else None
            if output is not None and parsed is not None:
                log.info("The %s script already succeeded on the worker; reusing its result", script)
                return ScriptResult(parsed, output, existing.instance_agent_command_id, reused=True)
            if output is None:
                log.info("The %s script already succeeded on the worker, but its output is gone; running it again", script)
        output_details = (
            sink.target(timeout_seconds)
            if sink is not None
            else oci.compute_instance_agent.models.InstanceAgentCommandOutputViaTextDetails(output_type="TEXT")
        )
        details = oci.compute_instance_agent.models.CreateInstanceAgentCommandDetails(
            compartment_id=self.compartment_id,
            display_name=display,
            execution_time_out_in_seconds=int(timeout_seconds),
            target=oci.compute_instance_agent.models.InstanceAgentCommandTarget(instance_id=self.instance_id),
            content=oci.compute_instance_agent.models.InstanceAgentCommandContent(
                source=oci.compute_instance_agent.models.InstanceAgentCommandSourceViaTextDetails(
                    source_type="TEXT", text=text, text_sha256=hashlib.sha256(text.encode()).hexdigest()
                ),
                output=output_details,
            ),
        )
        self._command_live = True  # a stop from here on may leave it running
        try:
            command = self.clients.agent.create_instance_agent_command(details).data
        except oci.exceptions.ServiceError:
            self._command_live = False
            raise
        log.info("Started %s on the worker (command %s)", script, command.id)
        return self._finish(script, command.id, timeout_seconds, sink)

    def _latest_execution(self, display_name: str) -> Any:
        executions = list_all(
            self.clients.agent.list_instance_agent_command_executions,
            compartment_id=self.compartment_id,
            instance_id=self.instance_id,
        )
        mine = [e for e in executions if e.display_name == display_name]
        return max(mine, key=lambda e: e.time_created) if mine else None

    def _execution(self, command_id: str) -> Any:
        return self.clients.agent.get_instance_agent_command_execution(command_id, self.instance_id).data

    def _output(self, execution: Any, sink: OutputObject | None) -> str | None:
        """The output of a finished command: its text, or its object (None: the object is gone)."""
        content = getattr(execution, "content", None)
        if content is None or content.output_type == "TEXT":
            return _output_text(execution)
        if sink is None:
            raise RemoteError("the command's output went to Object Storage, and VDIMPORT_WORK_BUCKET no longer names the bucket")
        return sink.read()

    def _remove(self, sink: OutputObject) -> None:
        """Delete the output object and its PAR; a failure leaves them to the reaper (and the PAR to its expiry)."""
        try:
            sink.remove()
        except oci.exceptions.ServiceError as exc:
            log.warning("Could not delete the command's output object or its PAR (%s %s); the reaper will", exc.status, exc.code)
        else:
            log.info("Deleted the command's output object and its pre-authenticated request")

    def _finish(self, script: str, command_id: str, timeout_seconds: int, sink: OutputObject | None, reused: bool = False) -> ScriptResult:
        checks = {"count": 0}
        started = time.monotonic()

        def fetch() -> Any:
            checks["count"] += 1
            if checks["count"] % 5 == 0:
                self._raise_if_gone(script)
            return self._execution(command_id)

        def heartbeat(execution: Any, elapsed: float) -> None:
            log.info("  %s still running on the worker (%s, %.0f s)", script, execution.lifecycle_state, elapsed)

        execution = poll(
            fetch,
            lambda e: e.lifecycle_state not in RUNNING_STATES,
            f"{script} on the worker",
            timeout_seconds + 120,
            self.poll_max,
            progress=heartbeat,
        )
        self._command_live = False
        found = self._output(execution, sink)
        output = found or ""
        for line in output.splitlines():
            if line and not line.startswith("VDIMPORT_"):
                log.info("  worker| %s", line)
        parsed, error, rejected = parse_output(output)
        state = execution.lifecycle_state
        if state == "SUCCEEDED" and parsed is not None:
            log.info("%s finished on the worker in %.1f s", script, time.monotonic() - started)
            return ScriptResult(parsed, output, command_id, reused)
        try:  # a lost agent ends its command as TIMED_OUT or FAILED: say why
            self._raise_if_gone(script)
        except oci.exceptions.ServiceError as exc:
            log.warning("Could not read the worker's state (%s %s)", exc.status, exc.code)
        if state == "TIMED_OUT":
            raise RemoteError(f"{script} on the worker timed out after {timeout_seconds} s")
        if state == "CANCELED":
            raise RemoteError(f"{script} on the worker was canceled")
        exit_code = getattr(execution.content, "exit_code", None)
        if found is None:  # no output object: the agent says why (a PAR URL in its message is hidden)
            message = redacted(str(getattr(execution.content, "message", None) or "no message"))
            if state == "SUCCEEDED":
                raise RemoteError(f"{script} succeeded on the worker, but its output did not reach the work bucket: {message}")
            raise RemoteError(f"{script} on the worker failed (exit {exit_code}), and its output did not reach the work bucket: {message}")
        if error is None and state == "SUCCEEDED" and execution.content.output_type == "TEXT" and cut_off(output):
            raise RemoteError(truncated_message(script))
        raise RemoteError(error or f"{script} on the worker failed (exit {exit_code}) without saying why", rejected=rejected)

    def _raise_if_gone(self, script: str) -> None:
        state = self.clients.compute.get_instance(self.instance_id).data.lifecycle_state
        if state in GONE_INSTANCE_STATES:
            self._command_live = False  # its command is gone with it
            raise RemoteError(f"the worker instance {self.instance_id} went {state} while {script} ran on it")


def cut_off(text: str) -> bool:
    """Whether a text output is Run Command's 1 KB tail of a longer one (the cut may drop up to 3
    bytes of a UTF-8 character)."""
    return len(text.encode()) >= TEXT_OUTPUT_BYTES - 3


def truncated_message(script: str) -> str:
    return (
        f"the result of {script} exceeded Run Command's 1 KB text output and was cut off; set VDIMPORT_WORK_BUCKET "
        "(a bucket for command output, not the import bucket) so that large results travel through Object Storage"
    )


def _output_text(execution: Any) -> str:
    content = getattr(execution, "content", None)
    return (getattr(content, "text", None) or "") if content else ""
