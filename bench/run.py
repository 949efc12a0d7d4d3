"""``make bench``: run every benchmark and write ``bench/results/`` (JSON and Markdown).

Parts: ``datapath`` (qemu-img writes onto loop devices against the reference and the dd
floor), ``download`` (the worker's ranged PAR download under a per-connection cap) and
``pipeline`` (a small image through the whole local stack). ``--only`` runs some of them,
``--quick`` a tiny smoke version of each. Speed is never asserted here: each part prints
PASS/FAIL against the issue's targets and ``docs/performance.md`` discusses the numbers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

PARTS = ("datapath", "download", "pipeline")
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=PARTS, help="run only this part (repeatable)")
    parser.add_argument("--quick", action="store_true", help="tiny inputs: checks the harness, measures nothing useful")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results directory (default {RESULTS})")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": args.quick, "parts": {}}
    for part in args.only or PARTS:
        print(f"==> bench {part}", flush=True)
        started = time.monotonic()
        module = importlib.import_module(f"bench.{part}")
        result = module.run(args.out, quick=args.quick)
        summary["parts"][part] = {"seconds": round(time.monotonic() - started, 1), "verdicts": result.get("verdicts")}
        print(f"    {part} took {summary['parts'][part]['seconds']} s", flush=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
