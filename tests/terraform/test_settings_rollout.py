"""A changed vdimport release reaches Airflow (issue 16, item 9): the dag-processor, which sets the
step pool and parses the DAG's max_active_runs from the vdimport ConfigMap's env at start, is
rolled by a pod annotation that changes with everything the vdimport release renders from."""

from __future__ import annotations

from tfkit import Module


def test_the_dag_processor_rolls_when_the_vdimport_release_changes(module: Module) -> None:
    release = module.resources[("helm_release", "airflow")].body
    assert {"name": "dagProcessor.podAnnotations.vdimport/settings-hash", "value": "${local.vdimport_release_hash}"} in release["set"]
    digest = str(module.locals["vdimport_release_hash"][0])
    for part in ("fileset(local.vdimport_chart_dir", "helm_release.vdimport[0].set,", "helm_release.vdimport[0].set_list"):
        assert part in digest, (part, digest)
    assert str(module.locals["vdimport_chart_dir"][0]) == "${path.module}/../charts/vdimport"
