"""Fixtures for the DAG tests; helpers live in ``dagkit.py``.

``load_dag(**settings)`` parses ``dags/`` the way Airflow does under the given ``VDIMPORT_*``
settings and returns the DAG (import errors fail the test); ``module_monkeypatch`` is a
module-scoped monkeypatch. The slow end-to-end tests are marked ``e2e`` (a real Airflow
against the OCI emulator): ``pytest -m "not e2e"`` skips them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dagkit import clear_vdimport_env, parse_dag


@pytest.fixture
def load_dag(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """``load_dag(step_runner="local", ...)``: the DAG parsed under these VDIMPORT_* settings."""

    def load(**settings: Any) -> Any:
        clear_vdimport_env(monkeypatch)
        for name, value in settings.items():
            monkeypatch.setenv(f"VDIMPORT_{name.upper()}", str(value))
        return parse_dag()

    return load


@pytest.fixture(scope="module")
def module_monkeypatch() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch
