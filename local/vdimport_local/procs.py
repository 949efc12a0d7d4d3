"""Processes by PID and start time (Linux ``/proc``): find, check and stop what local mode started.

A PID alone can be reused by an unrelated process after ours exited, so every process local
mode records is a (pid, start time in clock ticks) pair, and only a process matching both is
signalled. ``stop_tree`` stops leaders and every descendant, including those that left the
leader's process group (task and step subprocesses start their own sessions).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path


def stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of ``pid``, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    if fields[0] == "Z":  # a zombie is gone for our purposes
        return None
    return int(fields[1]), int(fields[19])


def start_time(pid: int) -> int:
    """The start time of a running ``pid`` (0 if it is already gone)."""
    found = stat(pid)
    return found[1] if found else 0


def alive(pid: int, started: int) -> bool:
    found = stat(pid)
    return found is not None and found[1] == started


def descendants(roots: Iterable[int]) -> dict[int, int]:
    """Every living descendant of ``roots``: pid -> start time."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        found = stat(int(entry.name))
        if found is not None:
            children.setdefault(found[0], []).append(int(entry.name))
            starts[int(entry.name)] = found[1]
    result: dict[int, int] = {}
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in result and child in starts:
                result[child] = starts[child]
                todo.append(child)
    return result


def send(pid: int, sig: int, group: bool = False) -> None:
    """Signal ``pid`` (or its process group); a process already gone is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def tree(leaders: Mapping[int, int]) -> dict[int, int]:
    """The living ``leaders`` (pid -> start time) and all their descendants."""
    living = {pid: started for pid, started in leaders.items() if alive(pid, started)}
    return {**living, **descendants(living)}


def stop_tree(leaders: Mapping[int, int], grace: float = 20.0, reap: Callable[[], object] | None = None) -> list[int]:
    """SIGTERM the leaders' process groups and every descendant, SIGKILL what is left after
    ``grace`` seconds; returns the pids that had to be killed. ``reap`` (a callable) is called
    while waiting, so a parent can collect its own children's exit status."""
    living = {pid: started for pid, started in leaders.items() if alive(pid, started)}
    victims = tree(living)
    for pid in living:
        send(pid, signal.SIGTERM, group=True)
    for pid, started in victims.items():
        if alive(pid, started):
            send(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not any(alive(pid, started) for pid, started in victims.items()):
            return []
        time.sleep(0.1)
    # Anything still there, and anything started meanwhile (a task spawning as we stopped).
    victims.update(descendants([pid for pid, started in victims.items() if alive(pid, started)]))
    killed = [pid for pid, started in victims.items() if alive(pid, started)]
    for pid in killed:
        send(pid, signal.SIGKILL)
    for pid in living:
        send(pid, signal.SIGKILL, group=True)
    deadline = time.monotonic() + 10  # SIGKILL cannot be ignored, but the kernel takes a moment
    while any(alive(pid, victims[pid]) for pid in killed) and time.monotonic() < deadline:
        if reap is not None:
            reap()
        time.sleep(0.02)
    return killed
