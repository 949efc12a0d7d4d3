"""``notifications.topicId`` and ``airflow.uiUrl`` reach the step runner as it reads them, or are refused."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest
from chartkit import configmap, deep_merge, lint, manifests, render, user_values

import vdimport_worker.config as worker_config

TOPIC = "ocid1.onstopic.oc1.iad.aaaaaaaaexampletopic000000000000000000000000000000000000"


def step_env(values: dict[str, Any]) -> dict[str, str]:
    return dict(configmap(manifests(render(values)), "vdimport-step-runner")["data"])


def test_topic_and_ui_url_reach_the_step_runner() -> None:
    values = deep_merge(
        user_values("example"), {"notifications": {"topicId": TOPIC}, "airflow": {"uiUrl": "https://airflow.example.com/ui/"}}
    )
    data = step_env(values)
    assert (data["VDIMPORT_NOTIFICATION_TOPIC_ID"], data["VDIMPORT_AIRFLOW_UI_URL"]) == (TOPIC, "https://airflow.example.com/ui/")
    config = worker_config.WorkerConfig.from_env(data)
    assert (config.notification_topic_id, config.airflow_ui_url) == (TOPIC, "https://airflow.example.com/ui")


def test_empty_values_leave_notifications_off() -> None:
    values = deep_merge(user_values("example"), {"notifications": {"topicId": ""}, "airflow": {"uiUrl": ""}})
    data = step_env(values)
    assert "VDIMPORT_NOTIFICATION_TOPIC_ID" not in data and "VDIMPORT_AIRFLOW_UI_URL" not in data
    config = worker_config.WorkerConfig.from_env(data)
    assert (config.notification_topic_id, config.airflow_ui_url) == (None, None)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"notifications": {"topicId": "ocid1.subscription.oc1.iad.aaaa"}}, "/notifications/topicId"),
        ({"notifications": {"topicId": "my-topic"}}, "/notifications/topicId"),
        ({"notifications": {"email": "a@example.com"}}, "email"),
        ({"airflow": {"uiUrl": "airflow.example.com"}}, "/airflow/uiUrl"),
        ({"airflow": {"uiUrl": "https://admin:secret@airflow.example.com"}}, "/airflow/uiUrl"),
        ({"airflow": {"uiUrl": "https://airflow.example.com/?next=x"}}, "/airflow/uiUrl"),
    ],
    ids=["subscription-ocid", "not-an-ocid", "unknown-key", "no-scheme", "credentials", "query"],
)
def test_schema_refuses_bad_values(override: dict[str, Any], field: str) -> None:
    values = deep_merge(user_values("example"), override)
    with pytest.raises(helm.HelmValuesError) as refused:
        render(values)
    assert "schema" in str(refused.value) and field in str(refused.value)
    assert any(field in error for error in lint(values)["errors"])


def test_extra_env_cannot_shadow_the_topic() -> None:
    values = deep_merge(user_values("example"), {"extraEnv": {"VDIMPORT_NOTIFICATION_TOPIC_ID": TOPIC}})
    with pytest.raises(helm.HelmRenderError, match=r"extraEnv\.VDIMPORT_NOTIFICATION_TOPIC_ID"):
        render(values)
