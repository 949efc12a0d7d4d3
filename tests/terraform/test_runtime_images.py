"""The runtime images can come from the stack's OCIR (mirror_runtime_images), as terraform/ wires it.

Without the mirror, every node pulls Airflow, git-sync, PostgreSQL and the XCom sidecar from Docker
Hub and registry.k8s.io through one NAT IP, which Docker Hub's anonymous pull limit counts as one
client. ``local.runtime_images`` in mirror.tf is the one list of those images. These checks read
it as python-hcl2 parses terraform/ and compare it with the charts themselves: the images the
official chart runs under charts/airflow/values.yaml (from the vendored chart schema's defaults,
so a chart whose defaults change fails here), the XCom sidecar pinned in charts/vdimport; then
what the stack does with the list, evaluated with placeholder values for the registry: the
values both Helm paths set name OCIR copies only, mirror_commands copies every repository, and
the Airflow pods get the pull secret.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import yaml
from tfkit import REPO, Module, hcl_value, parse_hcl, resolve_text, template_expressions

AIRFLOW_VALUES = REPO / "charts" / "airflow" / "values.yaml"
VDIMPORT_VALUES = REPO / "charts" / "vdimport" / "values.yaml"
SCHEMAS = REPO / "tests" / "deploy" / "schemas"
# Placeholders for what only a plan knows: the region's registry, the tenancy namespace, the prefix.
HOST, NAMESPACE, PREFIX = "fra.ocir.io", "axaxnpcrorw5", "vdimport"
REGISTRY_PARTS = {"registry", "path", "repository", "tag", "image"}


# --- the charts: what they run ----------------------------------------------------------------


def chart_schema(module: Module) -> dict[str, Any]:
    """The vendored values.schema.json of the Airflow chart version the stack installs."""
    version = module.variables["airflow_chart_version"].body["default"]
    return json.loads((SCHEMAS / f"airflow-chart-{version}.values.schema.json").read_text())


def setting(values: dict[str, Any], schema: dict[str, Any], dotted: str) -> Any:
    """A value as the chart sees it: ours if charts/airflow/values.yaml sets it, else the schema's default."""
    node: Any = values
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is not None:
        return node
    spec: Any = schema
    for part in dotted.split("."):
        spec = spec["properties"][part]
    return spec.get("default")


def normalized(reference: str) -> str:
    """``apache/airflow:1`` as a runtime resolves it: ``docker.io/apache/airflow:1``."""
    first, _, rest = reference.partition("/")
    if not rest:
        return f"docker.io/library/{reference}"
    return reference if "." in first or ":" in first or first == "localhost" else f"docker.io/{reference}"


def chart_images(module: Module) -> dict[str, str]:
    """Value key of the repository => the image reference, for each image the official chart
    runs with our values, plus the XCom sidecar of the step pods (charts/vdimport)."""
    values, schema = yaml.safe_load(AIRFLOW_VALUES.read_text()), chart_schema(module)

    def get(key: str) -> Any:
        return setting(values, schema, key)

    executor = get("executor")
    # images.<name> => does the chart run it under these values. Every image the schema lists
    # must be classified here, so a new image of a new chart version fails until it is.
    runs = {
        "airflow": True,
        "pod_template": "KubernetesExecutor" in executor,
        "flower": get("flower.enabled"),
        "statsd": get("statsd.enabled"),
        "redis": get("redis.enabled"),
        "pgbouncer": get("pgbouncer.enabled"),
        "pgbouncerExporter": get("pgbouncer.enabled"),
        "gitSync": get("dags.gitSync.enabled"),
        "otelCollector": get("otelCollector.tracesEnabled") or get("otelCollector.metricsEnabled"),
    }
    listed = {name for name, spec in schema["properties"]["images"]["properties"].items() if "repository" in spec.get("properties", {})}
    assert set(runs) == listed, f"images of the chart schema not classified here: {sorted(listed ^ set(runs))}"
    found: dict[str, str] = {}
    for name, running in runs.items():
        if not running:
            continue
        repository, tag = get(f"images.{name}.repository"), get(f"images.{name}.tag")
        if repository is None:  # the Airflow image: every such image falls back to the defaults
            key, repository, tag = "defaultAirflowRepository", get("defaultAirflowRepository"), tag or get("defaultAirflowTag")
        else:
            key = f"images.{name}.repository"
        found.setdefault(key, normalized(f"{repository}:{tag}"))
        assert found[key] == normalized(f"{repository}:{tag}"), (name, found[key])
    if get("postgresql.enabled"):
        # The bitnami subchart: registry (its default docker.io) + repository + tag.
        image = f"docker.io/{get('postgresql.image.repository')}:{get('postgresql.image.tag')}"
        found["postgresql.image.repository"] = image
    sidecar = yaml.safe_load(VDIMPORT_VALUES.read_text())["airflow"]["xcomSidecarImage"]
    found["airflow.xcomSidecarImage"] = normalized(sidecar.split("@")[0])
    return found


