"""``vdimport-local``: run vdimport's whole pipeline on one machine.

  up        start the OCI emulator, Airflow and the function in the background
  import    upload a disk image to the local bucket (and follow its import with --wait)
  status    services, recent runs and every emulated resource still alive
  logs      a step's log from Airflow, or a service's log
  down      stop everything ``up`` started
  preflight check a real deployment (OCI profile + kube context) before the first upload

The state lives in ``--home`` (default ``$VDIMPORT_LOCAL_HOME`` or ``~/.vdimport-local``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from .stack import LOG_FILES, STEP_IMAGE, LocalStack, StackError, UpOptions, default_home

MIB = 1024 * 1024


def _byte_rate(text: str) -> int:
    """``20000000``, ``20M``, ``512K``, ``1G`` (decimal units, as network rates are quoted) as bytes per second."""
    units = {"K": 10**3, "M": 10**6, "G": 10**9}
    text = text.strip().upper().removesuffix("B")
    factor = units.get(text[-1:], 1)
    try:
        value = float(text[:-1] if factor > 1 else text) * factor
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a byte rate: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a byte rate cannot be negative")
    return int(value)


def _emulator(args: argparse.Namespace) -> int:
    from .emulator.app import Settings
    from .emulator.server import serve

    settings = Settings(
        lifecycle_seconds=args.lifecycle_seconds,
        device_mode=args.device_mode,
        duplicate_events_every=args.duplicate_events_every,
        par_bytes_per_second=args.par_bytes_per_second,
    )
    data = Path(args.data) if args.data else Path(args.home or default_home()) / "emulator"
    serve(data, host=args.host, port=args.port, settings=settings)
    return 0


def _preflight(args: argparse.Namespace) -> int:
    from . import preflight as pf

    target = pf.Target(
        oci_config=args.oci_config,
        oci_profile=args.oci_profile,
        oci_endpoint=args.oci_endpoint,
        kubeconfig=args.kubeconfig,
        kube_context=args.context,
        namespace=args.namespace,
        airflow_namespace=args.airflow_namespace,
        cluster_id=args.cluster_id,
        function_id=args.function_id,
        network_compartment=args.network_compartment,
    )
    results = pf.preflight(target, on_result=None if args.json else lambda r: print(pf.render(r), flush=True))
    print(pf.as_json(results) if args.json else pf.summary(results))
    return 1 if any(r.status == "fail" for r in results) else 0


def _function_host(args: argparse.Namespace) -> int:
    from .fnhost import serve

    workdir = Path(args.workdir)
    config = json.loads((workdir / "config.json").read_text())
    serve(workdir, args.port, config, image=args.image)
    return 0


def _stack(args: argparse.Namespace) -> LocalStack:
    return LocalStack(Path(args.home) if args.home else None)


def _up(args: argparse.Namespace) -> int:
    stack = _stack(args)
    options = UpOptions(
        lifecycle_seconds=args.lifecycle_seconds,
        max_worker_vms=args.max_worker_vms,
        airflow_port=args.airflow_port,
        runner=args.runner,
        image=args.image,
    )
    state, started = stack.up(options)
    if not started:
        print("The local stack is already up.")
    login = state["login"]
    print(
        f"""
vdimport local stack ({stack.home})
  Airflow UI     {state["airflow_url"]}   login {login["username"]} / {login["password"]}
  OCI emulator   {state["emulator_url"]}   (oci config: {stack.emulator_dir / "oci_config"})
  function       {state["function_url"]}   (createobject events of bucket {state["bucket"]})
  steps run as   {_runner_text(state)}
  bucket         oci://{state["bucket"]}@{state["namespace"]}/

