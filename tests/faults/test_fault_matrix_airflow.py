"""The two rows of the fault matrix that need a real Airflow: a step process killed, Airflow restarted.

The rows run in a child process from early in the session (``airflowkit.AirflowMatrix``,
started by ``conftest.py``) while the step-level cells run; these tests wait for them. See
``airflowkit`` for what each row does and checks: one DAG run per row, interrupted during
launch_worker, create_volume and write_image, which must succeed with one VM, one volume, one
write, the interrupted tasks on their second try, nothing leaked and no step process left.
Select with ``-m e2e``, skip with ``-m "not e2e"``.
"""

from __future__ import annotations

import pytest
from airflowkit import AirflowMatrix

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def test_step_process_killed_is_retried_and_adopts_the_half_done_work(airflow_matrix: AirflowMatrix) -> None:
    airflow_matrix.result("step-killed")


def test_airflow_restarted_mid_task_converges(airflow_matrix: AirflowMatrix) -> None:
    airflow_matrix.result("worker-restart")
