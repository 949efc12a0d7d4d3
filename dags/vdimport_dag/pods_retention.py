"""Failed step pods are kept for ``kubectl logs``, for a while: the reaper removes older ones.

A failed step's pod stays (``on_finish_action="delete_succeeded_pod"``) so its log and
termination message can be read; without a limit they pile up in the namespace. The reaper
DAG's ``prune_failed_step_pods`` deletes step pods (label ``app.kubernetes.io/name=
vdimport-step-runner``) that failed more than ``VDIMPORT_FAILED_POD_RETENTION_HOURS`` ago
(default 72; 0 keeps them forever), through the same Kubernetes connection and RBAC (the
Role ``<release>-pod-launcher`` may list and delete pods) the step pods are made with.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

STEP_POD_SELECTOR = "app.kubernetes.io/name=vdimport-step-runner"
log = logging.getLogger(__name__)


def finished_at(pod: Any) -> dt.datetime | None:
    """When the pod's last container ended (None while one still runs)."""
    statuses = (pod.status.container_statuses if pod.status else None) or []
    ends = [s.state.terminated.finished_at for s in statuses if s.state and s.state.terminated and s.state.terminated.finished_at]
    if not ends or len(ends) < len(statuses):
        return None
    return max(ends)


def expired(pods: Iterable[Any], now: dt.datetime, retention_hours: float) -> list[Any]:
    """The failed pods that ended more than ``retention_hours`` before ``now`` (none if 0)."""
    if retention_hours <= 0:
        return []
    cutoff = now - dt.timedelta(hours=retention_hours)
    old = []
    for pod in pods:
        ended = finished_at(pod) if pod.status and pod.status.phase == "Failed" else None
        if ended is not None and ended < cutoff:
            old.append(pod)
    return old


def prune_failed_step_pods(core_v1: Any, namespace: str, retention_hours: float, now: dt.datetime | None = None) -> list[str]:
    """Delete the expired failed step pods in ``namespace``; returns their names."""
    now = now or dt.datetime.now(dt.UTC)
    pods = core_v1.list_namespaced_pod(namespace, label_selector=STEP_POD_SELECTOR, field_selector="status.phase=Failed").items
    deleted = []
    for pod in expired(pods, now, retention_hours):
        log.info(
            "Deleting failed step pod %s (run %s, ended %s)",
            pod.metadata.name,
            (pod.metadata.labels or {}).get("vdimport/run"),
            finished_at(pod),
        )
        core_v1.delete_namespaced_pod(pod.metadata.name, namespace)
        deleted.append(pod.metadata.name)
    log.info("%d failed step pod(s) older than %g h deleted", len(deleted), retention_hours)
    return deleted
