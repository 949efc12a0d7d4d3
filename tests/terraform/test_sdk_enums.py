"""Enum-valued arguments in terraform/ hold values the OCI API takes, as the ``oci`` SDK lists them.

The OCI provider passes these strings to the service unchanged; the SDK's models are generated
from the same API specification and list each enum's allowed values in their setters. An HCL
parse, checkov and schema checks all accept ``format = "text/markdown"`` for a container
repository's readme; the Container Registry API refuses it (issue 16, item 1) and the first
``terraform apply`` fails. The table names, per resource type, the argument's path and the SDK
model attribute that defines it.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import oci
import pytest
from tfkit import Module

# (resource type, argument path through nested blocks, SDK model, SDK attribute)
ENUMS = [
    ("oci_artifacts_container_repository", ("readme", "format"), oci.artifacts.models.ContainerRepositoryReadme, "format"),
    ("oci_objectstorage_bucket", ("access_type",), oci.object_storage.models.Bucket, "public_access_type"),
    ("oci_objectstorage_bucket", ("versioning",), oci.object_storage.models.Bucket, "versioning"),
    ("oci_objectstorage_bucket", ("storage_tier",), oci.object_storage.models.Bucket, "storage_tier"),
    ("oci_objectstorage_bucket", ("auto_tiering",), oci.object_storage.models.Bucket, "auto_tiering"),
    ("oci_containerengine_cluster", ("type",), oci.container_engine.models.CreateClusterDetails, "type"),
    ("oci_containerengine_node_pool", ("node_source_details", "source_type"), oci.container_engine.models.NodeSourceDetails, "source_type"),
    ("oci_logging_log", ("configuration", "source", "source_type"), oci.logging.models.Source, "source_type"),
    ("oci_devops_trigger", ("actions", "type"), oci.devops.models.TriggerAction, "type"),
]


def allowed_values(model: type, attribute: str) -> list[str]:
    """The values the SDK's setter of ``model.attribute`` accepts (its ``allowed_values`` list)."""
    source = inspect.getsource(getattr(model, attribute).fset)
    found = re.search(r"allowed_values = \[(.*?)\]", source, re.S)
    if not found:
        raise AssertionError(f"{model.__name__}.{attribute} is not an enum in the SDK: fix the table")
    return re.findall(r'"([^"]+)"', found.group(1))


def literal_values(body: Any, path: tuple[str, ...]) -> list[str]:
    """The literal strings at ``path`` in a resource body (nested blocks are lists of dicts, a
    ``dynamic`` block's ``content`` counts as the block); interpolations are left out
    (variables carry their own validation)."""
    if not path:
        return [body] if isinstance(body, str) and "${" not in body else []
    found = []
    for item in body if isinstance(body, list) else [body]:
        if not isinstance(item, dict):
            continue
        blocks = [item[path[0]]] if path[0] in item else []
        for dynamic in item.get("dynamic") or []:
            blocks += [spec.get("content") for spec in [dynamic.get(path[0])] if isinstance(spec, dict)]
        found += [value for block in blocks for value in literal_values(block, path[1:])]
    return found


@pytest.mark.parametrize(("resource_type", "path", "model", "attribute"), ENUMS, ids=[f"{r}.{'.'.join(p)}" for r, p, _, _ in ENUMS])
def test_enum_arguments_hold_values_the_api_takes(
    module: Module, resource_type: str, path: tuple[str, ...], model: type, attribute: str
) -> None:
    allowed = allowed_values(model, attribute)
    blocks = module.resources_of(resource_type)
    assert blocks, f"terraform/ has no {resource_type}: update the table"
    seen = [(block.where, value) for block in blocks for value in literal_values(block.body, path)]
    assert seen, f"no literal {'.'.join(path)} in any {resource_type}: update the table"
    wrong = [f"{where}: {'.'.join(path)} = {value!r}" for where, value in seen if value not in allowed]
    assert not wrong, f"the API takes {allowed}: {wrong}"


def test_the_check_sees_the_defect_it_is_for() -> None:
    """The readme format that broke the first apply is not among the values the SDK allows."""
    allowed = allowed_values(oci.artifacts.models.ContainerRepositoryReadme, "format")
    assert allowed == ["TEXT_MARKDOWN", "TEXT_PLAIN"]
    assert "text/markdown" not in allowed
    body = {"readme": [{"format": "text/markdown", "content": "x"}]}
    assert literal_values(body, ("readme", "format")) == ["text/markdown"]
    dynamic = {"dynamic": [{"readme": {"for_each": "${x}", "content": [{"format": "text/plain"}]}}]}
    assert literal_values(dynamic, ("readme", "format")) == ["text/plain"]
