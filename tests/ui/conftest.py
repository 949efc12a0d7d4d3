"""Fixtures of the browser tests: the Airflow + emulator stack of the e2e DAG tests
(``tests/dags/airflowstack.py``, reused, not copied), a real browser driving the Airflow UI, and
a place for its screenshots.

``stack``/``e2e``: one Airflow 3 (local step runner, no task retries) and one OCI emulator per
test module, faults cleared around each test.

``browser``: ``browser(action, **fields)`` runs ``tools/playwright/clear_task.mjs`` (playwright-core
driving Debian's headless chromium, installed by ``make setup``) against the stack's Airflow as
admin and returns its JSON answer; a failure fails the test with the script's one-line cause.

``artifacts``: the test's screenshot folder, ``$VDIMPORT_TEST_ARTIFACTS/<test name>`` when that is
set, else ``<tmp_path>/artifacts``; every folder used is listed at the end of the session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests" / "dags") not in sys.path:
    sys.path.insert(0, str(REPO / "tests" / "dags"))  # dagkit and the e2e stack, as pytest puts them there for tests/dags

from airflowstack import Stack, e2e, stack  # noqa: E402, F401 - the e2e suite's stack fixtures, reused
from dagkit import DAG_ID  # noqa: E402

PLAYWRIGHT = REPO / "tools" / "playwright"
CLEAR_TASK = PLAYWRIGHT / "clear_task.mjs"
CHROMIUM = "/usr/bin/chromium"
SCRIPT_TIMEOUT = 150.0
USED_ARTIFACTS: list[Path] = []

Browser = Callable[..., dict[str, Any]]


@pytest.fixture
def artifacts(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    base = os.environ.get("VDIMPORT_TEST_ARTIFACTS")
    folder = Path(base) / request.node.name if base else tmp_path / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    USED_ARTIFACTS.append(folder)
    return folder


@pytest.fixture
def browser(e2e: Stack, artifacts: Path) -> Browser:
    node = shutil.which("node")
    if node is None or not (PLAYWRIGHT / "node_modules" / "playwright-core").is_dir() or not Path(CHROMIUM).exists():
        pytest.fail(f"node, {PLAYWRIGHT.relative_to(REPO)}/node_modules or {CHROMIUM} is missing: run `make setup`")

    def run(action: str, **fields: Any) -> dict[str, Any]:
        airflow = e2e.airflow
        request = {
            "url": airflow.url,
            "username": airflow.username,
            "password": airflow.password,
            "dag_id": DAG_ID,
            "screenshot_dir": str(artifacts),
            "action": action,
            **fields,
        }
        env = {**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1", "CHROMIUM": CHROMIUM}
        done = subprocess.run(
            [node, str(CLEAR_TASK)],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT,
            env=env,
            cwd=PLAYWRIGHT,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"{CLEAR_TASK.name} {action} exited {done.returncode}: {done.stderr.strip()}")
        result = json.loads(done.stdout)
        for path in result.get("screenshots", []):
            print(f"screenshot: {path}")
        return dict(result)

    return run


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if USED_ARTIFACTS:
        terminalreporter.section("UI test artifacts (screenshots)")
        for folder in USED_ARTIFACTS:
            shots = sorted(p.name for p in folder.glob("*.png"))
            terminalreporter.write_line(f"{folder}: {', '.join(shots) or 'none'}")
