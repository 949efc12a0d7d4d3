"""The DAG's settings, read when the DAG file is parsed.

Every setting ``NAME`` comes from the environment variable ``VDIMPORT_NAME`` if set, else from
the key ``name`` (lower case) of the JSON Airflow Variable ``vdimport_dag``, else its default.
Set them the same way on every Airflow component that parses DAGs (dag-processor, scheduler
and, with the KubernetesExecutor, the task pods: the Helm chart's top-level ``env``), or use
the Variable, which all of them read. See ``dags/README.md`` for the table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

VARIABLE = "vdimport_dag"
RUNNERS = ("kubernetes", "local")
LOCAL_RUNNERS = ("subprocess", "container")

DEFAULT_POD_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}


class SettingsError(ValueError):
    """A setting with a value the DAG cannot use; the message names it."""


@dataclass(frozen=True)
class DagSettings:
    step_runner: str = "kubernetes"
    max_worker_vms: int = 4
    step_pool: str = "default_pool"
    step_retries: int = 2
    cleanup_retries: int = 6
    step_retry_delay_seconds: float = 60.0
    step_retry_backoff: float = 2.0
    step_max_retry_delay_seconds: float = 900.0
    step_timeouts: dict[str, float] = field(default_factory=dict)
    # the reaper DAG (vdimport_reaper): how often it looks for what finished or deleted runs left
    reaper_schedule: str = "*/10 * * * *"
    failed_pod_retention_hours: float = 72.0  # failed step pods kept for `kubectl logs`; 0: forever
    # kubernetes runner
    pod_namespace: str = "vdimport"
    pod_image: str = "vdimport-worker:latest"
    pod_image_pull_policy: str = "IfNotPresent"
    pod_image_pull_secrets: tuple[str, ...] = ()
    pod_service_account: str = "vdimport-step-runner"
    pod_configmap: str = "vdimport-step-runner"
    pod_kubernetes_conn_id: str = "kubernetes_default"
    pod_startup_timeout_seconds: int = 600
    pod_resources: dict[str, dict[str, str]] = field(default_factory=lambda: json.loads(json.dumps(DEFAULT_POD_RESOURCES)))
    pod_deferrable: bool = False
    # local runner: "subprocess" (the package on this machine) or "container" (the image, podman)
    local_step_command: str = ""
    local_env_file: str = ""
    local_runner: str = "subprocess"
    local_image: str = "localhost/vdimport-worker:dev"


def _variable_reader() -> dict[str, Any]:
    """The ``vdimport_dag`` Variable as a dict ({} when absent or when no Airflow is reachable)."""
    try:
        from airflow.sdk import Variable

        value = Variable.get(VARIABLE, default=None)
    except Exception:  # noqa: BLE001 - parsing must not fail because the metadata service is away
        return {}
    if not value:
        return {}
    try:
        data = json.loads(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise SettingsError(f"Airflow Variable {VARIABLE} is not a JSON object: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"Airflow Variable {VARIABLE} must be a JSON object")
    return {str(k).lower(): v for k, v in data.items()}


def _schedule(value: str) -> str:
    """A cron expression (five fields), an Airflow preset such as ``@hourly``, or ``none`` (off)."""
    if value.lower() == "none" or value.startswith("@") or len(value.split()) == 5:
        return value
    raise SettingsError(f"VDIMPORT_REAPER_SCHEDULE must be a cron expression, an @preset or none (got {value!r})")


def load_settings(env: Mapping[str, str] | None = None, variable: Callable[[], dict[str, Any]] | None = None) -> DagSettings:
    """Settings from ``env`` (default: ``os.environ``), then the Variable, then the defaults."""
    environ = os.environ if env is None else env
    stored: dict[str, Any] | None = None

    def raw(name: str) -> Any:
        nonlocal stored
        value = environ.get(f"VDIMPORT_{name.upper()}", "").strip()
        if value:
            return value
        if stored is None:
            stored = (variable or _variable_reader)()
        found = stored.get(name)
        return None if found in (None, "") else found

    defaults = DagSettings()

    def text(name: str) -> str:
        value = raw(name)
        return str(getattr(defaults, name)) if value is None else str(value).strip()

    def number(name: str, low: float, high: float, integer: bool = False) -> Any:
        value = raw(name)
        if value is None:
            return getattr(defaults, name)
        try:
            parsed = float(value)
        except (TypeError, ValueError):
            raise SettingsError(f"VDIMPORT_{name.upper()} must be a number (got {value!r})") from None
        if not low <= parsed <= high or (integer and parsed != int(parsed)):
            kind = "a whole number" if integer else "a number"
            raise SettingsError(f"VDIMPORT_{name.upper()} must be {kind} from {low:g} to {high:g} (got {value!r})")
        return int(parsed) if integer else parsed

    def flag(name: str) -> bool:
        value = raw(name)
        if value is None:
            return bool(getattr(defaults, name))
        if isinstance(value, bool):
            return value
        lowered = str(value).strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"VDIMPORT_{name.upper()} must be true or false (got {value!r})")

    def json_object(name: str) -> Any:
        value = raw(name)
        if value is None:
            return getattr(defaults, name)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise SettingsError(f"VDIMPORT_{name.upper()} is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise SettingsError(f"VDIMPORT_{name.upper()} must be a JSON object")
        return value

    runner = text("step_runner").lower()
    if runner not in RUNNERS:
        raise SettingsError(f"VDIMPORT_STEP_RUNNER must be one of {', '.join(RUNNERS)} (got {runner!r})")
    local_runner = text("local_runner").lower()
    if local_runner not in LOCAL_RUNNERS:
        raise SettingsError(f"VDIMPORT_LOCAL_RUNNER must be one of {', '.join(LOCAL_RUNNERS)} (got {local_runner!r})")
    timeouts = json_object("step_timeouts")
    for step, seconds in timeouts.items():
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0:
            raise SettingsError(f"VDIMPORT_STEP_TIMEOUTS: {step} must be a positive number of seconds")
    resources = json_object("pod_resources")
    if set(resources) - {"requests", "limits"} or not all(isinstance(v, dict) for v in resources.values()):
        raise SettingsError('VDIMPORT_POD_RESOURCES must look like {"requests": {"cpu": "100m"}, "limits": {"memory": "512Mi"}}')
    secrets = raw("pod_image_pull_secrets")
    if isinstance(secrets, list):
        pull_secrets = tuple(str(s).strip() for s in secrets if str(s).strip())
    else:
        pull_secrets = tuple(s.strip() for s in str(secrets or "").split(",") if s.strip())
    return DagSettings(
        step_runner=runner,
        max_worker_vms=number("max_worker_vms", 1, 1000, integer=True),
        step_pool=text("step_pool"),
        step_retries=number("step_retries", 0, 20, integer=True),
        cleanup_retries=number("cleanup_retries", 0, 50, integer=True),
        step_retry_delay_seconds=number("step_retry_delay_seconds", 0, 86400),
        step_retry_backoff=number("step_retry_backoff", 0, 10),
        step_max_retry_delay_seconds=number("step_max_retry_delay_seconds", 1, 86400),
        step_timeouts={str(k): float(v) for k, v in timeouts.items()},
        reaper_schedule=_schedule(text("reaper_schedule")),
        failed_pod_retention_hours=number("failed_pod_retention_hours", 0, 24 * 365),
        pod_namespace=text("pod_namespace"),
        pod_image=text("pod_image"),
        pod_image_pull_policy=text("pod_image_pull_policy"),
        pod_image_pull_secrets=pull_secrets,
        pod_service_account=text("pod_service_account"),
        pod_configmap=text("pod_configmap"),
        pod_kubernetes_conn_id=text("pod_kubernetes_conn_id"),
        pod_startup_timeout_seconds=number("pod_startup_timeout_seconds", 10, 86400, integer=True),
        pod_resources={str(k): {str(n): str(q) for n, q in v.items()} for k, v in resources.items()},
        pod_deferrable=flag("pod_deferrable"),
        local_step_command=text("local_step_command"),
        local_env_file=text("local_env_file"),
        local_runner=local_runner,
        local_image=text("local_image"),
    )
