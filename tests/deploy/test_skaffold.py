"""skaffold.yaml: valid for its apiVersion, and every path, chart and image it names exists.

Validated against Skaffold's own JSON schema for skaffold/v4beta13 (vendored, see
schemas/README.md), with each profile applied too; then the wiring: artifacts build the
repository's Dockerfiles, releases install the vdimport chart and the pinned official Airflow
chart (vdimport first), and the built step runner image reaches the vdimport chart's values.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from deploykit import (
    AIRFLOW_CHART_SCHEMA,
    AIRFLOW_CHART_VERSION,
    AIRFLOW_NAMESPACE,
    AIRFLOW_RELEASE,
    AIRFLOW_VALUES,
    REPO,
    SKAFFOLD,
    SKAFFOLD_API_VERSION,
    SKAFFOLD_SCHEMA,
    SKAFFOLD_SCHEMA_SHA256,
    VDIMPORT_VALUES,
    dig,
    load_yaml,
    schema,
    schema_errors,
    sha256,
    unknown_keys,
    with_profile,
)

PROFILES = ["oke", "local"]


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return load_yaml(SKAFFOLD)


def releases(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in config["deploy"]["helm"]["releases"]}


def test_vendored_skaffold_schema_is_the_recorded_copy() -> None:
    assert sha256(SKAFFOLD_SCHEMA) == SKAFFOLD_SCHEMA_SHA256


def test_config_uses_the_api_version_of_the_vendored_schema(config: dict[str, Any]) -> None:
    """The schema checked below is the one Skaffold picks for this apiVersion."""
    assert config["apiVersion"] == SKAFFOLD_API_VERSION
    assert config["kind"] == "Config"


def test_config_validates_against_skaffolds_schema(config: dict[str, Any]) -> None:
    """Skaffold rejects unknown or misplaced fields; so does its schema."""
    assert schema_errors(config, SKAFFOLD_SCHEMA) == []


def test_schema_check_catches_a_misspelt_field(config: dict[str, Any]) -> None:
    """Not vacuous: a typo inside an artifact fails validation."""
    broken = with_profile(
        {**config, "profiles": [{"name": "typo", "build": {"artifacts": [{"image": "x", "docker": {"dockerfle": "D"}}]}}]}, "typo"
    )
    assert schema_errors(broken, SKAFFOLD_SCHEMA)


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_yields_a_valid_config(config: dict[str, Any], profile: str) -> None:
    """Patches that point at a missing release or produce a wrong field break only one profile."""
    assert schema_errors(with_profile(config, profile), SKAFFOLD_SCHEMA) == []


def test_artifacts_build_the_repositorys_dockerfiles(config: dict[str, Any]) -> None:
    """Each image folder with a Dockerfile is built, from that Dockerfile, under a fixed name."""
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    assert set(artifacts) == {"vdimport-worker", "vdimport-function"}
    for image, artifact in artifacts.items():
        context = REPO / artifact["context"]
        assert (context / artifact["docker"]["dockerfile"]).is_file(), image
        assert context.name == image.removeprefix("vdimport-")
    built = {REPO / a["context"] for a in artifacts.values()}
    assert built == {d.parent for d in (REPO / "images").glob("*/Dockerfile")}


def test_releases_install_the_vdimport_chart_then_the_pinned_official_chart(config: dict[str, Any]) -> None:
    """The vdimport release renders the ConfigMap the Airflow pods wait for, so it goes first."""
    names = [r["name"] for r in config["deploy"]["helm"]["releases"]]
    assert names == ["vdimport", AIRFLOW_RELEASE]
    vdimport, airflow = releases(config)["vdimport"], releases(config)[AIRFLOW_RELEASE]
    assert (REPO / vdimport["chartPath"] / "Chart.yaml").is_file()
    assert airflow["dependsOn"] == ["vdimport"]
    assert (airflow["remoteChart"], airflow["repo"]) == ("airflow", "https://airflow.apache.org")
    # Pinned to the release whose schema validates charts/airflow/values.yaml.
    assert airflow["version"] == AIRFLOW_CHART_VERSION and re.fullmatch(r"\d+\.\d+\.\d+", airflow["version"])
    assert AIRFLOW_CHART_VERSION in AIRFLOW_CHART_SCHEMA.name
    assert [REPO / f for f in airflow["valuesFiles"]] == [AIRFLOW_VALUES]
    assert airflow["namespace"] == AIRFLOW_NAMESPACE == dig(load_yaml(VDIMPORT_VALUES), "airflow.namespace")


def _templates(release: dict[str, Any]) -> dict[str, str]:
    return dict(release.get("setValueTemplates", {}))


@pytest.mark.parametrize("profile", [None, *PROFILES])
def test_built_step_runner_image_is_wired_into_the_vdimport_chart(config: dict[str, Any], profile: str | None) -> None:
    """setValueTemplates set keys the vdimport chart has, from images this config builds."""
    effective = config if profile is None else with_profile(config, profile)
    templates = _templates(releases(effective)["vdimport"])
    chart_values = load_yaml(VDIMPORT_VALUES)
    artifacts = {a["image"].replace("-", "_").replace("/", "_").replace(".", "_") for a in effective["build"]["artifacts"]}
    assert templates["stepRunner.image.repository"] == "{{.IMAGE_REPO_vdimport_worker}}"
    assert templates["stepRunner.image.tag"] == "{{.IMAGE_TAG_vdimport_worker}}"
    for key, template in templates.items():
        dig(chart_values, key)  # KeyError: the chart has no such value
        for _kind, artifact in re.findall(r"\{\{\s*\.IMAGE_(REPO|TAG|DIGEST|FULLY_QUALIFIED)_(\w+)\s*\}\}", template):
            assert artifact in artifacts, f"{key} uses {artifact}, which is not built"


def test_oke_profile_pushes_and_pins_the_step_pods_to_the_pushed_digest(config: dict[str, Any]) -> None:
    oke = with_profile(config, "oke")
    assert oke["build"]["local"]["push"] is True
    assert oke["build"]["platforms"] == ["linux/amd64"]
    assert _templates(releases(oke)["vdimport"])["stepRunner.image.digest"] == "{{.IMAGE_DIGEST_vdimport_worker}}"
    assert len(oke["build"]["artifacts"]) == 2  # the profile's build section must not drop artifacts


def test_local_profile_builds_without_pushing_and_drops_the_oci_load_balancer(config: dict[str, Any]) -> None:
    """No cloud load balancer locally; Kubernetes rejects source ranges on a ClusterIP service."""
    local = with_profile(config, "local")
    assert local["build"]["local"]["push"] is False
    overrides = releases(local)[AIRFLOW_RELEASE]["setValues"]
    assert overrides == {
        "apiServer.service.type": "ClusterIP",
        "apiServer.service.annotations": "null",
        "apiServer.service.loadBalancerSourceRanges": "null",
    }
    nested: dict[str, Any] = {}
    for dotted in overrides:
        node = nested
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = None
    assert unknown_keys(nested, schema(AIRFLOW_CHART_SCHEMA)) == []
    (forward,) = local["portForward"]
    assert (forward["resourceName"], forward["namespace"]) == (f"{AIRFLOW_RELEASE}-api-server", AIRFLOW_NAMESPACE)
    assert forward["port"] == 8080


@pytest.mark.parametrize("profile", PROFILES)
def test_dags_repository_comes_from_the_environment_and_is_required(config: dict[str, Any], profile: str) -> None:
    """The values file's placeholder repository never reaches a cluster: git-sync's repo is
    VDIMPORT_DAGS_REPO, and the deploy hook stops the run before any release when it is unset."""
    import os
    import subprocess

    profiled = with_profile(config, profile)
    templates = releases(profiled)["airflow"]["setValueTemplates"]
    assert templates["dags.gitSync.repo"] == "{{.VDIMPORT_DAGS_REPO}}"
    assert "VDIMPORT_DAGS_BRANCH" in templates["dags.gitSync.branch"] == templates["dags.gitSync.ref"]
    [hook] = profiled["deploy"]["helm"]["hooks"]["before"]
    command = hook["host"]["command"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VDIMPORT_")}
    unset = subprocess.run(command, env=env, capture_output=True, text=True)
    assert unset.returncode != 0 and "set VDIMPORT_DAGS_REPO" in unset.stderr
    given = subprocess.run(command, env={**env, "VDIMPORT_DAGS_REPO": "https://git.example/vdimport.git"}, capture_output=True, text=True)
    assert given.returncode == 0, given.stderr