def runtime_images(module: Module) -> dict[str, dict[str, Any]]:
    """``local.runtime_images`` with each tag resolved (a literal, or read from a chart's values)."""
    images = module.locals["runtime_images"][0]
    return {name: {**image, "tag": resolve_text(module, image["tag"])} for name, image in images.items()}


def test_the_list_is_every_image_the_charts_run_at_the_charts_tags(module: Module) -> None:
    """Exactly the images the Airflow chart runs with our values (KubernetesExecutor, git-sync,
    its PostgreSQL; no Redis, StatsD, Flower, PgBouncer or OTel collector) and the XCom sidecar,
    each at the chart's default or our pinned tag."""
    expected = chart_images(module)
    images = runtime_images(module)
    assert sorted(expected.values()) == sorted(f"{image['source']}:{image['tag']}" for image in images.values())
    assert len(expected) == 4, expected
    assert "images.redis.repository" not in expected and "images.statsd.repository" not in expected


def test_each_image_names_the_chart_values_that_pick_it(module: Module) -> None:
    """The value keys of an entry are the ones that choose that very image in its chart: its
    repository (or registry and path), its tag, or the whole reference."""
    expected = chart_images(module)
    for name, image in runtime_images(module).items():
        keys = image["values"]
        assert set(keys.values()) <= REGISTRY_PARTS, (name, keys)
        [repository_key] = [k for k, part in keys.items() if part in ("repository", "path", "image")]
        assert expected[repository_key] == f"{image['source']}:{image['tag']}", name
        if keys[repository_key] == "path":  # registry and repository apart: both must move
            assert [k for k, part in keys.items() if part == "registry"] == [repository_key.replace(".repository", ".registry")]
        if keys[repository_key] != "image":
            [tag_key] = [k for k, part in keys.items() if part == "tag"]
            assert tag_key.rsplit(".", 1)[0] == repository_key.rsplit(".", 1)[0] or tag_key == "defaultAirflowTag", name
        assert image["chart"] == ("vdimport" if repository_key == "airflow.xcomSidecarImage" else "airflow")
    tags = {name: image["tag"] for name, image in runtime_images(module).items()}
    assert tags["airflow"] == yaml.safe_load(AIRFLOW_VALUES.read_text())["defaultAirflowTag"]


# --- what the stack makes of the list ---------------------------------------------------------


def _for_body(expression: str, head: str) -> str:
    """The value of ``{for <head> : <key> => <value>}`` (a python-hcl2 for-expression string)."""
    found = re.fullmatch(r"\$\{\{for " + re.escape(head) + r" : name => (?P<value>.*)\}\}", expression, re.S)
    assert found, expression
    return found.group("value")


def evaluate(template: str, known: dict[str, str]) -> str:
    """A template string with each interpolation replaced by its value from ``known``."""
    out = template
    for expression in template_expressions(template):
        assert expression in known, f"cannot evaluate ${{{expression}}} in {template!r}"
        out = out.replace("${" + expression + "}", known[expression], 1)
    return out


def mirror_parts(module: Module) -> dict[str, dict[str, str]]:
    """``local.mirror_images`` evaluated for every image, with the placeholder registry."""
    names = _for_body(module.locals["mirror_repository_names"][0], "name, image in local.runtime_images")
    parts_text = _for_body(module.locals["mirror_images"][0], "name, image in local.runtime_images")
    parts = parse_hcl(f"x = {parts_text}\n")["x"]
    evaluated = {}
    for name, image in runtime_images(module).items():
        repository_name = evaluate(json.loads(names), {"var.name_prefix": PREFIX, "name": name})
        known = {
            "local.ocir_host": HOST,
            "local.ocir_namespace": NAMESPACE,
            "local.mirror_repository_names[name]": repository_name,
            "image.tag": image["tag"],
        }
        evaluated[name] = {part: evaluate(text, known) for part, text in parts.items()}
    return evaluated


def mirror_settings(module: Module) -> dict[str, dict[str, str]]:
    """``local.mirror_settings`` with mirroring on: chart => value key => value."""
    text = str(module.locals["mirror_settings"][0])
    for part in (
        '{for chart in ["airflow", "vdimport"] : chart => merge([for name, image in local.runtime_images :',
        "{for key, part in image.values : key => local.mirror_images[name][part]}",
        "if var.mirror_runtime_images && image.chart == chart] ...)",
    ):
        assert part in text, (part, text)
    parts = mirror_parts(module)
    settings: dict[str, dict[str, str]] = {"airflow": {}, "vdimport": {}}
    for name, image in runtime_images(module).items():
        settings[image["chart"]].update({key: parts[name][part] for key, part in image["values"].items()})
    return settings


