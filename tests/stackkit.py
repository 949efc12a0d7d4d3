"""The local stack as a user drives it, shared by the suites that start one (local, security, soak)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cli(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``vdimport-local --home HOME ARGS`` as a user runs it."""
    command = [sys.executable, "-m", "vdimport_local.cli", "--home", str(home), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def stack_processes(home: Path) -> list[int]:
    """Every process on the machine whose command line or environment names the stack's home:
    after ``down`` there must be none."""
    needle = str(home).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes() or needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found
