"""The Kubernetes step runner: one KubernetesPodOperator pod per step.

Imported only when ``VDIMPORT_STEP_RUNNER=kubernetes`` (the default), so a local-mode Airflow
needs neither the cncf.kubernetes provider's import time nor a cluster.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from kubernetes.client import models as k8s

from .settings import DagSettings
from .steps import EXIT_REJECTED
from .templating import step_arguments, step_labels

# The step runner image runs as this user (images/worker/Dockerfile: USER 10001:10001).
RUNNER_UID = 10001
RESULT_PATH = "/airflow/xcom/return.json"  # where the KubernetesPodOperator's XCom sidecar reads
# Kubernetes ends a pod this long after the task's own execution timeout, should the Airflow
# worker that watches it be gone.
POD_DEADLINE_MARGIN_SECONDS = 300


def container_exit_code(pod: Any, container: str) -> int | None:
    """The exit code of ``container`` in a finished pod, if Kubernetes reported one."""
    statuses = (pod.status.container_statuses if pod is not None and pod.status else None) or []
    for status in statuses:
        if status.name == container and status.state and status.state.terminated:
            return int(status.state.terminated.exit_code)
    return None


def container_cause(pod: Any, container: str) -> str | None:
    """The step's one-line cause: the last ``FAILED: `` line of the container's termination
    message (``FallbackToLogsOnError``: the log's tail when the container failed)."""
    statuses = (pod.status.container_statuses if pod is not None and pod.status else None) or []
    for status in statuses:
        message = status.state.terminated.message if status.name == container and status.state and status.state.terminated else None
        for line in reversed((message or "").splitlines()):
            if "FAILED: " in line:
                return line.split("FAILED: ", 1)[1].strip()
    return None


class StepPodOperator(KubernetesPodOperator):
    """A step's pod; a step that rejects the import (exit ``EXIT_REJECTED``) fails without retries,
    and a failure's message is the step's one-line cause (the task log, the outcome message)."""

    def cleanup(self, pod: Any, remote_pod: Any, xcom_result: dict[str, Any] | None = None, context: Any = None) -> None:
        try:
            super().cleanup(pod, remote_pod, xcom_result, context)
        except AirflowFailException:
            raise
        except AirflowException as exc:
            code = container_exit_code(remote_pod, self.base_container_name)
            cause = container_cause(remote_pod, self.base_container_name)
            if code == EXIT_REJECTED:
                raise AirflowFailException(f"step {self.task_id} rejected the import (not retried): {cause or exc}") from exc
            if cause and code is not None:
                raise AirflowException(f"step {self.task_id} failed (exit {code}): {cause}") from exc
            raise


def kubernetes_step_task(
    step: str, settings: DagSettings, timeout_seconds: float, arguments: list[str] | None = None, **task_kwargs: Any
) -> Any:
    """The pod operator that runs ``vdimport-step <step>`` in the step runner image.

    ``arguments`` default to an import step's (``step_arguments``); the reaper passes its own.
    """
    restricted = k8s.V1SecurityContext(
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
    )
    task_kwargs.setdefault("task_id", step)
    return StepPodOperator(
        name=f"vdimport-{step.replace('_', '-')}",  # plus a random suffix
        namespace=settings.pod_namespace,
        kubernetes_conn_id=settings.pod_kubernetes_conn_id,
        image=settings.pod_image,
        image_pull_policy=settings.pod_image_pull_policy,
        image_pull_secrets=[k8s.V1LocalObjectReference(name=name) for name in settings.pod_image_pull_secrets] or None,
        cmds=["vdimport-step"],
        arguments=arguments if arguments is not None else step_arguments(step),
        labels=step_labels(step),
        annotations={"vdimport/run-id": "{{ run_id }}"},
        service_account_name=settings.pod_service_account,
        automount_service_account_token=True,  # OKE workload identity reads the projected token
        configmaps=[settings.pod_configmap],
        env_vars=[k8s.V1EnvVar(name="VDIMPORT_RESULT_PATH", value=RESULT_PATH)],
        container_resources=k8s.V1ResourceRequirements(
            requests=settings.pod_resources.get("requests"),
            limits=settings.pod_resources.get("limits"),
        ),
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=RUNNER_UID,
            run_as_group=RUNNER_UID,
            fs_group=RUNNER_UID,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        container_security_context=restricted,
        xcom_sidecar_container_security_context=restricted,
        volumes=[k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="64Mi"))],
        volume_mounts=[k8s.V1VolumeMount(name="tmp", mount_path="/tmp")],
        do_xcom_push=True,
        get_logs=True,
        log_events_on_failure=True,
        on_finish_action="delete_succeeded_pod",  # a failed pod stays for `kubectl logs`
        startup_timeout_seconds=settings.pod_startup_timeout_seconds,
        active_deadline_seconds=int(timeout_seconds) + POD_DEADLINE_MARGIN_SECONDS,
        termination_message_policy="FallbackToLogsOnError",  # the last log line (the cause) on failure
        deferrable=settings.pod_deferrable,
        **task_kwargs,
    )
