"""The security corpus prints its table (case, input, expected, actual one-line cause) at the end of the session."""

from __future__ import annotations

from typing import Any

from securitykit import TABLE, TIMINGS, markdown_table, timings


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if not TABLE:
        return
    terminalreporter.section("vdimport security corpus")
    terminalreporter.write_line(markdown_table())
    if TIMINGS:
        terminalreporter.write_line(f"\nwall time: {timings()}")
