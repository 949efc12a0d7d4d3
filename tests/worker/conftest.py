"""Fixtures for the step-runner tests; the helpers themselves live in ``importkit.py``.

``bucket``: the session emulator's test bucket. ``importer``: upload a file with metadata
and run an import through all 14 steps (``importer.run(...)``), with the session emulator
reset to no faults and instant lifecycles. Check the result with
``importkit.assert_nothing_leaked(emu, outcome, expected_bytes)`` (and
``assert_no_volume_made`` for refusals). ``small_disk``: a small real GPT disk (ext4 with
files, ~26 MiB raw) for tests that need an image, not a format. Modules of many full
imports run them a few at a time with ``importkit.concurrent_imports`` (see test_formats).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from importkit import Bucket, Importer, ensure_bucket

from vdimport_local.diskimages import Partition, build_disk, sample_files
from vdimport_local.emulator.client import EmulatorHandle


@pytest.fixture(scope="session")
def bucket(emulator: EmulatorHandle) -> Bucket:
    """The session emulator's test bucket (created once)."""
    return ensure_bucket(emulator)


@pytest.fixture
def importer(emu: EmulatorHandle, bucket: Bucket) -> Importer:
    """Upload-and-import against the session emulator (faults cleared before and after)."""
    return Importer(emu, bucket)


@pytest.fixture(scope="session")
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small raw GPT disk with one ext4 partition holding files (4 MiB of random data)."""
    where = tmp_path_factory.mktemp("small-disk")
    return build_disk(where / "small.raw", [Partition("ext4", 24, sample_files(seed=21, size=4 << 20))], table="gpt")
