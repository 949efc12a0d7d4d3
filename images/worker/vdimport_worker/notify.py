"""Tell the user how an import ended: one message on an OCI Notifications topic (optional).

Off unless ``VDIMPORT_NOTIFICATION_TOPIC_ID`` names a topic; the topic's subscriptions
(e-mail, Slack, PagerDuty, a function, ...) decide where the message goes. With
``VDIMPORT_AIRFLOW_UI_URL`` the message links to the run in the Airflow UI.

How it is meant to be called: once per run, after the run's outcome is known (the last task
of the DAG, triggered whatever happened upstream), from the step runner's image so it has the
step runner's configuration and OCI credentials::

    from vdimport_worker.clients import Clients
    from vdimport_worker.config import WorkerConfig
    from vdimport_worker.notify import Outcome, publish_outcome

    config = WorkerConfig.from_env()
    clients = Clients(config, retry_base_seconds=config.retry_base_seconds)
    outcome = Outcome(state="failed", object_name=req.object, bucket=req.bucket, dag_run_id=run_id,
                      failed_step="write_image", cause="qemu-img convert exited 1: ...")
    publish_outcome(clients, config, outcome)   # True: published; False: off, or it failed (logged)

A failed publish never fails the import: it is logged as a warning with OCI's error and
``publish_outcome`` returns False. The SDK client retries throttling and 5xx like every other
client (clients.py), so a retried publish may, rarely, deliver the message twice.

What a message may hold: names (object, bucket, volume, run id) shown with control and
format characters escaped the way ``repr()`` escapes them, so a hostile object name cannot
forge lines or reorder text in a mail client; the volume OCID; a one-line cause with anything
that looks like a pre-authenticated request token or URL credentials masked. Never a PAR URL,
a secret or the request's metadata.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

import oci

from .clients import Clients
from .config import WorkerConfig

log = logging.getLogger("vdimport")

DAG_ID = "virtual_disk_import"  # the DAG whose runs the links point at (dags/vdimport_dag)
STATES = ("succeeded", "failed")

# OCI Notifications: "Message size limit per request: 64KB" (PublishMessage in the API
# reference; https://docs.oracle.com/iaas/Content/Notification/Tasks/publishingmessages.htm).
MAX_MESSAGE_BYTES = 64 * 1024
# No title limit is documented; the title is the e-mail subject, so it is kept short anyway.
MAX_TITLE_CHARS = 255
MAX_CAUSE_CHARS = 2000
MAX_NAME_CHARS = 1200  # an object name is at most 1024 bytes; escaped it may grow, then it is cut

_PAR_PATH = re.compile(r"/p/[^/\s]+/")  # https://objectstorage.../p/<token>/n/<ns>/b/<bucket>/o/<object>
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")


@dataclass(frozen=True)
class Outcome:
    """How one import ended, as the notification tells it."""

    state: Literal["succeeded", "failed"]
    object_name: str
    bucket: str
    dag_run_id: str
    volume_id: str | None = None  # the delivered volume's OCID (succeeded)
    volume_name: str | None = None
    failed_step: str | None = None  # the step that failed, e.g. "write_image" (failed)
    cause: str | None = None  # the one-line cause the failed step logged (failed)
    run_url: str | None = None  # a link to the run; None: built from VDIMPORT_AIRFLOW_UI_URL if set
    volumes: tuple[tuple[str, str], ...] = ()  # (name, OCID) of every volume of a multi-disk OVA

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"Outcome.state must be one of {', '.join(STATES)}, not {self.state!r}")


def shown(text: str, limit: int = MAX_NAME_CHARS) -> str:
    """``text`` with the characters ``repr()`` escapes (controls, format characters such as bidi
    overrides, separators other than space; backslashes too) escaped as it does, unquoted; cut to
    ``limit`` characters at an escape's boundary, with an ellipsis."""
    pieces: list[str] = []
    for char in text:
        if char == "\\":
            pieces.append("\\\\")
        elif not char.isprintable():  # exactly what repr() escapes: controls, format, separators but space
            pieces.append(repr(char)[1:-1])  # \n, \t, \x1b, \u202e, \xa0, ...
        else:
            pieces.append(char)
    out, length = [], 0
    for index, piece in enumerate(pieces):
        if length + len(piece) > limit - (1 if index < len(pieces) - 1 else 0):
            out.append("\u2026")
            break
        out.append(piece)
        length += len(piece)
    return "".join(out)


