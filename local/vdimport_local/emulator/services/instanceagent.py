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
from ..routing import Request, Response, Service
from ..store import Resource, Store
from ._common import etag, optional_str, paged, required, sort_listed
from .compute import INSTANCE

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


def _typed(details: dict[str, Any], label: str, type_field: str, fields_by_type: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """The type field of a polymorphic detail (``sourceType``, ``outputType``) and the string fields that type requires."""
    kind = details.get(type_field)
    if kind not in fields_by_type:
        raise invalid(f"{label}.{type_field} must be one of {', '.join(fields_by_type)}")
    out: dict[str, Any] = {type_field: kind}
    for name in fields_by_type[kind]:
        value = details.get(name)
        if not isinstance(value, str) or not value:
            raise missing(f"{label}.{name}")
        out[name] = value
    return out


def _source(content: dict[str, Any]) -> dict[str, Any]:
    source = content.get("source")
    if not isinstance(source, dict):
        raise missing("content.source")
    out = _typed(source, "content.source", "sourceType", SOURCE_FIELDS)
    kind = out["sourceType"]
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
    out = _typed(output, "content.output", "outputType", OUTPUT_FIELDS)
    if out["outputType"] == "OBJECT_STORAGE_URI":
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


def _content(body: dict[str, Any]) -> dict[str, Any]:
    content = body.get("content")
    if not isinstance(content, dict):
        raise missing("content")
    if content.get("commandString"):
        raise invalid("content.commandString is not supported by the emulator: send the script as content.source")
    return {"source": _source(content), "output": _output(content)}


def _target_instance(body: dict[str, Any]) -> str:
    target = body.get("target")
    if not isinstance(target, dict) or not target.get("instanceId"):
        raise missing("target.instanceId")
    return str(target["instanceId"])


def _check_instance(store: Store, instance_id: str) -> None:
    """A command can only target an instance that exists and is not going away."""
    instance = store.find(INSTANCE, instance_id)
    if instance is None:
        raise not_found("instance")
    if instance.get("lifecycleState") in ("TERMINATING", "TERMINATED"):
        raise incorrect_state(f"instance {instance_id} is {instance['lifecycleState']}")


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
    compartment = required(body, "compartmentId")
    timeout = _timeout(body)
    instance_id = _target_instance(body)
    content = _content(body)
    display_name = optional_str(body, "displayName")
    _check_instance(store, instance_id)

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
            "content": content,
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
            "content": dict(content["output"]),
            "_compartmentId": compartment,
            "_created": store.clock(),
        },
    )
    store.touch()
    em.vms.submit(command_id, instance_id)
    return _respond(render_command(command))


def _respond(view: dict[str, Any]) -> Response:
    return Response.json(view, headers={"etag": etag(view)})


def _by_id(request: Request, kind: str) -> Resource:
    """The command (or its execution: they share the id) named in the path."""
    return request.emulator.store.get(kind, request.params["instanceAgentCommandId"], "instance agent command")


@service.route("GET", "/20180530/instanceAgentCommands/{instanceAgentCommandId}", "GetInstanceAgentCommand")
def get_command(request: Request) -> Response:
    return _respond(render_command(_by_id(request, COMMAND)))


@service.route("DELETE", "/20180530/instanceAgentCommands/{instanceAgentCommandId}", "CancelInstanceAgentCommand")
def cancel_command(request: Request) -> Response:
    """Best effort, as on OCI: a command that already ended stays as it ended (still 204)."""
    em = request.emulator
    command = _by_id(request, COMMAND)
    if _by_id(request, EXECUTION)["lifecycleState"] in TERMINAL:
        return Response.empty()
    command["isCanceled"] = True
    command["timeUpdated"] = ids.now_iso()
    em.store.touch()
    em.vms.cancel(command["id"])
    return Response.empty()


@service.route("GET", "/20180530/instanceAgentCommands", "ListInstanceAgentCommands")
def list_commands(request: Request) -> Response:
    compartment = required(request.query, "compartmentId")
    commands = [c for c in request.emulator.store.all(COMMAND) if c["compartmentId"] == compartment]
    summaries = [
        {
            "instanceAgentCommandId": c["id"],
            "displayName": c["displayName"],
            "compartmentId": c["compartmentId"],
            "timeCreated": c["timeCreated"],
            "timeUpdated": c["timeUpdated"],
            "isCanceled": c["isCanceled"],
        }
        for c in sort_listed(request, commands, _created)
    ]
    return paged(request, summaries)


@service.route("GET", "/20180530/instanceAgentCommands/{instanceAgentCommandId}/status", "GetInstanceAgentCommandExecution")
def get_execution(request: Request) -> Response:
    instance_id = required(request.query, "instanceId")
    execution = request.emulator.store.find(EXECUTION, request.params["instanceAgentCommandId"])
    if execution is None or execution["instanceId"] != instance_id:
        raise not_found("instance agent command execution")
    return _respond(render_execution(execution))


@service.route("GET", "/20180530/instanceAgentCommandExecutions", "ListInstanceAgentCommandExecutions")
def list_executions(request: Request) -> Response:
    compartment = required(request.query, "compartmentId")
    instance_id = required(request.query, "instanceId")
    state = (request.query.get("lifecycleState") or "").upper()
    if state and state not in LIFECYCLE_STATES:
        raise invalid(f"lifecycleState must be one of {', '.join(LIFECYCLE_STATES)}")
    executions = [
        e
        for e in request.emulator.store.all(EXECUTION)
        if e["instanceId"] == instance_id and e["_compartmentId"] == compartment and (not state or e["lifecycleState"] == state)
    ]
    return paged(request, [render_execution(e) for e in sort_listed(request, executions, _created)])


def _created(item: Resource) -> tuple[str, int]:
    """Creation order: the sequence number breaks ties between commands created in the same millisecond."""
    return item["timeCreated"], item.get("_sequence") or item.get("sequenceNumber") or 0


# --- admin: the whole output, which OCI only gives through an Object Storage target ---
@service.route("GET", "/_ocisim/instanceAgentCommands/{instanceAgentCommandId}/output", "AdminCommandOutput", authenticated=False)
def admin_output(request: Request) -> Response:
    em = request.emulator
    execution = _by_id(request, EXECUTION)
    path = em.vms.output_path(execution["instanceId"], execution["instanceAgentCommandId"])
    if not path.exists():
        raise OCIError(404, "NotAuthorizedOrNotFound", "the command has produced no output yet")
    return Response(status=200, body=path.read_bytes(), headers={"content-type": "application/octet-stream"})
