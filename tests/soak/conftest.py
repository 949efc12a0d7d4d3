"""The soak's tables: tests add Markdown to ``soak_report``; the terminal summary prints it."""

from __future__ import annotations

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