def masked(text: str) -> str:
    """``text`` with PAR tokens and URL credentials replaced by ``***``."""
    return _URL_CREDENTIALS.sub(r"\1***@", _PAR_PATH.sub("/p/***/", text))


def run_link(base_url: str | None, dag_run_id: str) -> str | None:
    """The run's page in the Airflow UI: ``{base}/dags/virtual_disk_import/runs/{run id, URL-quoted}``."""
    if not base_url:
        return None
    return f"{base_url.rstrip('/')}/dags/{DAG_ID}/runs/{quote(dag_run_id, safe='')}"


def title_of(outcome: Outcome) -> str:
    """``vdimport: web01.qcow2 imported`` or ``vdimport: web01.qcow2 failed at write_image``, at most 255 characters."""
    if outcome.state == "succeeded":
        tail = " imported"
    else:
        tail = f" failed at {shown(outcome.failed_step, 60)}" if outcome.failed_step else " failed"
    head = "vdimport: "
    return head + shown(outcome.object_name, MAX_TITLE_CHARS - len(head) - len(tail)) + tail


def body_of(outcome: Outcome, link: str | None) -> str:
    """The message: what was imported into what (or where and why it failed), and the run."""
    lines: list[str] = []
    if outcome.state == "succeeded":
        lines += ["The disk image was imported into a block volume.", ""]
    else:
        lines += ["The disk image could not be imported.", ""]
    lines.append(f"Object:  {shown(outcome.object_name)}")
    lines.append(f"Bucket:  {shown(outcome.bucket, 300)}")
    if outcome.state == "succeeded" and outcome.volumes:
        lines[0] = f"The disk images were imported into {len(outcome.volumes)} block volumes, one per disk."
        for name, ocid in outcome.volumes:
            lines.append(f"Volume:  {shown(name, 300)}")
            lines.append(f"OCID:    {shown(ocid, 300)}")
    elif outcome.state == "succeeded":
        if outcome.volume_name:
            lines.append(f"Volume:  {shown(outcome.volume_name, 300)}")
        lines.append(f"OCID:    {shown(outcome.volume_id, 300) if outcome.volume_id else '(unknown)'}")
    else:
        if outcome.failed_step:
            lines.append(f"Step:    {shown(outcome.failed_step, 60)}")
        cause = " ".join(masked(outcome.cause).split()) if outcome.cause else ""
        lines.append(f"Cause:   {shown(cause, MAX_CAUSE_CHARS) if cause else '(not recorded; see the step log)'}")
    lines.append(f"Run:     {shown(outcome.dag_run_id, 300)}")
    if link:
        lines.append(f"Link:    {link}")
    if outcome.state == "failed":
        lines += ["", "Clearing the failed task in the Airflow UI retries the import from where it stopped."]
    return "\n".join(lines) + "\n"


def _describe(exc: Exception) -> str:
    if isinstance(exc, oci.exceptions.ServiceError):
        return f"{exc.status} {exc.code or 'no error code'}: {exc.message or 'no message'} (opc-request-id {exc.request_id})"
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def publish_outcome(clients: Clients, config: WorkerConfig, outcome: Outcome) -> bool:
    """Publish one message about ``outcome`` to ``config.notification_topic_id``.

    True when OCI accepted it; False when notifications are off (no topic) or publishing
    failed, which is logged as a warning and never raised."""
    topic = config.notification_topic_id
    if not topic:
        log.debug("No VDIMPORT_NOTIFICATION_TOPIC_ID: nobody is notified")
        return False
    link = outcome.run_url or run_link(config.airflow_ui_url, outcome.dag_run_id)
    title = title_of(outcome)
    body = body_of(outcome, link)
    room = MAX_MESSAGE_BYTES - len(title.encode())
    if len(body.encode()) > room:  # cannot happen with the caps above; never let OCI refuse the message for it
        body = body.encode()[: room - 4].decode(errors="ignore") + "\u2026\n"
    try:
        sent = clients.notifications.publish_message(topic, oci.ons.models.MessageDetails(title=title, body=body))
    except Exception as exc:  # noqa: BLE001 - a notification must never fail the import
        log.warning("Could not notify topic %s of the outcome (%s): %s", topic, outcome.state, _describe(exc))
        return False
    log.info("Notified topic %s: %s (message %s)", topic, title, sent.data.message_id)
    return True
