"""``bench.datapath`` on tiny disks: the harness runs the real ``write.sh`` and writes its tables.

Numbers are not checked (a quick run measures nothing); what is: every write by ours left the
volume holding exactly the image, verify and fsck passed, the byte accounting adds up, and each
part of the report is there.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bench import datapath

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/dev/loop-control").exists() or shutil.which("qemu-img") is None or shutil.which("mkfs.xfs") is None,
    reason="needs root, loop devices, qemu-img and mkfs.xfs",
)


def test_the_production_flags_are_read_from_write_sh() -> None:
    flags = datapath.production_flags()
    assert flags[:2] == ["-t", "none"]
    assert not any(">" in f or f.startswith("$") for f in flags)
    assert datapath.production_flags('x=1\nflags=(-n -W -m 4); [ "$zeroed" = no ]\n') == ["-t", "none", "-W", "-m", "4"]


def test_a_quick_run_writes_correctly_and_reports(tmp_path: Path) -> None:
    result = datapath.run(tmp_path, quick=True)
    saved = json.loads((tmp_path / "datapath.json").read_text())
    assert saved["verdicts"] == result["verdicts"]
    entries = result["images"]
    assert {(e["format"], e["target_allocation"]) for e in entries} == {(f, a) for f in datapath.FORMATS for a in datapath.ALLOCATIONS}
    for e in entries:
        assert 0 < e["allocated_bytes"] <= e["virtual_size"] and e["content_bytes"] > 0
        ours = e["ours"]["runs"]
        assert len(ours) == len(e["reference"]["runs"]) == len(e["floor"]["runs"]) == result["config"]["reps"]
        assert all(r["ok"] and r["correct"] for r in ours), (e["image"], ours)
        assert all(r["ok"] for r in e["reference"]["runs"] + e["floor"]["runs"])
        assert e["verify"]["ok"] and e["verify"]["result"] == {"identical": True}
        parts = e["fsck"]["result"]["partitions"]
        assert [p["fs"] for p in parts] == ["ext4", "xfs"] and all(p["status"] == "clean" for p in parts)
        for r in ours:  # what the kernel counted as written is data plus write-zeroes
            if result["machine"]["block_trace"]:
                assert r["data_bytes"] + r["zero_bytes"] == r["write_bytes"]
            assert r["data_bytes"] <= 1.1 * e["allocated_bytes"]  # a tiny disk still moves only its data
            assert r["data_bytes"] + (r["zero_bytes"] or 0) >= e["virtual_size"] - 4096  # the whole range was rewritten
        assert e["criteria"]["correct"] and e["criteria"]["checks_ok"]
        assert e["verdict"] in ("PASS", "FAIL")
    assert all(v["criterion"] and "pass" in v for v in result["verdicts"])
    assert result["variants"]["rows"] and any(r["production"] for r in result["variants"]["rows"])
    assert all(r["correct"] is not False for r in result["variants"]["rows"])
    report = (tmp_path / "datapath.md").read_text()
    assert "| vmdk streamOptimized |" in report and "## qemu-img variants" in report and "## Verdicts" in report
    assert not list(Path("/var/tmp/vdimport").glob(f"bench{os.getpid()}"))  # the fake worker directory is gone


def test_each_write_sh_variant_edits_the_script() -> None:
    """An edit that matches nothing would silently measure the production script twice."""
    text = datapath.build_script("write", {"RUN": "x" * 12, "DEVICE": "/dev/sdb", "FORMAT": "qcow2", "VSIZE": 1 << 30})
    for name, edit in datapath.SCRIPT_VARIANTS.items():
        assert (edit(text) == text) == (name == "write.sh (production)"), name
