"""Helpers of the DAG tests (imported by conftest.py and the test modules).

Importing this module first gives Airflow a private ``AIRFLOW_HOME`` (its configuration is read
once, when ``airflow`` is first imported) and puts ``dags/`` on ``sys.path`` as Airflow does
for a DAG bundle, so the tests can import ``vdimport_dag``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
FAKE_STEP = Path(__file__).with_name("fake_step.py")
DAG_ID = "virtual_disk_import"

if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="vdimport-airflow-home-")
    atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], ignore_errors=True)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS))
if str(DAGS) not in sys.path:
    sys.path.insert(0, str(DAGS))


def clear_vdimport_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No VDIMPORT_* setting (nor the vdimport_dag Variable) from the caller's environment."""
    for key in list(os.environ):
        if key.startswith("VDIMPORT_") or key == "AIRFLOW_VAR_VDIMPORT_DAG":
            monkeypatch.delenv(key)


REAPER_DAG_ID = "vdimport_reaper"


def parse_dag(dag_id: str = DAG_ID) -> Any:
    """A DAG as the dag-processor and the task runner parse it (a BundleDagBag of dags/)."""
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=DAGS, bundle_path=DAGS)
    assert not bag.import_errors, bag.import_errors
    assert sorted(bag.dags) == sorted([DAG_ID, REAPER_DAG_ID])
    return bag.dags[dag_id]
