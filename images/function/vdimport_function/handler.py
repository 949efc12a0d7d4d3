"""The function: event in, decision logged, DAG run triggered (or a clear reason why not).

Decisions (the ``decision`` field of the JSON answer and of the log line):

- ``triggered``: a new DAG run; ``duplicate``: the run for this object version exists already
  (a re-delivered or duplicated event, Airflow answered 409);
- ``rejected``: not an event we act on (foreign type, malformed, missing fields, other bucket);
- ``skipped``: the object is gone, has changed since the event, or is not a disk image.

Those answer 200, so OCI Events does not redeliver them. Misconfiguration, an unreachable
Airflow (after retries) and auth errors raise: the invocation fails with the message.

The body ``{"vdimport": "preflight"}`` (exactly that JSON object) is no event but the operator's
preflight probe: :meth:`Function.preflight` logs in to Airflow and reads the DAG, with fewer
retries and a shorter timeout, and answers 200 with ``{"decision": "preflight", "ok", "checks"}``.
It triggers nothing and reads no object; every failure is a failed check, never a raise.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .airflow import AirflowClient, AirflowError, AirflowUnavailable
from .config import DEFAULT_DAG_ID, ConfigError, Settings, load
from .detect import HEAD_BYTES, TAIL_BYTES, detect, needs_tail
from .event import ObjectEvent, Rejected, parse
from .oci_access import OciAccess, SecretError

log = logging.getLogger("vdimport.function")

PREFLIGHT_REQUEST = {"vdimport": "preflight"}  # the whole body of a probe; anything else is an event
PREFLIGHT_ATTEMPTS = 2  # per Airflow request (a trigger makes VDIMPORT_AIRFLOW_RETRIES)
PREFLIGHT_TIMEOUT_SECONDS = 4.0  # per attempt, at most: a dead Airflow is reported in ~10 s, not minutes


@dataclass(frozen=True)
class Outcome:
    decision: str
    reason: str
    dag_run_id: str | None = None
    conf: dict[str, Any] | None = None

    def as_json(self) -> str:
        body: dict[str, Any] = {"decision": self.decision, "reason": self.reason}
        if self.dag_run_id:
            body["dag_run_id"] = self.dag_run_id
        return json.dumps(body)


def one_line(text: str) -> str:
    """``text`` with its control and format characters escaped (``\\n``, ``\\x1b``, ``\\u202e``): a reason that
    an object name or an event field cannot split into several lines or dress up as another log line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def is_preflight(raw: bytes) -> bool:
    """Whether ``raw`` is exactly the JSON object ``{"vdimport": "preflight"}`` (whitespace aside)."""
    if len(raw) > 256:  # an event is larger; no need to parse it twice
        return False
    try:
        body = json.loads(raw)
    except ValueError:  # not JSON, not UTF-8
        return False
    return isinstance(body, dict) and body == PREFLIGHT_REQUEST


@dataclass(frozen=True)
class Check:
    """One preflight check: its name, whether it passed, and why (one line, no secret)."""

    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def _cause(exc: BaseException, patience: str = "") -> str:
    """A failed check's detail: the message of our own errors (written to be shown), else type and message.
    ``patience`` (the probe's attempts and timeout) is added when Airflow did not answer in time."""
    text = str(exc) if isinstance(exc, AirflowError | SecretError | ConfigError) else f"{type(exc).__name__}: {exc}"
    if patience and isinstance(exc, AirflowUnavailable):
        text += f" ({patience})"
    return one_line(text)[:600]


def preflight_answer(airflow_url: str | None, dag_id: str, checks: list[Check]) -> dict[str, Any]:
    """The probe's answer, and its one log line."""
    ok = all(c.ok for c in checks)
    summary = ", ".join(f"{c.name} ok" if c.ok else f"{c.name} failed ({c.detail})" for c in checks)
    log.log(logging.INFO if ok else logging.WARNING, "preflight: %s", summary)
    return {"decision": "preflight", "ok": ok, "airflow_url": airflow_url, "dag_id": dag_id, "checks": [c.as_dict() for c in checks]}


def dag_run_id(namespace: str, bucket: str, name: str, etag: str) -> str:
    """The run id of one object version: the same event twice gives the same id, a new etag a new one.

    A readable prefix from the object name (Airflow allows ``[A-Za-z0-9_.~:+-]``) and a hash of
    the four fields, so names that sanitize alike still differ.
    """
    digest = hashlib.sha256("\0".join((namespace, bucket, name, etag)).encode()).hexdigest()[:20]
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.rsplit("/", 1)[-1]).strip("_.")[:60] or "object"
    return f"upload__{readable}__{digest}"


