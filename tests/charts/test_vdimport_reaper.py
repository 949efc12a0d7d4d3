"""``reaper.*`` reach the reaper DAG and the step runner as they read them, or are refused."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest
from chartkit import configmap, deep_merge, manifests, render, user_values
from vdimport_dag.settings import load_settings

import vdimport_worker.config as worker_config

COMPARTMENT = "ocid1.compartment.oc1..aaaaaaaaothercompartment0000000000000000000000000000000"


def _maps(values: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    docs = manifests(render(values))
    return dict(configmap(docs, "vdimport-step-runner")["data"]), dict(configmap(docs, "vdimport-dag-settings")["data"])


def test_reaper_values_reach_the_dag_and_the_step_runner() -> None:
    reaper = {"schedule": "@hourly", "graceSeconds": 120, "extraCompartments": [COMPARTMENT], "failedPodRetentionHours": 24}
    step, dag = _maps(deep_merge(user_values("example"), {"reaper": reaper, "oci": {"bucketName": "uploads"}}))
    config = worker_config.WorkerConfig.from_env(step)
    assert (config.reaper_grace_seconds, config.reaper_compartments, config.reaper_buckets) == (120, (COMPARTMENT,), ("uploads",))
    settings = load_settings(dag, variable=dict)
    assert (settings.reaper_schedule, settings.failed_pod_retention_hours) == ("@hourly", 24)


def test_reaper_defaults() -> None:
    step, dag = _maps(user_values("example"))
    assert worker_config.WorkerConfig.from_env(step).reaper_grace_seconds == 300
    settings = load_settings(dag, variable=dict)
    assert (settings.reaper_schedule, settings.failed_pod_retention_hours) == ("*/10 * * * *", 72)


@pytest.mark.parametrize(
    "override",
    [{"schedule": "every hour"}, {"graceSeconds": -1}, {"extraCompartments": ["not-an-ocid"]}, {"failedPodRetentionHours": -2}],
    ids=["schedule", "grace", "compartment", "retention"],
)
def test_schema_refuses_bad_reaper_values(override: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError, match="schema"):
        render(deep_merge(user_values("example"), {"reaper": override}))