def test_the_copies_are_private_repositories_of_the_stack(module: Module) -> None:
    repository = module.resources[("oci_artifacts_container_repository", "mirror")].body
    assert repository["for_each"] == "${var.mirror_runtime_images ? local.mirror_repository_names : {}}"
    assert repository["display_name"] == "${each.value}"
    assert repository["is_public"] is False
    assert repository["compartment_id"] == "${var.compartment_ocid}"
    assert repository["freeform_tags"] == module.resources[("oci_artifacts_container_repository", "worker")].body["freeform_tags"]
    parts = mirror_parts(module)
    assert {name: p["path"] for name, p in parts.items()} == {name: f"{NAMESPACE}/{PREFIX}/mirror/{name}" for name in parts}


def test_with_mirroring_the_values_name_only_ocir_repositories(module: Module) -> None:
    """Every repository, registry or image value is the copy in this stack's OCIR; tags are the
    sources' tags; and the merged values still validate against the official chart's schema."""
    images = runtime_images(module)
    settings = mirror_settings(module)
    for chart, values in settings.items():
        for key, value in values.items():
            [(name, part)] = [(n, i["values"][key]) for n, i in images.items() if key in i["values"]]
            copy = f"{HOST}/{NAMESPACE}/{PREFIX}/mirror/{name}"
            assert (
                value
                == {
                    "registry": HOST,
                    "path": copy.removeprefix(f"{HOST}/"),
                    "repository": copy,
                    "tag": images[name]["tag"],
                    "image": f"{copy}:{images[name]['tag']}",
                }[part]
            ), (chart, key, value)
    assert settings["vdimport"] == {"airflow.xcomSidecarImage": f"{HOST}/{NAMESPACE}/{PREFIX}/mirror/xcom-sidecar:3.24.2"}
    merged = yaml.safe_load(AIRFLOW_VALUES.read_text())
    for key, value in settings["airflow"].items():
        node = merged
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    merged["imagePullSecrets"] = ["vdimport-ocir-pull"]
    merged["postgresql"]["image"]["pullSecrets"] = ["vdimport-ocir-pull"]
    schema = chart_schema(module)
    errors = [e.message for e in jsonschema.validators.validator_for(schema)(schema).iter_errors(merged)]
    assert errors == []


def test_both_helm_paths_set_the_same_values(module: Module) -> None:
    """helm.tf's releases and the helm_commands output take one definition, mirror.tf's locals."""
    airflow = module.resources[("helm_release", "airflow")].body
    assert airflow["values"] == '${concat([file("${path.module}/../charts/airflow/values.yaml")], local.mirror_airflow_values)}'
    vdimport = module.resources[("helm_release", "vdimport")].body
    assert '[for key, value in local.mirror_settings["vdimport"] : {name = key, value = value}]' in vdimport["set"]
    documents = str(module.locals["mirror_airflow_values"][0])
    assert documents.startswith('${[for key, value in merge(local.mirror_settings["airflow"], local.mirror_airflow_lists) :')
    assert '[for part in split(".", key) : "{${jsonencode(part)}:"], [jsonencode(value)], [for part in split(".", key) : "}"]' in documents
    flags = str(module.locals["mirror_helm_flags"][0])
    assert '{for chart, settings in local.mirror_settings : chart => join("", concat(' in flags
    assert '[for key, value in settings : " --set-string ${key}=${value}"]' in flags
    assert '[for key, value in local.mirror_airflow_lists : " --set \'${key}={${join(",", value)}}\'"]' in flags
    vdimport_line, airflow_line = str(hcl_value(module, module.outputs["helm_commands"].body["value"])).split("\n")
    assert vdimport_line.startswith("helm upgrade --install vdimport ") and vdimport_line.endswith('${local.mirror_helm_flags["vdimport"]}')
    assert airflow_line.startswith("helm upgrade --install airflow ") and airflow_line.endswith('${local.mirror_helm_flags["airflow"]}')


