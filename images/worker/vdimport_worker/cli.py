"""``vdimport-step <step> --run-id ID --request JSON --state JSON``: run one import step.

Logs human-readable progress to stdout (what ``kubectl logs`` shows), writes the step's
result JSON to ``$VDIMPORT_RESULT_PATH`` (default ``/airflow/xcom/return.json``, read by
the KubernetesPodOperator XCom sidecar), and on failure exits non-zero with the one-line
cause as its last log line: 1 for a failure a retry may fix, 2 for a configuration error,
3 when the request or the image itself is wrong (the DAG does not retry those).
``--request``/``--state`` take JSON text or ``@file``.

Every result carries the run instance's key (``run_key``) and, when the step had to run earlier
steps again first (a resumed run), their new results (``refreshed``). Once the run's volume is
delivered, the data-path steps report ``{"delivered": true}`` and touch nothing. SIGTERM (a
pod deleted, a task marked failed) ends the step through its normal error path, so a launch
stopped half-way terminates what it launched. ``reap_scan`` and ``reap`` are the reaper DAG's
steps (no run, no request).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import oci

from .config import ConfigError, WorkerConfig
from .context import Rejected, StepContext, StepError
from .disks import PER_DISK, each_disk
from .remote import RemoteError
from .request import ImportRequest, RequestError
from .steps import CLEANUP_STEP, DATA_PATH, MAINTENANCE, STEP_NAMES, STEPS
from .waiting import UnexpectedState, WaitTimeout

DEFAULT_RESULT_PATH = "/airflow/xcom/return.json"
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_REJECTED = 3  # the request or image is wrong: the DAG fails the task without retrying it

log = logging.getLogger("vdimport")


class Terminated(BaseException):
    """SIGTERM: the pod or task is being stopped. A BaseException, so that only cleanup catches it."""


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated("stopped by SIGTERM (the task was stopped, marked failed or its pod deleted)")


def _json_arg(text: str, what: str) -> Any:
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise RequestError(f"--{what} is not valid JSON: {exc}") from None


def _setup_logging(step: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(f"%(asctime)s [{step}] %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("oci", "urllib3", "oslo_utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING if noisy != "oci" else logging.ERROR)


def _write_result(result: dict[str, Any]) -> None:
    path = Path(os.environ.get("VDIMPORT_RESULT_PATH", DEFAULT_RESULT_PATH))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)


def _request_for(step: str, conf: Any) -> ImportRequest:
    """The validated request; cleanup settles for what it can use, so a bad request never blocks it."""
    try:
        return ImportRequest.parse(conf)
    except RequestError as exc:
        if step != CLEANUP_STEP:
            raise
        log.warning("The request is not valid (%s); cleaning up with what it names", exc)
        return ImportRequest.lenient(conf)


def describe_service_error(exc: oci.exceptions.ServiceError) -> str:
    operation = getattr(exc, "operation_name", None) or "an OCI call"
    detail = f"{exc.code or 'no error code'}: {exc.message or 'no message'}"  # a HEAD's error has no body
    return f"OCI {operation} failed: {exc.status} {detail} (opc-request-id {exc.request_id})"


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vdimport-step", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=(*STEP_NAMES, *MAINTENANCE))
    parser.add_argument("--run-id", help="the DAG run id (import steps); shown in tags, never the run's identity")
    parser.add_argument("--request", help="the import request (DAG run conf) as JSON or @file (import steps)")
    parser.add_argument("--state", default="{}", help="results of earlier steps, {step: result}, as JSON or @file")
    args = parser.parse_args(argv)
    if os.environ.get("VDIMPORT_REFUSE_ROOT") == "1" and os.geteuid() == 0:
        # The image sets it: its user is 10001, and a pod or `podman run --user 0` that overrides
        # that would give the step root in the container for nothing it needs.
        print("FAILED: the step runner image refuses to run as root (uid 0): run it as its own user 10001", flush=True)
        return EXIT_CONFIG
    if args.step in STEPS and (args.run_id is None or args.request is None):
        parser.error(f"{args.step} needs --run-id and --request")
    _setup_logging(args.step)
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    try:
        config = WorkerConfig.from_env()
    except ConfigError as exc:
        log.error("FAILED: configuration: %s", exc)
        return EXIT_CONFIG
    try:
        state = _json_arg(args.state, "state")
        if not isinstance(state, dict):
            raise RequestError("--state must be a JSON object")
        from .clients import Clients

        clients = Clients(config, retry_base_seconds=config.retry_base_seconds)
        if args.step in MAINTENANCE:
            result = MAINTENANCE[args.step](config, clients, state)
        else:
            conf = _json_arg(args.request, "request")
            request = _request_for(args.step, conf)
            ctx = StepContext(run_id=args.run_id, conf=conf, request=request, state=state, config=config, clients=clients)
            result = _run_step(args.step, ctx)
    except Terminated as exc:
        log.error("FAILED: %s", exc)
        return EXIT_FAILED
    except (Rejected, RequestError) as exc:
        log.error("FAILED: %s", exc)
        return EXIT_REJECTED
    except RemoteError as exc:
        log.error("FAILED: %s", exc)
        return EXIT_REJECTED if exc.rejected else EXIT_FAILED
    except (StepError, WaitTimeout, UnexpectedState) as exc:
        log.error("FAILED: %s", exc)
        return EXIT_FAILED
    except oci.exceptions.ServiceError as exc:
        log.error("FAILED: %s", describe_service_error(exc))
        return EXIT_FAILED
    except Exception as exc:
        log.exception("unexpected error")
        log.error("FAILED: internal error in %s: %s: %s", args.step, type(exc).__name__, exc)
        return EXIT_FAILED
    result = {**result, "step": args.step, "seconds": round(time.monotonic() - started, 2)}
    _write_result(result)
    log.info("Step %s done in %.1f s", args.step, result["seconds"])
    return 0


def _run_step(step: str, ctx: StepContext) -> dict[str, Any]:
    if step != "inspect_object" and ctx.has_key:
        log.info("Step %s of run %s (resources named %s-*)", step, ctx.run_id, ctx.names.prefix)
    else:
        log.info("Step %s of run %s", step, ctx.run_id)
    if step in PER_DISK and ctx.has_key and ctx.disk_count > 1:
        result = each_disk(step, ctx, lambda view: _run_here(step, view))
    else:
        result = _run_here(step, ctx)
    if ctx.has_key:
        result = {**result, "run_key": ctx.names.key}
    if ctx.refreshed:
        result["refreshed"] = ctx.refreshed
    return result


def _run_here(step: str, ctx: StepContext) -> dict[str, Any]:
    """The step on this context (the run's, or one disk's view), unless its volume is delivered."""
    delivered = ctx.delivered_volume() if step in DATA_PATH and ctx.has_key else None
    if delivered is None:
        return STEPS[step](ctx)
    log.info("Already delivered: volume %s (%s) is verified and detached; %s has nothing to do", delivered.id, delivered.display_name, step)
    return {"delivered": True, "volume_id": delivered.id}


def main() -> None:
    sys.exit(run())
