"""images/*/build_spec.yaml: OCI DevOps build specs that build, check and hand on their image.

The structure is checked against a schema of build spec version 0.1 written from Oracle's
"Build Specification" reference (docs.oracle.com/iaas/Content/devops/using/build_specs.htm);
then what a pipeline relies on: the output artifact names the Deliver Artifacts stage maps
(listed in charts/airflow/README.md for Terraform), the exported tag, and shell that parses.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from deploykit import AIRFLOW_README, REPO, load_yaml

COMMAND = {
    "type": "object",
    "required": ["type", "command"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "Command"},
        "name": {"type": "string"},
        "shell": {"enum": ["bash", "sh", "/bin/bash", "/bin/sh"]},
        "timeoutInSeconds": {"type": "integer", "minimum": 1},
        "failImmediatelyOnError": {"type": "boolean"},
        "runAs": {"type": "string"},
        "command": {"type": "string", "minLength": 1},
        "onFailure": {"type": "array"},
    },
}
BUILD_SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["version", "component", "steps"],
    "additionalProperties": False,
    "properties": {
        "version": {"const": 0.1},
        "component": {"const": "build"},
        "timeoutInSeconds": {"type": "integer", "minimum": 1, "maximum": 28800},
        "runAs": {"type": "string"},
        "shell": {"enum": ["bash", "sh", "/bin/bash", "/bin/sh"]},
        "failImmediatelyOnError": {"type": "boolean"},
        "env": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "variables": {"type": "object", "additionalProperties": {"type": "string"}},
                "vaultVariables": {"type": "object", "additionalProperties": {"type": "string", "pattern": r"^ocid1\.vaultsecret\."}},
                "exportedVariables": {"type": "array", "items": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"}},
            },
        },
        "inputArtifacts": {"type": "array"},
        "steps": {"type": "array", "minItems": 1, "items": COMMAND},
        "outputArtifacts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "type", "location"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9-]*$"},
                    "type": {"enum": ["BINARY", "DOCKER_IMAGE"]},
                    "location": {"type": "string"},
                },
            },
        },
    },
}

IMAGES = ["worker", "function"]


@pytest.fixture(scope="module", params=IMAGES)
def image(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def spec(image: str) -> dict[str, Any]:
    return load_yaml(REPO / "images" / image / "build_spec.yaml")


def commands(spec: dict[str, Any]) -> str:
    return "\n".join(step["command"] for step in spec["steps"])


def test_spec_has_the_structure_of_build_spec_0_1(spec: dict[str, Any]) -> None:
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in jsonschema.Draft7Validator(BUILD_SPEC_SCHEMA).iter_errors(spec)
    ]
    assert errors == []


def test_a_failing_command_fails_the_build(spec: dict[str, Any]) -> None:
    """Without failImmediatelyOnError a broken `docker build` line is masked by the next line's success."""
    assert spec.get("failImmediatelyOnError") is True or all(s.get("failImmediatelyOnError") is True for s in spec["steps"])


def test_step_timeouts_fit_in_the_build_timeout(spec: dict[str, Any]) -> None:
    assert sum(step.get("timeoutInSeconds", 0) for step in spec["steps"]) <= spec["timeoutInSeconds"]


def test_output_artifact_is_the_image_the_steps_build(image: str, spec: dict[str, Any]) -> None:
    """`vdimport-<image>-image`, type DOCKER_IMAGE, at the tag `docker build -t` gave it."""
    (artifact,) = spec["outputArtifacts"]
    variable = f"{image.upper()}_IMAGE_TAG"
    assert artifact == {"name": f"vdimport-{image}-image", "type": "DOCKER_IMAGE", "location": f"vdimport-{image}:${{{variable}}}"}
    built = re.findall(r"docker build\b[^\n]*?-t \"?([^\s\"]+)\"?", commands(spec))
    assert built == [artifact["location"]]
    # the build then runs the image it built (the smoke check)
    assert re.search(rf"docker run --rm\b[^\n]*\"?{re.escape(artifact['location'])}\"?", commands(spec))


def test_exported_tag_is_assigned_before_use(image: str, spec: dict[str, Any]) -> None:
    """The Deliver Artifacts and Trigger Deployment stages read the exported tag. Every assignment
    is an ``export``, as Oracle's DevOps samples set an exported variable: a plain shell
    assignment is not in the environment the build runner reads after the step."""
    variable = f"{image.upper()}_IMAGE_TAG"
    assert spec["env"]["exportedVariables"] == [variable]
    text = commands(spec)
    assigned = re.search(rf"^\s*export {variable}=", text, re.M)
    used = text.find(f"${{{variable}}}")
    assert assigned and 0 <= assigned.start() < used
    plain = re.findall(rf"^\s*{variable}=.*$", text, re.M)
    assert not plain, f"assigned without export: {plain}"


def test_declared_variables_are_used(spec: dict[str, Any]) -> None:
    """A declared-but-unused variable (the old IMAGE_TAG) misleads whoever sets it in the pipeline."""
    text = commands(spec) + str(spec.get("outputArtifacts"))
    for name in spec.get("env", {}).get("variables", {}):
        assert f"${{{name}}}" in text or f"${name}" in text, name


def test_steps_build_their_own_image_folder(image: str, spec: dict[str, Any]) -> None:
    folders = re.findall(r'cd "\$\{OCI_PRIMARY_SOURCE_DIR\}/([^"]+)"', commands(spec))
    assert folders == [f"images/{image}"]
    assert (REPO / folders[0] / "Dockerfile").is_file()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_step_commands_are_valid_bash(spec: dict[str, Any], tmp_path: Path) -> None:
    for number, step in enumerate(spec["steps"]):
        script = tmp_path / f"step{number}.sh"
        script.write_text(step["command"])
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, done.stderr


def test_readme_lists_the_names_terraform_needs(image: str, spec: dict[str, Any]) -> None:
    """The artifact name and tag variable are documented where the DevOps project is described."""
    readme = AIRFLOW_README.read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if f"`images/{image}/build_spec.yaml`" in line)
    assert f"`{spec['outputArtifacts'][0]['name']}`" in row
    assert f"`{spec['env']['exportedVariables'][0]}`" in row
    assert f"vdimport-{image}:${{{spec['env']['exportedVariables'][0]}}}" in row