class Function:
    """Settings and clients, made once per container and reused by every invocation."""

    def __init__(self, settings: Settings, oci_access: OciAccess | None = None, airflow: AirflowClient | None = None):
        self.settings = settings
        self.oci = oci_access or OciAccess(settings)
        self.airflow = airflow or AirflowClient(
            settings.airflow_url,
            self.oci.credentials,
            retries=settings.retries,
            backoff_seconds=settings.backoff_seconds,
            timeout_seconds=settings.timeout_seconds,
        )

    def preflight(self, attempts: int = PREFLIGHT_ATTEMPTS, timeout_seconds: float = PREFLIGHT_TIMEOUT_SECONDS) -> dict[str, Any]:
        """Can this function, from where it runs and with its own secret, trigger its DAG? Triggers nothing.

        Checks ``login`` (the secret is read and ``POST /auth/token`` gives a token, or a cached
        token is still valid) and ``dag`` (``GET /api/v2/dags/{dag_id}`` answers 200 and the DAG
        is not paused), each Airflow request with at most ``attempts`` attempts of at most
        ``timeout_seconds`` (and the configured back-off). Never raises: a failure is a check
        with ``ok: false`` and its cause.
        """
        attempts = min(attempts, self.settings.retries)
        timeout = min(timeout_seconds, self.settings.timeout_seconds)
        dag_id = self.settings.dag_id
        patience = (
            f"the probe makes {attempts} attempt(s) of at most {timeout:g} s;"
            f" a trigger {self.settings.retries} of {self.settings.timeout_seconds:g} s"
        )
        try:
            user, cached = self.airflow.login(attempts, timeout)
            how = "has a valid token from an earlier login" if cached else "logged in (POST /auth/token gave a token)"
            login = Check("login", True, f"user {user!r} {how}")
        except Exception as exc:  # noqa: BLE001 - a probe reports every failure (secret, network, Airflow) as a failed check
            login = Check("login", False, _cause(exc, patience))
        if not login.ok:
            dag = Check("dag", False, "not checked: the login failed")
        else:
            try:
                found = self.airflow.get_dag(dag_id, attempts, timeout)
                paused = found.get("is_paused")
                if paused is False:
                    dag = Check("dag", True, f"DAG {dag_id} is deployed and not paused")
                elif paused is True:
                    dag = Check("dag", False, f"DAG {dag_id} is paused: unpause it in the Airflow UI or `airflow dags unpause {dag_id}`")
                else:
                    dag = Check("dag", False, f"GET /api/v2/dags/{dag_id} answered without is_paused: is this an Airflow 3 API server?")
            except Exception as exc:  # noqa: BLE001 - as above
                dag = Check("dag", False, _cause(exc, patience))
        return preflight_answer(self.settings.airflow_url, dag_id, [login, dag])

    def process(self, raw: bytes | str) -> Outcome:
        try:
            event = parse(raw, self.settings.event_types)
        except Rejected as exc:
            reason = one_line(str(exc))
            log.warning("rejected: %s; nothing triggered", reason)
            return Outcome("rejected", reason)
        log.info("received %s", event.describe())
        outcome = self._decide(event)
        outcome = replace(outcome, reason=one_line(outcome.reason))  # event fields (bucket, etag, type) may hold newlines
        if outcome.dag_run_id:
            log.info(
                "%s: DAG %s run %s for %r (%s)", outcome.decision, self.settings.dag_id, outcome.dag_run_id, event.object, outcome.reason
            )
        else:
            log.info("%s: %s; nothing triggered", outcome.decision, outcome.reason)
        return outcome

    def _decide(self, event: ObjectEvent) -> Outcome:
        if event.bucket not in self.settings.buckets:
            return Outcome("rejected", f"bucket {event.bucket} is not one this function imports from ({', '.join(self.settings.buckets)})")
        info = self.oci.head(event.namespace, event.bucket, event.object)
        if info is None:
            return Outcome("skipped", f"object {event.object} no longer exists")
        if info.etag != event.etag:
            return Outcome(
                "skipped",
                f"object {event.object} changed since the event (etag {event.etag} -> {info.etag}); its newer version has its own event",
            )
        head = (
            self.oci.read_range(event.namespace, event.bucket, event.object, info.etag, f"bytes=0-{HEAD_BYTES - 1}") if info.size else b""
        )
        if head is None:
            return Outcome("skipped", f"object {event.object} changed or vanished while its header was read")
        tail = None
        if needs_tail(head, info.size):
            tail = (
                head[-TAIL_BYTES:]
                if info.size <= HEAD_BYTES
                else self.oci.read_range(event.namespace, event.bucket, event.object, info.etag, f"bytes=-{TAIL_BYTES}")
            )
            if tail is None:
                return Outcome("skipped", f"object {event.object} changed or vanished while its footer was read")
        found = detect(head, tail, info.size)
        if not found.image:
            return Outcome("skipped", f"{event.object!r} ({info.size} bytes) is not a disk image: {found.reason}")
        run_id = dag_run_id(event.namespace, event.bucket, event.object, info.etag)
        conf = {
            "namespace": event.namespace,
            "bucket": event.bucket,
            "object": event.object,
            "etag": info.etag,
            "size": info.size,
            "metadata": info.metadata,
        }
        log.info(
            "%r looks like %s (%s); metadata %s; triggering DAG %s as run %s",
            event.object,
            found.format,
            found.reason,
            json.dumps(info.metadata, sort_keys=True),
            self.settings.dag_id,
            run_id,
        )
        result = self.airflow.trigger(self.settings.dag_id, run_id, conf)
        if result.created:
            return Outcome("triggered", f"{found.format} image, {info.size} bytes", result.dag_run_id, conf)
        return Outcome("duplicate", "this object version already has its run (HTTP 409)", result.dag_run_id, conf)


