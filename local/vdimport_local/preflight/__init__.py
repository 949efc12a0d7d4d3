"""``vdimport-local preflight``: before the first upload, check what operators get wrong.

Given an OCI config profile and a kubeconfig context it reads the deployment (both charts'
settings, the bucket and its Events rule, the function's configuration, the cluster, the IAM
policies and dynamic groups, the step runner image) and invokes the function once with a
probe, so that "is Airflow reachable" is answered from the function's own subnet, with its
own login. Read-only apart from that invocation; it triggers nothing.

Modules: :mod:`.checks` (the checks, in order), :mod:`.policy` (reading IAM statements),
:mod:`.cloud` (the OCI reads), :mod:`.cluster` (the Kubernetes reads).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import oci

from .checks import CHECKS, Result, Run, Skip, Target
from .cloud import Cloud
from .cluster import Cluster, ClusterError

__all__ = ["Result", "Target", "preflight", "render"]

MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def _one_line(exc: Exception) -> str:
    if isinstance(exc, oci.exceptions.ServiceError):
        return f"OCI answered {exc.status} {exc.code} to {exc.operation_name or 'a call'}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def preflight(target: Target, on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Every check's result, in order; ``on_result`` sees each as soon as it is known."""
    results: list[Result] = []

    def record(result: Result) -> None:
        results.append(result)
        if on_result:
            on_result(result)

    try:
        cloud = Cloud(target.oci_config, target.oci_profile, target.oci_endpoint)
    except (oci.exceptions.ConfigFileNotFound, oci.exceptions.ProfileNotFound, oci.exceptions.InvalidConfig) as exc:
        record(Result("oci-config", "fail", f"OCI config {target.oci_config} [{target.oci_profile}]: {exc}", "oci setup config"))
        return results
    try:
        cluster = Cluster(target.kubeconfig, target.kube_context)
    except ClusterError as exc:
        record(Result("kube-context", "fail", str(exc), "oci ce cluster create-kubeconfig ... (terraform output kubeconfig_command)"))
        return results
    run = Run(target, cloud, cluster)
    for name, check in CHECKS:
        try:
            record(check(run))
        except Skip as why:
            record(Result(name, "skip", str(why)))
        except (ClusterError, oci.exceptions.ServiceError, oci.exceptions.RequestException) as exc:
            record(Result(name, "fail", _one_line(exc), "see the cause; the check reads only, so it is safe to run again"))
    return results


def render(result: Result) -> str:
    line = f"  {MARKS[result.status]}  {result.name:<22} {result.detail}"
    return line + (f"\n        fix: {result.fix}" if result.fix and result.status in ("fail", "warn") else "")


def summary(results: list[Result]) -> str:
    counts = {s: sum(r.status == s for r in results) for s in MARKS}
    verdict = "ready for the first upload" if not counts["fail"] else "not ready"
    return f"preflight: {verdict}: {counts['ok']} ok, {counts['warn']} warnings, {counts['fail']} failed, {counts['skip']} skipped"


def as_json(results: list[Result]) -> str:
    return json.dumps({"ok": not any(r.status == "fail" for r in results), "checks": [r.__dict__ for r in results]}, indent=2)
