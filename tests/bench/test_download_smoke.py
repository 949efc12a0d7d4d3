"""``bench.download`` on a tiny object: the harness runs the real ``download.sh`` and writes its tables.

Numbers are not checked (a quick run measures nothing); what is: every download arrives intact,
each part of the report is there, and the part floor the benchmark varies is still in the script.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import download
from vdimport_worker.remote import build_script

pytestmark = pytest.mark.skipif(shutil.which("curl") is None or shutil.which("qemu-img") is None, reason="needs curl and qemu-img")


def test_the_part_floor_is_found_and_can_be_varied() -> None:
    text = build_script("download", {"RUN": "x"})
    floor = download.script_floor(text)
    assert floor >= download.MIB
    assert download.script_floor(download._with_floor(text, 3 * download.MIB)) == 3 * download.MIB


def test_a_quick_run_downloads_intact_and_writes_its_tables(tmp_path: Path) -> None:
    result = download.run(tmp_path, quick=True)
    saved = json.loads((tmp_path / "download.json").read_text())
    assert saved["curve"] == result["curve"]
    rows = [result["single"], *result["curve"], result["production"], *result["ceiling_uncapped"]]
    assert all(r["verified"] and r["seconds"] > 0 and r["parts"] >= 1 for r in rows), rows
    assert {r["streams"] for r in result["curve"]} >= {1, result["default_streams"]}
    assert [v["pass"] for v in result["verdicts"]][1:] == [True]  # MD5; the speedup means nothing here
    report = (tmp_path / "download.md").read_text()
    assert "| single curl | 1 | 1 |" in report and "## Verdicts" in report