def test_mirror_commands_copy_every_repository_in_the_order_the_install_needs(module: Module) -> None:
    assert module.outputs["mirror_commands"].body["value"] == '${join("\\n", local.mirror_commands)}'
    commands = str(module.locals["mirror_commands"][0])
    found = re.fullmatch(r'\$\{\[for name in local\.runtime_image_names : "(?P<line>.*)" if var\.mirror_runtime_images\]\}', commands)
    assert found, module.locals["mirror_commands"][0]
    order = str(module.locals["runtime_image_names"][0])
    assert order == '${[for entry in sort([for name, image in local.runtime_images : "${image.order} ${name}"]) : split(" ", entry)[1]]}'
    images = runtime_images(module)
    names = [name for _, name in sorted((image["order"], name) for name, image in images.items())]
    assert names[0] == "postgresql" and names[1] == "airflow" and names[-1] == "xcom-sidecar", "database, migration, ..., first import"
    assert len({image["order"] for image in images.values()}) == len(images) and all(0 < i["order"] < 10 for i in images.values())
    parts = mirror_parts(module)
    lines = []
    for name in names:
        known = {
            "local.runtime_images[name].source": images[name]["source"],
            "local.runtime_images[name].tag": images[name]["tag"],
            "local.ocir_host": HOST,
            "local.ocir_namespace": NAMESPACE,
            # display_name = each.value of for_each = local.mirror_repository_names
            "oci_artifacts_container_repository.mirror[name].display_name": parts[name]["path"].removeprefix(f"{NAMESPACE}/"),
        }
        lines.append(evaluate(found.group("line"), known))
    assert lines == [f"skopeo copy --all docker://{images[n]['source']}:{images[n]['tag']} docker://{parts[n]['image']}" for n in names]
    for name in images:  # every repository, once
        assert sum(f"docker://{HOST}/{NAMESPACE}/{PREFIX}/mirror/{name}:" in line for line in lines) == 1, name


def test_the_airflow_pods_get_the_pull_secret(module: Module) -> None:
    """The same user's Secret in the airflow namespace, under the chart's non-deprecated key
    (imagePullSecrets; registry.secretName is deprecated) and the bitnami subchart's own; the
    pull user's policy reads every repository in the compartment of the copies."""
    schema = chart_schema(module)["properties"]
    assert "Deprecated" in schema["registry"]["properties"]["secretName"]["description"]
    assert schema["imagePullSecrets"]["type"] == "array"
    assert schema["postgresql"]["properties"]["image"]["additionalProperties"] is True, "registry and pullSecrets pass to the subchart"
    secret = module.resources[("kubernetes_secret_v1", "ocir_pull_airflow")].body
    assert secret["count"] == "${local.create_pull_secret && var.mirror_runtime_images ? 1 : 0}"
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert secret["data"] == "${kubernetes_secret_v1.ocir_pull[0].data}", "the vdimport namespace's Secret: same user, token, registry"
    metadata = secret["metadata"][0]
    assert metadata["name"] == "${local.pull_secret_name}"
    assert metadata["namespace"] == "${kubernetes_namespace_v1.airflow[0].metadata[0].name}"
    namespace = module.resources[("kubernetes_namespace_v1", "airflow")].body["metadata"][0]["name"]
    assert namespace == "${local.airflow_namespace}"
    create = str(module.locals["create_pull_secret"][0])
    assert "var.mirror_runtime_images" in create, "private copies need the pull user even with public repositories"
    pull_secrets = '${var.mirror_runtime_images && local.pull_secret_name != "" ? [local.pull_secret_name] : []}'
    assert module.locals["mirror_pull_secrets"][0] == pull_secrets
    lists = str(module.locals["mirror_airflow_lists"][0])
    assert '"imagePullSecrets" = local.mirror_pull_secrets' in lists
    assert '"postgresql.image.pullSecrets" = local.mirror_pull_secrets' in lists
    assert "${kubernetes_secret_v1.ocir_pull_airflow}" in module.resources[("helm_release", "airflow")].body["depends_on"]
    [statement] = module.resources[("oci_identity_policy", "ocir_pull")].body["statements"]
    assert statement.endswith(" to read repos in ${local.compartment}")
    assert module.locals["compartment"][0] == "compartment id ${var.compartment_ocid}"
    [check] = module.resources[("oci_artifacts_container_repository", "mirror")].body["lifecycle"][0]["precondition"]
    assert check["condition"] == '${local.pull_secret_name != ""}' and "image_pull_secret_name" in check["error_message"]


def test_mirroring_is_off_by_default_and_says_why(module: Module) -> None:
    variable = module.variables["mirror_runtime_images"].body
    assert (variable["type"], variable["default"]) == ("bool", False)
    assert "skopeo" in variable["description"] and "Resource Manager" in variable["description"]
    form = yaml.safe_load((REPO / "terraform" / "schema.yaml").read_text())
    assert form["variables"]["mirror_runtime_images"]["default"] is False
    assert "mirror_commands" in form["outputs"]


@pytest.mark.parametrize("doc", ["terraform/README.md", "charts/airflow/README.md"])
def test_the_readmes_say_how_to_copy_and_what_happens_without(doc: str) -> None:
    text = " ".join((REPO / doc).read_text().split())
    assert "terraform output -raw mirror_commands | bash" in text
    assert "mirror_runtime_images" in text and "Docker Hub" in text and "registry.k8s.io" in text
