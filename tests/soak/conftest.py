"""The soak's tables: tests add Markdown to ``soak_report``; the terminal summary prints it.

Tests marked ``large`` (multi-GiB images) run only when ``VDIMPORT_SOAK_LARGE=1``, which
``make soak`` sets: CI's ``make test`` collects tests/soak too, and must not build them.
"""

from __future__ import annotations

import os

import pytest

REPORT = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def soak_report(pytestconfig: pytest.Config) -> list[str]:
    """Markdown blocks printed at the end of the session (also when a check failed)."""
    return pytestconfig.stash.setdefault(REPORT, [])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    blocks = config.stash.get(REPORT, [])
    if not blocks:
        return
    terminalreporter.write_sep("=", "vdimport concurrency soak")
    for block in blocks:
        terminalreporter.write_line(block)
        terminalreporter.write_line("")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("VDIMPORT_SOAK_LARGE") == "1":
        return
    skip = pytest.mark.skip(reason="builds and imports 8 GiB OVAs: only under make soak (VDIMPORT_SOAK_LARGE=1)")
    for item in items:
        if item.get_closest_marker("large"):
            item.add_marker(skip)
