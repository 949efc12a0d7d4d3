"""A small real image through the whole local pipeline: where the wall time goes, step by step.

``vdimport-local up`` (emulator lifecycles of 0 s, so what is left is our own overhead) in a
temporary home, a qcow2 of a 32 MiB disk with a GPT and an ext4 partition, then
``vdimport-local import --wait --json`` exactly as a user runs it. Afterwards the run is
reconstructed from what the services recorded: the upload's event (emulator), the function's
invocation (fnhost), the DAG run and its task instances (Airflow API) and each step's own
``seconds`` (its XCom), giving the chain event -> function -> DAG run -> first task -> ... ->
last task -> run done -> ``import`` returns. Unless ``quick``, a second image goes through with
the demo's 1 s lifecycles, to show what emulated OCI waits add.

Data movement is the steps that move or read the image's bytes: ``download_image``,
``write_image`` and ``verify_image`` (their whole task time). Overhead is everything else from
the moment the upload is an object (its ``createobject`` event) until ``import`` returns; the
upload itself is the user's and is reported apart. For a 32 MiB image the data steps are
themselves mostly fixed cost (a PAR and a Run Command round trip each), so the overhead computed
this way is a lower bound of the fixed cost, and the pipeline total an upper bound. ``down`` runs
at the end whatever happened.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import write_results
from vdimport_local.airflow import ApiError, LocalAirflow, free_port
from vdimport_local.diskimages import Partition, build_disk, convert, sample_files
from vdimport_local.fnhost import invocations
from vdimport_local.pipeline import STEP_ORDER
from vdimport_local.stack import DAG_ID, LocalStack

DATA_STEPS = ("download_image", "write_image", "verify_image")
TARGET_OVERHEAD_SECONDS = 60.0
DISK_MIB = 32
IMPORT_TIMEOUT = 600.0


def _epoch(value: str | None) -> float | None:
    """An Airflow or OCI timestamp (ISO 8601, ``Z`` or offset) as epoch seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def _cli(home: Path, *args: str, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vdimport_local.cli", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def make_image(workdir: Path) -> Path:
    """A qcow2 of a 32 MiB GPT disk with one ext4 partition holding a few MB of random files."""
    raw = build_disk(workdir / "disk.raw", [Partition("ext4", DISK_MIB - 2, sample_files(seed=11, size=4 << 20))], table="gpt")
    image = convert(raw, "qcow2", workdir / "small.qcow2")
    raw.unlink()
    return image


def _union_seconds(spans: list[tuple[float, float]]) -> float:
    """How long at least one of the intervals was open."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(spans):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def _own_seconds(airflow: LocalAirflow, run_id: str, step: str) -> float | None:
    """The ``seconds`` a step reports in its result (XCom): its work after start-up and imports."""
    try:
        value = airflow.xcom(DAG_ID, run_id, step)
    except ApiError:
        return None
    seconds = value.get("seconds") if isinstance(value, dict) else None
    return float(seconds) if isinstance(seconds, int | float) else None


def timeline(stack: LocalStack, result: Mapping[str, Any], started: float, returned: float) -> dict[str, Any]:
    """The run reconstructed from the services' records: segments that add up to the pipeline's wall time."""
    obj = result["object"]
    run_id = result["dag_run_id"]
    airflow, emulator = stack.airflow(), stack.emulator()
    event = next(
        e
        for e in reversed(emulator.admin("GET", "events"))
        if e["data"].get("resourceName") == obj["name"] and e["data"].get("additionalDetails", {}).get("eTag") == obj["etag"]
    )
    calls = [
        c
        for c in invocations(stack.function_dir)
        if (c.get("event") or {}).get("object") == obj["name"] and (c.get("event") or {}).get("etag") == obj["etag"]
    ]
    call = next(c for c in calls if c.get("status") == 200)
    run = airflow.dag_run(DAG_ID, run_id)
    tasks = airflow.task_instances(DAG_ID, run_id)
    steps: list[dict[str, Any]] = []
    for name in STEP_ORDER:
        ti = tasks[name]
        own = _own_seconds(airflow, run_id, name) if ti.get("state") == "success" else None
        steps.append(
            {
                "name": name,
                "state": ti.get("state"),
                "seconds": ti.get("duration"),
                "step_seconds": own,  # the step's own work, after its process started and imported
                "start": _epoch(ti.get("start_date")),
                "end": _epoch(ti.get("end_date")),
                "data": name in DATA_STEPS,
            }
        )
    uploaded = _epoch(event["eventTime"])
    assert uploaded is not None
    fn_start, fn_end = float(call["time"]), float(call["time"]) + float(call["seconds"])
    run_start, run_end = _epoch(run.get("start_date")), _epoch(run.get("end_date"))
    assert run_start is not None and run_end is not None
    spans = [(s["start"], s["end"]) for s in steps if s["start"] is not None and s["end"] is not None]
    first_start, last_end = min(a for a, _ in spans), max(b for _, b in spans)
    busy = _union_seconds(spans)
    step_total = sum(s["seconds"] or 0 for s in steps)
    own_total = sum(s["step_seconds"] or 0 for s in steps)
    data = sum(s["seconds"] or 0 for s in steps if s["data"])
    total = returned - uploaded
    segments = [
        ("event delivered to the function", fn_start - uploaded),
        ("function: read the event, trigger the DAG run", fn_end - fn_start),
        ("scheduler starts the run", run_start - fn_end),
        ("first task starts", first_start - run_start),
        ("steps: their own work (vdimport-step)", own_total),
        ("steps: task start-up (Airflow task runner, step process, imports)", busy - own_total),
        ("between steps (scheduler hand-offs)", (last_end - first_start) - busy),
        ("last task end -> run done", run_end - last_end),
        ("run done -> import returns (its 1 s poll, report)", returned - run_end),
    ]
    return {
        "run_id": run_id,
        "state": result["state"],
        "image_bytes": obj["size"],
        "upload_seconds": round(uploaded - started, 2),  # includes the CLI's start; the user's data movement
        "pipeline_seconds": round(total, 2),
        "data_movement_seconds": round(data, 2),
        "overhead_seconds": round(total - data, 2),
        "step_seconds_total": round(step_total, 2),
        "function_deliveries": len(calls),
        "segments": [{"what": what, "seconds": round(seconds, 2)} for what, seconds in segments],
        "steps": [{k: (round(v, 2) if isinstance(v, float) and k not in ("start", "end") else v) for k, v in s.items()} for s in steps],
    }


def import_once(home: Path, image: Path, name: str) -> dict[str, Any]:
    started = time.time()
    done = _cli(home, "import", str(image), "--name", name, "--wait", "--json", timeout=IMPORT_TIMEOUT)
    returned = time.time()
    try:
        result = json.loads(done.stdout)
    except ValueError:
        raise RuntimeError(f"import printed no JSON (exit {done.returncode}): {done.stderr[-2000:]}") from None
    if result.get("state") != "success":
        raise RuntimeError(f"the import failed: {result.get('error')}")
    return timeline(LocalStack(home), result, started, returned)


def run(results_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Measure, write ``pipeline.json`` and ``pipeline.md`` into ``results_dir``, print PASS/FAIL."""
    started = time.monotonic()
    imports: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vdimport-bench-pipeline-") as tmp:
        workdir = Path(tmp)
        home = workdir / "home"
        image = make_image(workdir)
        up_started = time.monotonic()
        try:
            up = _cli(home, "up", "--lifecycle-seconds", "0", "--airflow-port", str(free_port()))
            if up.returncode != 0:
                raise RuntimeError(f"vdimport-local up failed: {(up.stdout + up.stderr)[-2000:]}")
            up_seconds = time.monotonic() - up_started
            imports.append({"lifecycle_seconds": 0.0, **import_once(home, image, "bench-lifecycle-0.qcow2")})
            if not quick:
                LocalStack(home).emulator().configure(lifecycle_seconds=1.0)
                imports.append({"lifecycle_seconds": 1.0, **import_once(home, image, "bench-lifecycle-1.qcow2")})
        finally:
            down_started = time.monotonic()
            _cli(home, "down", timeout=300)
            down_seconds = time.monotonic() - down_started
    measured = imports[0]
    verdicts = [
        {
            "criterion": f"local end-to-end overhead (all but data movement) for a small image < {TARGET_OVERHEAD_SECONDS:g} s",
            "measured": f"{measured['overhead_seconds']:.1f} s (pipeline {measured['pipeline_seconds']:.1f} s)",
            "pass": measured["overhead_seconds"] < TARGET_OVERHEAD_SECONDS,
        }
    ]
    result: dict[str, Any] = {
        "quick": quick,
        "cpus": os.cpu_count(),
        "data_steps": list(DATA_STEPS),
        "up_seconds": round(up_seconds, 1),
        "down_seconds": round(down_seconds, 1),
        "imports": imports,
        "verdicts": verdicts,
        "seconds": round(time.monotonic() - started, 1),
    }
    write_results(results_dir, "pipeline", result, render(result))
    for verdict in verdicts:
        print(f"{'PASS' if verdict['pass'] else 'FAIL'}  {verdict['criterion']}: {verdict['measured']}", flush=True)
    return result


def render(result: Mapping[str, Any]) -> str:
    """The Markdown report."""
    imports = result["imports"]
    head = " | ".join(f"lifecycle {i['lifecycle_seconds']:g} s" for i in imports)
    lines = [
        "# Local pipeline: a small image from upload event to volume",
        "",
        f"A qcow2 of a {DISK_MIB} MiB disk ({imports[0]['image_bytes'] / 1e6:.1f} MB uploaded) through "
        f"`vdimport-local import --wait --json` on the local stack ({result['cpus']} CPUs). `up` took {result['up_seconds']:.0f} s, "
        f"`down` {result['down_seconds']:.0f} s (neither counted). Data movement: "
        + ", ".join(f"`{s}`" for s in result["data_steps"])
        + " (whole task time); overhead: "
        "everything else from the upload's event until `import` returns." + (" **Quick run.**" if result["quick"] else ""),
        "",
        "## Where the time goes",
        "",
        f"| segment | {head} |",
        "|---|" + "---:|" * len(imports),
    ]
    for index, segment in enumerate(imports[0]["segments"]):
        lines.append(f"| {segment['what']} | " + " | ".join(f"{i['segments'][index]['seconds']:.1f}" for i in imports) + " |")
    for key, label in (
        ("pipeline_seconds", "**pipeline (event -> import returns)**"),
        ("data_movement_seconds", "data movement"),
        ("overhead_seconds", "**overhead**"),
        ("upload_seconds", "upload, before the event (CLI start + upload; not counted)"),
    ):
        lines.append(f"| {label} | " + " | ".join(f"{i[key]:.1f}" for i in imports) + " |")
    lines += [
        "",
        "## Steps (Airflow task time / the step's own work)",
        "",
        f"| step | {head} |",
        "|---|" + "---:|" * len(imports),
    ]
    for index, step in enumerate(imports[0]["steps"]):
        cells = []
        for i in imports:
            s = i["steps"][index]
            own = f" / {s['step_seconds']:.1f}" if isinstance(s["step_seconds"], int | float) else ""
            cells.append(f"{(s['seconds'] or 0):.1f}{own}")
        lines.append(f"| {step['name']}{' (data)' if step['data'] else ''} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Verdicts",
        "",
        *[f"- {'PASS' if v['pass'] else 'FAIL'}: {v['criterion']} ({v['measured']})" for v in result["verdicts"]],
        "",
        f"Took {result['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one import (lifecycles 0 s) only")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    run(args.out, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
