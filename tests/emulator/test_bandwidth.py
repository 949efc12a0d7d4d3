"""The per-connection bandwidth cap of the PAR data path (``par_bytes_per_second``).

A functional test of the cap, which ``make bench`` relies on to model Object Storage's per-stream
limit: a capped read lasts about size / rate, concurrent connections each get the whole rate
(so parallel ranged GETs pay off, as against OCI), and 0 means uncapped. Tolerances are wide on
purpose: the lower bounds prove the pacing, the upper ones only that it is per connection.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
from emulator_helpers import make_par
from oci.object_storage import ObjectStorageClient

from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.emulator.server import EmulatorServer

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")

RATE = 4_000_000  # bytes per second per connection
SIZE = 4_000_000  # one second's worth at RATE


@pytest.fixture
def capped(emu: EmulatorHandle) -> Iterator[EmulatorHandle]:
    """The session emulator with the cap at RATE, uncapped again afterwards."""
    emu.configure(par_bytes_per_second=RATE)
    yield emu
    emu.configure(par_bytes_per_second=0)


@pytest.fixture
def par_url(osc: ObjectStorageClient, ns: str, bucket: str) -> tuple[str, bytes]:
    data = os.urandom(2 * SIZE)
    osc.put_object(ns, bucket, "big.raw", data)
    return make_par(osc, ns, bucket, "ObjectRead", "big.raw").full_path, data


def _start_curl(url: str, out: Path, first: int, last: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["curl", "-sS", "--fail", "-r", f"{first}-{last}", "-o", str(out), "-w", "%{time_total}", url],
        stdout=subprocess.PIPE,
        text=True,
    )


def _seconds(process: subprocess.Popen[str]) -> float:
    """curl's own time for its transfer, once it has ended successfully."""
    stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    return float(stdout)


def test_a_capped_ranged_read_takes_size_over_rate(capped: EmulatorHandle, par_url: tuple[str, bytes], tmp_path: Path) -> None:
    url, data = par_url
    seconds = _seconds(_start_curl(url, tmp_path / "part", 1000, 1000 + SIZE - 1))
    assert 0.85 <= seconds <= 3.0, seconds
    assert (tmp_path / "part").read_bytes() == data[1000 : 1000 + SIZE]


def test_each_concurrent_connection_gets_the_whole_rate(capped: EmulatorHandle, par_url: tuple[str, bytes], tmp_path: Path) -> None:
    """Three parallel ranged GETs take about as long as one: a shared cap would need three times as long."""
    url, data = par_url
    spans = [(i * SIZE // 2, i * SIZE // 2 + SIZE - 1) for i in range(3)]
    started = time.monotonic()
    processes = [_start_curl(url, tmp_path / f"part{i}", first, last) for i, (first, last) in enumerate(spans)]
    each = [_seconds(p) for p in processes]
    wall = time.monotonic() - started
    assert all(s >= 0.85 for s in each), each
    assert wall < 2.2, (wall, each)  # one shared cap: >= 3 s
    # download.sh opens STREAMS connections at once: a listen backlog of 5 dropped SYNs (1 s client retries).
    assert EmulatorServer.request_queue_size >= 64
    for i, (first, last) in enumerate(spans):
        assert hashlib.sha256((tmp_path / f"part{i}").read_bytes()).digest() == hashlib.sha256(data[first : last + 1]).digest()


def test_zero_means_uncapped_and_signed_reads_are_never_paced(
    capped: EmulatorHandle, par_url: tuple[str, bytes], osc: ObjectStorageClient, ns: str, bucket: str, tmp_path: Path
) -> None:
    url, data = par_url
    started = time.monotonic()
    assert osc.get_object(ns, bucket, "big.raw").data.content == data  # 2 s worth at RATE, not paced
    assert time.monotonic() - started < 1.5
    capped.configure(par_bytes_per_second=0)
    seconds = _seconds(_start_curl(url, tmp_path / "all", 0, len(data) - 1))
    assert seconds < 1.5, seconds  # 2 s worth at RATE
    assert (tmp_path / "all").read_bytes() == data


def test_the_setting_is_validated_and_taken_from_the_command_line(emu: EmulatorHandle, tmp_path: Path) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        emu.configure(par_bytes_per_second=-1, lifecycle_seconds=5)
    assert err.value.code == 400
    assert emu.admin("GET", "config")["lifecycle_seconds"] == 0.0  # all or nothing
    handle = EmulatorHandle.start(tmp_path / "emulator", "--par-bytes-per-second", "20M")
    try:
        assert handle.admin("GET", "config")["par_bytes_per_second"] == 20_000_000
    finally:
        handle.stop()