# --- the Fn entry point -------------------------------------------------------------------
_FUNCTIONS: dict[tuple[tuple[str, str], ...], Function] = {}
_LOCK = threading.Lock()


def _setup_logging() -> None:
    root = logging.getLogger("vdimport")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)  # Fn collects stderr as the function's log
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def function_for(env: Mapping[str, str]) -> Function:
    """The :class:`Function` for this configuration, made on first use (per container, per config)."""
    key = tuple(sorted((k, v) for k, v in env.items() if k.startswith("VDIMPORT_")))
    with _LOCK:
        if key not in _FUNCTIONS:
            settings = load(env)
            log.info("configured: %s", settings.describe())
            _FUNCTIONS[key] = Function(settings)
        return _FUNCTIONS[key]


def reset() -> None:
    """Forget cached functions (tests)."""
    with _LOCK:
        _FUNCTIONS.clear()


def _preflight(env: Mapping[str, str]) -> dict[str, Any]:
    """The probe's answer; a configuration the function cannot even start with is a failed ``config`` check."""
    try:
        function = function_for(env)
    except Exception as exc:  # noqa: BLE001 - the probe answers, the operator reads the cause
        not_checked = "not checked: the function cannot start with its configuration"
        checks = [Check("config", False, _cause(exc)), Check("login", False, not_checked), Check("dag", False, not_checked)]
        url = (env.get("VDIMPORT_AIRFLOW_URL") or "").strip() or None
        return preflight_answer(url, (env.get("VDIMPORT_DAG_ID") or "").strip() or DEFAULT_DAG_ID, checks)
    return function.preflight()


def _read(data: Any) -> bytes:
    if data is None:
        return b""
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, io.IOBase) or hasattr(data, "getvalue") or hasattr(data, "read"):
        value = data.getvalue() if hasattr(data, "getvalue") else data.read()
        return value.encode() if isinstance(value, str) else bytes(value)
    return str(data).encode()


def handler(ctx: Any, data: Any = None) -> Any:
    """``fdk`` handler: ``ctx.Config()`` is the function's configuration, ``data`` the event body."""
    from fdk import response  # imported here so the package logic is usable without fdk

    _setup_logging()
    env: Mapping[str, str] = ctx.Config() if ctx is not None and callable(getattr(ctx, "Config", None)) else os.environ
    if not any(k.startswith("VDIMPORT_") for k in env):
        env = os.environ
    call_id = ctx.CallID() if ctx is not None and callable(getattr(ctx, "CallID", None)) else None
    if call_id:
        log.info("invocation %s", call_id)
    raw = _read(data)
    if is_preflight(raw):  # before any event parsing: the probe triggers nothing and reads no object
        answer = _preflight(env)
        return response.Response(ctx, response_data=json.dumps(answer), headers={"Content-Type": "application/json"})
    try:
        outcome = function_for(env).process(raw)
    except AirflowError as exc:
        log.error("failed: %s", exc)
        raise
    except Exception as exc:  # configuration, secret or Object Storage errors: log the cause, fail the invocation
        log.error("failed: %s: %s", type(exc).__name__, exc)
        raise
    return response.Response(ctx, response_data=outcome.as_json(), headers={"Content-Type": "application/json"})
