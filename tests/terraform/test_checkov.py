"""checkov on terraform/: zero failed checks, and every skip carries its reason.

checkov runs from its own virtualenv (.venv-checkov: its pins conflict with the main lock),
offline: --skip-download, no API key, BC_SKIP_MAPPING. A canary module with a known defect is
scanned alongside (in parallel) to prove the checks really ran, and that the skip rules bite.
A skip is a comment inside the resource: ``#checkov:skip=CKV_OCI_8:why this does not apply``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tfkit import REPO, TERRAFORM, tf_files

CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
MIN_REASON = 20
SKIP_COMMENT = re.compile(r"(?:checkov|bridgecrew):skip=\s*([A-Za-z_\d]+)(?::(.*))?")

# Fails CKV_OCI_9 (no customer-managed key); skips CKV_OCI_8 without a reason and CKV_OCI_1
# (a provider check) where it cannot apply.
CANARY = """
resource "oci_objectstorage_bucket" "canary" {
  #checkov:skip=CKV_OCI_8
  #checkov:skip=CKV_OCI_1:this check is about provider blocks, so the skip is misplaced here
  compartment_id = "ocid1.compartment.oc1..canary"
  name           = "canary"
  namespace      = "canary"
}
"""


@dataclass
class Report:
    root: Path
    failed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    passed: list[dict[str, Any]] = field(default_factory=list)
    parsing_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _start(root: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BC_", "PRISMA_", "CKV_", "CHECKOV_"))}
    env["BC_SKIP_MAPPING"] = "TRUE"
    command = [str(CHECKOV), "-d", str(root), "--framework", "terraform", "--skip-download", "--compact", "-o", "json"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=root)


def _finish(proc: subprocess.Popen[str], root: Path, started: float) -> Report:
    stdout, stderr = proc.communicate(timeout=300)
    if proc.returncode not in (0, 1):
        pytest.fail(f"checkov exited {proc.returncode} on {root}:\n{stderr[-3000:]}")
    report = Report(root, seconds=time.monotonic() - started)
    documents: list[Any] = []
    decoder, index = json.JSONDecoder(), 0
    while stdout[index:].strip():
        index += len(stdout[index:]) - len(stdout[index:].lstrip())
        document, index = decoder.raw_decode(stdout, index)
        documents += document if isinstance(document, list) else [document]
    for document in documents:
        results = document.get("results", {})
        report.failed += results.get("failed_checks", [])
        report.skipped += results.get("skipped_checks", [])
        report.passed += results.get("passed_checks", [])
        report.parsing_errors += results.get("parsing_errors", [])
    return report


@pytest.fixture(scope="session")
def checkov_reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Report]:
    """(terraform/, canary) reports; the two checkov runs overlap."""
    if not CHECKOV.exists():
        if os.environ.get("CI"):
            pytest.fail(".venv-checkov/bin/checkov is missing in CI: `make setup` builds it")
        pytest.skip(".venv-checkov is missing (`make setup` builds it from tools/checkov/requirements.lock)")
    canary = tmp_path_factory.mktemp("checkov-canary")
    (canary / "main.tf").write_text(CANARY, encoding="utf-8")
    started = time.monotonic()
    procs = [(_start(root), root) for root in (TERRAFORM, canary)]
    terraform, canary_report = (_finish(proc, root, started) for proc, root in procs)
    return terraform, canary_report


def _where(check: dict[str, Any], root: Path) -> str:
    first, last = check.get("file_line_range") or (0, 0)
    path = Path(check.get("file_abs_path") or root / check["file_path"].lstrip("/"))
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
    return f"{shown}:{first}-{last}"


def failures(report: Report) -> list[str]:
    """One line per failed check: id, name, resource, file:lines, guideline (when known offline)."""
    lines = []
    for check in report.failed:
        guideline = check.get("guideline") or "no guideline offline; the id names the check in checkov's docs"
        lines.append(
            f"{check['check_id']} {check.get('check_name', '')}: {check['resource']} at {_where(check, report.root)} ({guideline})"
        )
    return sorted(lines)


def skip_problems(report: Report) -> list[str]:
    """Every skip comment under the report's root has a reason and is one checkov applied."""
    applied = {(c["check_id"], Path(c["file_abs_path"]).resolve(), *c["file_line_range"]) for c in report.skipped}
    found = []
    for path in tf_files(report.root):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            match = SKIP_COMMENT.search(line)
            if not match:
                continue
            check_id, reason = match.group(1), (match.group(2) or "").strip()
            where = f"{path.name}:{number}"
            if len(reason) < MIN_REASON:
                found.append(
                    f"{where}: skip of {check_id} needs a reason of at least {MIN_REASON} characters (`#checkov:skip={check_id}:why`)"
                )
            hits = [a for a in applied if a[0] == check_id and a[1] == path.resolve() and a[2] <= number <= a[3]]
            if not hits:
                found.append(f"{where}: skip of {check_id} is stale or misplaced: checkov skipped no such check on a resource around it")
    for check in report.skipped:
        comment = (check.get("check_result") or {}).get("suppress_comment") or ""
        if comment == "No comment provided" or len(comment.strip()) < MIN_REASON:
            found.append(f"{check['check_id']} skipped on {check['resource']} ({_where(check, report.root)}) with reason {comment!r}")
    return sorted(set(found))


def test_checkov_reports_no_failed_check(checkov_reports: tuple[Report, Report]) -> None:
    """Zero failed checks on terraform/, and it read every file (no parsing errors)."""
    report, _ = checkov_reports
    assert not report.parsing_errors, f"checkov could not parse: {report.parsing_errors}"
    assert not failures(report), f"{len(report.failed)} failed checkov checks:\n" + "\n".join(failures(report))


def test_checkov_evaluated_terraform(checkov_reports: tuple[Report, Report]) -> None:
    """A scan that evaluated nothing passes vacuously; terraform/ must give checkov resources to check."""
    report, _ = checkov_reports
    assert report.passed or report.failed or report.skipped, "checkov evaluated no check on terraform/"


def test_every_skip_is_justified(checkov_reports: tuple[Report, Report]) -> None:
    """A skip says why the check does not apply here, and still matches a check checkov ran."""
    report, _ = checkov_reports
    problems = skip_problems(report)
    assert not problems, "\n".join(problems)


def test_canary_shows_checks_run_and_skip_rules_bite(checkov_reports: tuple[Report, Report]) -> None:
    """The canary's defect is reported offline, its reasonless and misplaced skips are caught."""
    _, canary = checkov_reports
    assert any(line.startswith("CKV_OCI_9 ") and "oci_objectstorage_bucket.canary at " in line for line in failures(canary)), failures(
        canary
    )
    problems = skip_problems(canary)
    assert any("skip of CKV_OCI_8 needs a reason" in p for p in problems), problems
    assert any("skip of CKV_OCI_1 is stale or misplaced" in p for p in problems), problems
    assert any(p.startswith("CKV_OCI_8 skipped on oci_objectstorage_bucket.canary") for p in problems), problems
