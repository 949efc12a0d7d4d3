"""The images `make images` builds, as podman runs them; the suite skips where there are none.

`make images-test` builds them and runs this suite. The plain test run (CI's) does not build
them yet: the images and their base add minutes beyond CI's time budget (issue notes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
if str(DAGS) not in sys.path:
    sys.path.insert(0, str(DAGS))  # vdimport_dag.containers: the runner's own command lines

STEP_IMAGE = os.environ.get("VDIMPORT_TEST_STEP_IMAGE", "localhost/vdimport-worker:dev")
FUNCTION_IMAGE = os.environ.get("VDIMPORT_TEST_FUNCTION_IMAGE", "localhost/vdimport-function:dev")
PODMAN = ("podman", "--runtime", "runc")


def podman(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False)


def _require(image: str) -> str:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (make images installs it)")
    if podman("image", "exists", image).returncode != 0:
        pytest.skip(f"{image} is not built: make images")
    return image


@pytest.fixture(scope="session")
def step_image() -> str:
    return _require(STEP_IMAGE)


@pytest.fixture(scope="session")
def function_image() -> str:
    return _require(FUNCTION_IMAGE)