Import an image:  vdimport-local import disk.qcow2 --wait
Stop everything:  vdimport-local down"""
    )
    return 0


def _runner_text(state: dict[str, Any]) -> str:
    runner = state.get("runner") or {"steps": "subprocess"}
    if runner["steps"] == "container":
        return f"containers of {runner['image']} (podman)"
    return "subprocesses of this machine's vdimport-step"


def _down(args: argparse.Namespace) -> int:
    stack = _stack(args)
    if stack.state() is None and not any(stack.running().values()):
        print("The local stack is not running.")
    left = stack.down()
    if left:
        print(f"Some processes did not stop: {left}", file=sys.stderr)
        return 1
    print("Stopped; nothing left running.")
    return 0


def _import(args: argparse.Namespace) -> int:
    from .importer import parse_metadata, render_report, run_import, to_json

    try:
        metadata = parse_metadata(args.meta or [])
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        result = run_import(
            _stack(args),
            Path(args.file),
            name=args.name,
            metadata=metadata,
            wait=args.wait,
            timeout=args.timeout,
            part_size=args.part_size_mib * MIB,
            log=sys.stderr if args.json else sys.stdout,
        )
    except StackError as exc:
        result = {"state": "failed", "error": str(exc)}
    if args.json:
        print(to_json(result))
    elif result["state"] == "triggered":
        print(
            f"Triggered DAG run {result['dag_run_id']}; follow it with: vdimport-local status, or in {result['airflow_url'] or 'Airflow'}"
        )
    else:
        print(render_report(result) if result.get("dag_run_id") or result.get("object") else f"error: {result['error']}")
    return 0 if result["state"] in ("success", "triggered") else 1


def _print_status(status: dict[str, Any]) -> None:
    print(f"vdimport local stack ({status['home']}): {'up' if status['up'] else 'NOT fully running'}")
    for name, service in status["services"].items():
        where = service.get("url") or ""
        print(f"  {name:<10} {'running' if service.get('running') else 'stopped':<8} {where}")
    if "runner" in status:
        print(f"  steps run as {_runner_text(status)}")
    if "runs" in status:
        print("recent runs:")
        for run in status["runs"] or [{"dag_run_id": "(none)", "state": "", "object": ""}]:
            print(f"  {run['state'] or '':<8} {run['dag_run_id']}  {run.get('object') or ''}")
    if "resources" in status:
        res = status["resources"]
        print(
            f"alive in the emulator: {len(res['instances'])} instances, {len(res['attachments'])} attachments, "
            f"{len(res['pars'])} PARs, {len(res['volumes'])} volumes"
        )
        for kind in ("instances", "attachments", "pars", "volumes"):
            for item in res[kind]:
                print(f"  {kind[:-1]:<10} {json.dumps(item)}")
    if status.get("notifications"):
        print("outcome notifications (emulated OCI Notifications topic):")
        for message in status["notifications"]:
            print(f"  {message['time']}  {message['title']}")


def _status(args: argparse.Namespace) -> int:
    status = _stack(args).status()
    if args.json:
        print(json.dumps(status, indent=1))
    else:
        _print_status(status)
    return 0 if status["up"] else 3


def _logs(args: argparse.Namespace) -> int:
    from .pipeline import STEP_ORDER
    from .stack import DAG_ID

    stack = _stack(args)
    if args.step in LOG_FILES:
        path = stack.log_path(args.step)
        if not path.exists():
            print(f"error: no log yet at {path}", file=sys.stderr)
            return 1
        lines = path.read_text(errors="replace").splitlines()
        print("\n".join(lines[-args.tail :] if args.tail else lines))
        return 0
    if args.step and args.step not in STEP_ORDER:
        print(f"error: {args.step!r} is neither a step ({', '.join(STEP_ORDER)}) nor a service ({', '.join(LOG_FILES)})", file=sys.stderr)
        return 2
    try:
        stack.require()
        airflow = stack.airflow()
        run_id = args.run
        if not run_id:
            runs = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?order_by=-run_after&limit=1").get("dag_runs", [])
            if not runs:
                print("No runs yet.")
                return 0
            run_id = runs[0]["dag_run_id"]
        tasks = airflow.task_instances(DAG_ID, run_id)
        for step in [args.step] if args.step else STEP_ORDER:
            ti = tasks.get(step)
            if not ti or not ti.get("try_number"):
                if args.step:
                    print(f"{step} has not run in {run_id} (state {(ti or {}).get('state')})")
                continue
            print(f"===== {step} ({ti.get('state')}, try {ti['try_number']}) of run {run_id} =====")
            print(airflow.task_log(DAG_ID, run_id, step, int(ti["try_number"])))
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vdimport-local", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--home", help="state directory of the local stack (default: $VDIMPORT_LOCAL_HOME or ~/.vdimport-local)")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the emulator, Airflow and the function in the background (idempotent)")
    up.add_argument("--lifecycle-seconds", type=float, default=1.0, help="how long emulated OCI state changes take (default 1)")
    up.add_argument("--max-worker-vms", type=int, default=4, help="imports running at once (default 4)")
    up.add_argument("--airflow-port", type=int, help="Airflow UI/API port (default 8080, else a free one)")
    up.add_argument(
        "--runner",
        choices=("auto", "subprocess", "container"),
        default=os.environ.get("VDIMPORT_LOCAL_RUNNER") or "auto",
        help="how steps run: container (the step-runner image under podman, as a pod), subprocess, or auto: "
        "container when podman and the image are here (make images), else subprocess (default: $VDIMPORT_LOCAL_RUNNER or auto)",
    )
    up.add_argument("--image", default=STEP_IMAGE, help=f"the step-runner image of the container runner (default {STEP_IMAGE})")
    up.set_defaults(func=_up)

    down = sub.add_parser("down", help="stop everything up started")
    down.set_defaults(func=_down)

    imp = sub.add_parser("import", help="upload a disk image to the local bucket; the event triggers its import")
    imp.add_argument("file", help="the disk image (qcow2, vmdk, vhd, vhdx, vdi, raw, ova, ...)")
    imp.add_argument("--meta", action="append", metavar="KEY=VALUE", help="object metadata, e.g. ad_number=2 (repeatable)")
    imp.add_argument("--name", help="object name (default: the file name)")
    imp.add_argument("--wait", action="store_true", help="follow the run to its end and print the report")
    imp.add_argument("--json", action="store_true", help="print one JSON object (progress goes to stderr)")
    imp.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the run with --wait (default 1800)")
    imp.add_argument("--part-size-mib", type=int, default=64, help="multipart part size; larger files go multipart (default 64)")
    imp.set_defaults(func=_import)

    status = sub.add_parser("status", help="services, recent runs and emulated resources still alive")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(func=_status)

    logs = sub.add_parser("logs", help="a step's log (latest run by default), or a service's log")
    logs.add_argument("step", nargs="?", help=f"a step name, or one of: {', '.join(LOG_FILES)} (default: every step)")
    logs.add_argument("--run", help="DAG run id (default: the latest)")
    logs.add_argument("--tail", type=int, default=200, help="lines of a service log (0: all; default 200)")
    logs.set_defaults(func=_logs)

    pre = sub.add_parser("preflight", help="check a deployment (OCI profile + kube context) before the first upload; read-only")
    pre.add_argument("--oci-config", default=str(Path("~/.oci/config").expanduser()), help="OCI config file (default ~/.oci/config)")
    pre.add_argument("--oci-profile", default="DEFAULT", help="its profile (default DEFAULT)")
    pre.add_argument("--oci-endpoint", help="one URL for every OCI API (the local emulator); default: the region's endpoints")
    pre.add_argument("--kubeconfig", help="kubeconfig file (default ~/.kube/config)")
    pre.add_argument("--context", help="kube context (default: the current one)")
    pre.add_argument("--namespace", default="vdimport", help="the vdimport chart's namespace (default vdimport)")
    pre.add_argument("--airflow-namespace", default="airflow", help="Airflow's namespace (default airflow)")
    pre.add_argument("--cluster-id", help="OKE cluster OCID (default: from the context's exec credential)")
    pre.add_argument("--function-id", help="the trigger function (default: the Events rule's FAAS action)")
    pre.add_argument("--network-compartment", help="the worker subnet's compartment (default: the bucket's)")
    pre.add_argument("--json", action="store_true", help="print one JSON object")
    pre.set_defaults(func=_preflight)

    emu = sub.add_parser("emulator", help="run the OCI API emulator in the foreground")
    emu.add_argument("--port", type=int, default=0, help="TCP port (default: a free one, written to DATA/endpoint)")
    emu.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    emu.add_argument("--data", help="state directory (default: HOME/emulator)")
    emu.add_argument("--lifecycle-seconds", type=float, default=0.0, help="base duration of lifecycle transitions")
    emu.add_argument("--device-mode", choices=("auto", "loop", "file"), default="auto", help="how worker VMs see volumes")
    emu.add_argument("--duplicate-events-every", type=int, default=0, help="deliver every Nth event twice (0: never)")
    emu.add_argument(
        "--par-bytes-per-second",
        type=_byte_rate,
        default=0,
        metavar="RATE",
        help="cap each PAR download connection at RATE bytes/s, e.g. 20000000 or 20M (default 0: unlimited)",
    )
    emu.set_defaults(func=_emulator)

    host = sub.add_parser("function-host", help="(used by up) the function's fdk behind a local invoke endpoint")
    host.add_argument("--workdir", required=True, help="directory with config.json; socket, logs and invocations go here")
    host.add_argument("--port", type=int, default=0)
    host.add_argument("--image", help="run the fdk in this function image (podman) instead of .venv-function")
    host.set_defaults(func=_function_host)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
