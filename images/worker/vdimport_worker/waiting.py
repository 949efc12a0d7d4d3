"""Polling with backoff until a resource reaches a state, bounded by a deadline.

OCI waiters poll; so do we, starting fast (local mode answers in milliseconds) and
backing off to ``max_interval`` (real OCI transitions take seconds to minutes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class WaitTimeout(TimeoutError):
    pass


class UnexpectedState(RuntimeError):
    pass


def poll(
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    what: str,
    deadline_seconds: float,
    max_interval: float = 10.0,
    failed: Callable[[T], str | None] | None = None,
    progress: Callable[[T, float], None] | None = None,
    progress_every: float = 30.0,
) -> T:
    """Call ``fetch`` until ``done``; raise on ``failed`` (returns a reason) or the deadline."""
    started = time.monotonic()
    interval = 0.05
    last_progress = started
    while True:
        value = fetch()
        if done(value):
            return value
        reason = failed(value) if failed else None
        if reason:
            raise UnexpectedState(f"{what}: {reason}")
        now = time.monotonic()
        if now - started > deadline_seconds:
            raise WaitTimeout(f"{what}: still not done after {deadline_seconds:.0f} s")
        if progress and now - last_progress >= progress_every:
            progress(value, now - started)
            last_progress = now
        time.sleep(interval)
        interval = min(interval * 1.6, max_interval)


def wait_for_state(
    get: Callable[[], Any],
    wanted: str | Iterable[str],
    what: str,
    deadline_seconds: float,
    max_interval: float = 10.0,
    bad: Iterable[str] = (),
) -> Any:
    """Wait for ``get().lifecycle_state`` to be in ``wanted``; fail fast on a ``bad`` state."""
    wanted_set = {wanted} if isinstance(wanted, str) else set(wanted)
    bad_set = set(bad)
    return poll(
        get,
        lambda r: r.lifecycle_state in wanted_set,
        what,
        deadline_seconds,
        max_interval,
        failed=lambda r: f"went {r.lifecycle_state}" if r.lifecycle_state in bad_set else None,
    )
