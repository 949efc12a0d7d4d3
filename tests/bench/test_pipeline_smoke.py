"""``bench.pipeline`` once through the local stack: the timeline adds up and every step is accounted for.

Numbers are not checked; what is: the import succeeds, the segments sum to the pipeline's wall
time, each step has its task time, and the results are written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import pipeline
from vdimport_local.pipeline import STEP_ORDER

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def test_a_quick_run_accounts_for_the_whole_pipeline(tmp_path: Path) -> None:
    result = pipeline.run(tmp_path, quick=True)
    (measured,) = result["imports"]
    assert measured["state"] == "success"
    assert [s["name"] for s in measured["steps"]] == list(STEP_ORDER)
    assert all(s["state"] == "success" and s["seconds"] > 0 for s in measured["steps"])
    assert sum(s["seconds"] for s in measured["segments"]) == pytest.approx(measured["pipeline_seconds"], abs=0.2)
    assert measured["overhead_seconds"] == pytest.approx(measured["pipeline_seconds"] - measured["data_movement_seconds"], abs=0.02)
    assert json.loads((tmp_path / "pipeline.json").read_text())["imports"][0]["run_id"] == measured["run_id"]
    assert "## Where the time goes" in (tmp_path / "pipeline.md").read_text()
