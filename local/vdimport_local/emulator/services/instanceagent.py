"""Compute Instance Agent, Run Command (``/20180530``): commands and their executions.

A command targets one instance, so it has one execution, stored as kind
``instanceAgentCommandExecution`` under the command's id. The API side lives here
(validation, the command and execution JSON, cancel); running the script is the worker
VM's agent in :mod:`..vm`.

Limits checked as OCI documents them: script text at most 4 KB, ``textSha256`` when given,
``executionTimeOutInSeconds`` 0..86400 (0: no timeout). ``content.commandString`` (run a
command line next to a downloaded script) is not emulated and answers 400.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlsplit

from .. import ids
from ..errors import OCIError, incorrect_state, invalid, missing, not_found
from ..routing import Request, Response, Service, page
from ..store import Resource, Store

service = Service("instanceagent")

COMMAND = "instanceAgentCommand"
EXECUTION = "instanceAgentCommandExecution"
MAX_TEXT_BYTES = 4096
MAX_TIMEOUT_SECONDS = 86400
TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELED")
LIFECYCLE_STATES = ("ACCEPTED", "IN_PROGRESS", *TERMINAL)
SOURCE_FIELDS = {
    "TEXT": ("text",),
    "OBJECT_STORAGE_URI": ("sourceUri",),
    "OBJECT_STORAGE_TUPLE": ("namespaceName", "bucketName", "objectName"),
}
OUTPUT_FIELDS = {
    "TEXT": (),
    "OBJECT_STORAGE_URI": ("outputUri",),
    "OBJECT_STORAGE_TUPLE": ("namespaceName", "bucketName", "objectName"),
}
EXECUTION_FIELDS = (
    "instanceAgentCommandId",
    "instanceId",
    "deliveryState",
    "lifecycleState",
    "timeCreated",
    "timeUpdated",
    "sequenceNumber",
    "displayName",
    "content",
)


# --- JSON shapes ---------------------------------------------------------------------


def render_command(command: Resource) -> dict[str, Any]:
    return {
        k: command.get(k)
        for k in (
            "id",
            "compartmentId",
            "displayName",
            "timeCreated",
            "timeUpdated",
            "isCanceled",
            "executionTimeOutInSeconds",
            "target",
            "content",
        )
    }


def render_execution(execution: Resource) -> dict[str, Any]:
    out = {k: execution.get(k) for k in EXECUTION_FIELDS}
    out["content"] = dict(execution["content"])
    return out


def _source(content: dict[str, Any]) -> dict[str, Any]:
    source = content.get("source")
    if not isinstance(source, dict):
        raise missing("content.source")
    kind = source.get("sourceType")
    if kind not in SOURCE_FIELDS:
        raise invalid(f"content.source.sourceType must be one of {', '.join(SOURCE_FIELDS)}")
    out: dict[str, Any] = {"sourceType": kind}
    for name in SOURCE_FIELDS[kind]:
        value = source.get(name)
        if not isinstance(value, str) or not value:
            raise missing(f"content.source.{name}")
        out[name] = value
    if kind == "OBJECT_STORAGE_URI":
        _check_url(out["sourceUri"], "content.source.sourceUri")
    if kind == "TEXT":
        text = out["text"].encode()
        if len(text) > MAX_TEXT_BYTES:
            raise invalid(f"content.source.text is {len(text)} bytes; the limit is {MAX_TEXT_BYTES} bytes (4 KB)")
        wanted = source.get("textSha256")
        if wanted:
            if not isinstance(wanted, str) or wanted.lower() != hashlib.sha256(text).hexdigest():
                raise invalid("content.source.textSha256 does not match the SHA-256 of content.source.text")
            out["textSha256"] = wanted
    return out


def _output(content: dict[str, Any]) -> dict[str, Any]:
    output = content.get("output")
    if output is None:
        return {"outputType": "TEXT"}
    if not isinstance(output, dict):
        raise invalid("content.output must be an object")
    kind = output.get("outputType")
    if kind not in OUTPUT_FIELDS:
        raise invalid(f"content.output.outputType must be one of {', '.join(OUTPUT_FIELDS)}")
    out: dict[str, Any] = {"outputType": kind}
    for name in OUTPUT_FIELDS[kind]:
        value = output.get(name)
        if not isinstance(value, str) or not value:
            raise missing(f"content.output.{name}")
        out[name] = value
    if kind == "OBJECT_STORAGE_URI":
        _check_url(out["outputUri"], "content.output.outputUri")
    return out


def _check_url(value: str, name: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise invalid(f"{name} must be an http(s) Object Storage URL or pre-authenticated request")


def _timeout(body: dict[str, Any]) -> int:
    value = body.get("executionTimeOutInSeconds")
    if value is None:
        raise missing("executionTimeOutInSeconds")
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid("executionTimeOutInSeconds must be an integer")
    if not 0 <= value <= MAX_TIMEOUT_SECONDS:
        raise invalid(f"executionTimeOutInSeconds must be between 0 and {MAX_TIMEOUT_SECONDS}")
    return value


def _next_sequence(store: Store) -> int:
    number = int(store.extra.get("runcommand_sequence", 0)) + 1
    store.extra["runcommand_sequence"] = number
    store.touch()
    return number


# --- operations ----------------------------------------------------------------------


@service.route("POST", "/20180530/instanceAgentCommands", "CreateInstanceAgentCommand")
def create_command(request: Request) -> Response:
    body = request.json()
    em = request.emulator
    store = em.store
    compartment = body.get("compartmentId")
    if not compartment:
        raise missing("compartmentId")
    timeout = _timeout(body)
    target = body.get("target")
    if not isinstance(target, dict) or not target.get("instanceId"):
        raise missing("target.instanceId")
    content = body.get("content")
    if not isinstance(content, dict):
        raise missing("content")
    if content.get("commandString"):
        raise invalid("content.commandString is not supported by the emulator: send the script as content.source")
    source = _source(content)
    output = _output(content)
    display_name = body.get("displayName")
    if display_name is not None and not isinstance(display_name, str):
        raise invalid("displayName must be a string")
    instance_id = str(target["instanceId"])
    instance = store.find("instance", instance_id)
    if instance is None:
        raise not_found("instance")
    if instance.get("lifecycleState") in ("TERMINATING", "TERMINATED"):
        raise incorrect_state(f"instance {instance_id} is {instance['lifecycleState']}")

    now = ids.now_iso()
    command_id = ids.ocid("instanceagentcommand")
    command = store.add(
        COMMAND,
        {
            "id": command_id,
            "compartmentId": compartment,
            "displayName": display_name or f"command-{now}",
            "timeCreated": now,
            "timeUpdated": now,
            "isCanceled": False,
            "executionTimeOutInSeconds": timeout,
            "target": {"instanceId": instance_id},
            "content": {"source": source, "output": output},
            "_sequence": _next_sequence(store),
        },
    )
    store.add(
        EXECUTION,
        {
            "id": command_id,
            "instanceAgentCommandId": command_id,
            "instanceId": instance_id,
            "deliveryState": "VISIBLE",
            "lifecycleState": "ACCEPTED",
            "timeCreated": now,
            "timeUpdated": now,
            "sequenceNumber": command["_sequence"],
            "displayName": command["displayName"],
            "content": dict(output),
            "_compartmentId": compartment,
            "_created": store.clock(),
        },
    )
    store.touch()
    em.vms.submit(command_id, instance_id)
    return Response.json(render_command(command), headers={"etag": ids.etag()})


@service.route("GET", "/20180530/instanceAgentCommands/{instanceAgentCommandId}", "GetInstanceAgentCommand")
def get_command(request: Request) -> Response:
    command = request.emulator.store.get(COMMAND, request.params["instanceAgentCommandId"], "instance agent command")
    return Response.json(render_command(command), headers={"etag": ids.etag()})


@service.route("DELETE", "/20180530/instanceAgentCommands/{instanceAgentCommandId}", "CancelInstanceAgentCommand")
def cancel_command(request: Request) -> Response:
    """Best effort, as on OCI: a command that already ended stays as it ended (still 204)."""
    em = request.emulator
    command_id = request.params["instanceAgentCommandId"]
    command = em.store.get(COMMAND, command_id, "instance agent command")
    execution = em.store.get(EXECUTION, command_id, "instance agent command")
    if execution["lifecycleState"] in TERMINAL:
        return Response.empty()
    command["isCanceled"] = True
    command["timeUpdated"] = ids.now_iso()
    em.store.touch()
    em.vms.cancel(command_id)
    return Response.empty()


@service.route("GET", "/20180530/instanceAgentCommands", "ListInstanceAgentCommands")
def list_commands(request: Request) -> Response:
    compartment = request.query.get("compartmentId")
    if not compartment:
        raise missing("compartmentId")
    commands = [c for c in request.emulator.store.all(COMMAND) if c["compartmentId"] == compartment]
    _sort(commands, request)
    summaries = [
        {
            "instanceAgentCommandId": c["id"],
            "displayName": c["displayName"],
            "compartmentId": c["compartmentId"],
            "timeCreated": c["timeCreated"],
            "timeUpdated": c["timeUpdated"],
            "isCanceled": c["isCanceled"],
        }
        for c in commands
    ]
    chunk, headers = page(summaries, request)
    return Response.json(chunk, headers=headers)


@service.route("GET", "/20180530/instanceAgentCommands/{instanceAgentCommandId}/status", "GetInstanceAgentCommandExecution")
def get_execution(request: Request) -> Response:
    instance_id = request.query.get("instanceId")
    if not instance_id:
        raise missing("instanceId")
    execution = request.emulator.store.find(EXECUTION, request.params["instanceAgentCommandId"])
    if execution is None or execution["instanceId"] != instance_id:
        raise not_found("instance agent command execution")
    return Response.json(render_execution(execution), headers={"etag": ids.etag()})


@service.route("GET", "/20180530/instanceAgentCommandExecutions", "ListInstanceAgentCommandExecutions")
def list_executions(request: Request) -> Response:
    compartment = request.query.get("compartmentId")
    instance_id = request.query.get("instanceId")
    if not compartment:
        raise missing("compartmentId")
    if not instance_id:
        raise missing("instanceId")
    state = (request.query.get("lifecycleState") or "").upper()
    if state and state not in LIFECYCLE_STATES:
        raise invalid(f"lifecycleState must be one of {', '.join(LIFECYCLE_STATES)}")
    executions = [
        e
        for e in request.emulator.store.all(EXECUTION)
        if e["instanceId"] == instance_id and e["_compartmentId"] == compartment and (not state or e["lifecycleState"] == state)
    ]
    _sort(executions, request)
    chunk, headers = page([render_execution(e) for e in executions], request)
    return Response.json(chunk, headers=headers)


def _sort(items: list[Resource], request: Request) -> None:
    """TIMECREATED (default, newest first) or DISPLAYNAME (A to Z); ``sortOrder`` overrides."""
    by = request.query.get("sortBy") or "TIMECREATED"
    if by not in ("TIMECREATED", "DISPLAYNAME"):
        raise invalid("sortBy must be TIMECREATED or DISPLAYNAME")
    order = (request.query.get("sortOrder") or ("DESC" if by == "TIMECREATED" else "ASC")).upper()
    if order not in ("ASC", "DESC"):
        raise invalid("sortOrder must be ASC or DESC")
    if by == "TIMECREATED":
        # sequence numbers break ties between commands created in the same millisecond
        items.sort(key=lambda r: (r["timeCreated"], r.get("_sequence") or r.get("sequenceNumber") or 0), reverse=order == "DESC")
    else:
        items.sort(key=lambda r: r.get("displayName") or "", reverse=order == "DESC")


# --- admin: the whole output, which OCI only gives through an Object Storage target ---


@service.route("GET", "/_ocisim/instanceAgentCommands/{instanceAgentCommandId}/output", "AdminCommandOutput", authenticated=False)
def admin_output(request: Request) -> Response:
    em = request.emulator
    execution = em.store.get(EXECUTION, request.params["instanceAgentCommandId"], "instance agent command")
    path = em.vms.output_path(execution["instanceId"], execution["instanceAgentCommandId"])
    if not path.exists():
        raise OCIError(404, "NotAuthorizedOrNotFound", "the command has produced no output yet")
    return Response(status=200, body=path.read_bytes(), headers={"content-type": "application/octet-stream"})
