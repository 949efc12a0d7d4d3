"""Helpers of the deployment tests: paths, YAML, the vendored schemas, a Dockerfile reader.

The schemas are unmodified copies (``schemas/README.md`` names their sources); their sha256 is
pinned here so a test fails when a copy is edited or swapped without updating the record.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"

AIRFLOW_VALUES = REPO / "charts" / "airflow" / "values.yaml"
AIRFLOW_README = REPO / "charts" / "airflow" / "README.md"
VDIMPORT_VALUES = REPO / "charts" / "vdimport" / "values.yaml"
SKAFFOLD = REPO / "skaffold.yaml"

# The official chart release the values are written for (and skaffold.yaml installs).
AIRFLOW_CHART_VERSION = "1.22.0"
AIRFLOW_CHART_SCHEMA = SCHEMAS / f"airflow-chart-{AIRFLOW_CHART_VERSION}.values.schema.json"
AIRFLOW_CHART_SCHEMA_SHA256 = "12eb9c2e90674b0f6a180eef5b87817ae3af83b38e2a1e60e9a1ed6b167de36a"
# The release name the values assume (README.md: "release `airflow` in namespace `airflow`").
AIRFLOW_RELEASE = "airflow"
AIRFLOW_NAMESPACE = "airflow"

SKAFFOLD_API_VERSION = "skaffold/v4beta13"
SKAFFOLD_SCHEMA = SCHEMAS / "skaffold-v4beta13.json"
SKAFFOLD_SCHEMA_SHA256 = "60aa19bdc634299263af120abee0ca47162315511dd10788f19f4741147857b9"

# Values handed to a subchart untouched: the parent's schema does not describe them.
PASS_THROUGH = {("postgresql", "primary")}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@cache
def schema(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def schema_errors(document: Any, path: Path) -> list[str]:
    """Every violation of the JSON schema at ``path``, as ``a.b.c: message`` lines."""
    spec = schema(path)
    validator = jsonschema.validators.validator_for(spec)(spec)
    found = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}" for e in found]


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node and node["$ref"].startswith("#/"):
        target: Any = root
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = {**{k: v for k, v in node.items() if k != "$ref"}, **target}
    return node


def unknown_keys(values: Any, spec: dict[str, Any], root: dict[str, Any] | None = None, path: tuple[str, ...] = ()) -> list[str]:
    """Keys of ``values`` that the schema does not declare where it lists the keys it knows.

    JSON schema lets undeclared keys through unless ``additionalProperties`` is false, and the
    Airflow chart's schema leaves it open at the top level: a misspelt top-level key
    (``fernetKeySecret``) would validate and be ignored by the chart. Helm does the same.
    """
    root = spec if root is None else root
    spec = _resolve(spec, root)
    if not isinstance(values, dict) or "properties" not in spec:
        return []
    extra = spec.get("additionalProperties")
    found = []
    for key, value in values.items():
        if key in spec["properties"]:
            found += unknown_keys(value, spec["properties"][key], root, (*path, key))
        elif (*path, key) not in PASS_THROUGH and extra in (None, False):
            found.append(".".join((*path, key)))
    return found


def dig(document: Any, dotted: str) -> Any:
    """``document["a"]["b"]`` for ``"a.b"``; KeyError names the missing path."""
    node = document
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"{dotted} (missing at {part!r})")
        node = node[part]
    return node


def apply_patches(document: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 ``add``/``replace``/``remove`` as Skaffold applies a profile's ``patches``."""
    result = copy.deepcopy(document)
    for patch in patches:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in patch["path"].lstrip("/").split("/")]
        parent: Any = result
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        op = patch.get("op", "replace")
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if op == "add":
                parent.insert(index, copy.deepcopy(patch["value"]))
            elif op == "remove":
                del parent[index]
            else:
                parent[index] = copy.deepcopy(patch["value"])
        elif op == "remove":
            del parent[last]
        else:
            if op == "replace" and last not in parent:
                raise KeyError(f"replace of missing {patch['path']}")
            parent[last] = copy.deepcopy(patch["value"])
    return result


def overlay(base: Any, top: Any) -> Any:
    """A profile's sections over the base config: maps merge, anything else replaces."""
    if isinstance(base, dict) and isinstance(top, dict):
        merged = dict(base)
        for key, value in top.items():
            merged[key] = overlay(base.get(key), value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(top)


def with_profile(config: dict[str, Any], name: str) -> dict[str, Any]:
    """``config`` as Skaffold sees it with profile ``name`` active (patches, then sections)."""
    (profile,) = [p for p in config.get("profiles", []) if p["name"] == name]
    result = apply_patches({k: v for k, v in config.items() if k != "profiles"}, profile.get("patches", []))
    for section, value in profile.items():
        if section not in ("name", "patches", "activation", "requiresAllActivations"):
            result[section] = overlay(result.get(section), value)
    return result


# --- Dockerfiles ---------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form CMD/ENTRYPOINT/RUN, or None for shell form."""
        try:
            parsed = json.loads(self.args)
        except ValueError:
            return None
        return parsed if isinstance(parsed, list) and all(isinstance(p, str) for p in parsed) else None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    @property
    def context(self) -> Path:
        return self.path.parent


def _logical_lines(text: str) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue  # comments and parser directives
        if buffer and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped by Docker too
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        lines.append((start, buffer + stripped))
        buffer = ""
    if buffer:
        lines.append((start, buffer))
    return lines


def substitute(text: str, variables: dict[str, str]) -> str:
    """``$NAME`` / ``${NAME}`` replaced from ``variables`` (unknown names stay as written)."""
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)",
        lambda m: variables.get(m.group(1) or m.group(2), m.group(0)),
        text,
    )


def parse_dockerfile(path: Path) -> Dockerfile:
    """The stages of a Dockerfile with global ``ARG`` defaults applied to ``FROM``."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in _logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = shlex.split(substitute(args, global_args))
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            if keyword == "ARG":
                arg_name, _, default = args.partition("=")
                global_args[arg_name.strip()] = default.strip().strip('"')
        else:
            stages[-1].instructions.append(Instruction(keyword, args, number))
    return Dockerfile(path, global_args, stages)
