"""Shared fixtures: an emulator process per test session, fresh state where a test needs it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from vdimport_local.emulator.client import EmulatorHandle

REPO = Path(__file__).resolve().parent.parent
# Steps run as subprocesses unless a test asks for the step-runner image (tests/images): a machine
# where `make images` ran must not switch every suite to containers.
os.environ.setdefault("VDIMPORT_LOCAL_RUNNER", "subprocess")
# The oci CLI lives in its own virtualenv (its pins conflict with Airflow's); make it findable.
if (REPO / ".venv-cli" / "bin" / "oci").exists():
    os.environ["PATH"] = f"{REPO / '.venv-cli' / 'bin'}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    """One emulator for the session; tests that inject faults clear them when done."""
    handle = EmulatorHandle.start(tmp_path_factory.mktemp("emulator"))
    yield handle
    handle.stop()


@pytest.fixture
def emu(emulator: EmulatorHandle) -> Iterator[EmulatorHandle]:
    """The session emulator with no faults and instant lifecycles, restored after the test."""
    emulator.clear_faults()
    emulator.configure(lifecycle_seconds=0.0, duplicate_events_every=0)
    yield emulator
    emulator.clear_faults()
    emulator.configure(lifecycle_seconds=0.0, duplicate_events_every=0)


@pytest.fixture
def fresh_emulator(tmp_path: Path) -> Iterator[EmulatorHandle]:
    """A private emulator, for tests that restart it or need an empty state."""
    handle = EmulatorHandle.start(tmp_path / "emulator")
    yield handle
    handle.stop()
