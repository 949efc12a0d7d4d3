"""terraform/'s structure: what `terraform validate` and a reviewer would catch, offline.

Each check is a ``tfkit`` function of a module that returns its problems. The tests run them on
terraform/; the self-tests run them on a miniature stack (fixtures/stack, which passes them all)
and on mutated copies of it and of terraform/, to show that each check fails when it should.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import tfkit
from tfkit import FIXTURE, REPO, TERRAFORM, Module, load_module

Check = Callable[[Module], list[str]]


def _fail_on(problems: list[str]) -> None:
    assert not problems, "\n".join(problems)


def test_blocks_are_terraform_blocks_declared_once(module: Module) -> None:
    """Top-level blocks are Terraform's; no variable, local, resource or output twice."""
    _fail_on(tfkit.syntax_problems(module))


def test_variables_have_type_and_description(module: Module) -> None:
    """Resource Manager and `terraform plan` show the description; the type rejects bad input early."""
    _fail_on(tfkit.variable_problems(module))


def test_ocid_id_and_cidr_variables_are_validated(module: Module) -> None:
    """A mistyped OCID or CIDR fails at plan time with a message, not half-way through an apply."""
    _fail_on(tfkit.validation_problems(module))


def test_taggable_resources_get_the_common_tags(module: Module) -> None:
    """Cost reports and clean-up find everything the stack made by its tags."""
    _fail_on(tfkit.tag_problems(module))


def test_references_resolve(module: Module) -> None:
    """var., local., module., data. and resource references all name a declaration."""
    _fail_on(tfkit.reference_problems(module))


def test_events_rule_matches_only_createobject_on_the_import_bucket(module: Module) -> None:
    """Only a new object in the import bucket may start an import, and only through the function."""
    _fail_on(tfkit.events_problems(module))


def test_policies_are_least_privilege(module: Module) -> None:
    """No manage all-resources, no tenancy-wide grant outside the allowlist, any-user constrained,
    and the workload statements name the step runner's namespace, ServiceAccount and cluster."""
    _fail_on(tfkit.policy_problems(module))


def test_cluster_supports_workload_identity(module: Module) -> None:
    """The step pods authenticate with OKE workload identity, which needs an enhanced cluster."""
    _fail_on(tfkit.cluster_problems(module))


def test_resource_manager_schema_lists_the_variables(module: Module) -> None:
    """schema.yaml drives Resource Manager's form: a variable missing there cannot be set."""
    _fail_on(tfkit.schema_problems(module, TERRAFORM / "schema.yaml"))


def test_tfvars_example_sets_every_required_variable(module: Module) -> None:
    """Copying terraform.tfvars.example and filling it in is enough for a plan."""
    _fail_on(tfkit.tfvars_problems(module, TERRAFORM / "terraform.tfvars.example"))


def test_outputs_give_what_a_user_needs(module: Module) -> None:
    """After apply: where to upload, where Airflow is, where images go, the function, the cluster."""
    _fail_on(tfkit.output_problems(module))


def test_providers_are_pinned(module: Module) -> None:
    """`terraform init` needs each provider's source (oracle/oci is not hashicorp/oci) and a version."""
    _fail_on(tfkit.provider_problems(module))


# --- self-tests: the fixture passes, its mutations fail ---------------------------------------


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    for path in dest.glob("*.tf"):
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("${path.module}/../../../../", f"{REPO}/"), encoding="utf-8")
    return dest


def _all_problems(root: Path) -> dict[str, list[str]]:
    module = load_module(root)
    found = {name: check(module) for name, check in tfkit.CHECKS.items()}
    found["policies"] = tfkit.policy_problems(module)
    found["schema"] = tfkit.schema_problems(module, root / "schema.yaml")
    found["tfvars"] = tfkit.tfvars_problems(module, root / "terraform.tfvars.example")
    return found


def test_fixture_passes_every_check(tmp_path: Path) -> None:
    """The baseline of the mutations below: no problem at all in the unmutated miniature."""
    problems = _all_problems(_copy(FIXTURE, tmp_path / "stack"))
    assert problems == {name: [] for name in problems}


# (check, old text (in exactly one file), new text, a problem the check must then report)
MUTATIONS = [
    ("syntax", 'variable "name_prefix" {', 'variable "vcn_cidr" {', "variable vcn_cidr is declared 2 times"),
    ("syntax", "locals {", "oops = 1\nlocals {", "'oops' is not a Terraform block type"),
    ("variables", '  description = "CIDR block of the VCN."\n', "", "variable vcn_cidr has no description"),
    (
        "variables",
        '  type        = string\n  description = "Prefix',
        '  description = "Prefix',
        "variable name_prefix has no type",
    ),
    (
        "validations",
        "    condition     = can(cidrnetmask(var.vcn_cidr))",
        "    condition     = true",
        "does not read var.vcn_cidr",
    ),
    (
        "validations",
        'variable "step_namespace" {',
        'variable "node_image_id" {\n  type        = string\n  description = "x"\n}\nvariable "step_namespace" {',
        "variable node_image_id (an OCID, id or CIDR) has no validation block",
    ),
    (
        "tags",
        '  display_name   = "${var.name_prefix}-vcn"\n  freeform_tags  = local.common_tags\n',
        "",
        "oci_core_vcn.main takes freeform_tags",
    ),
    (
        "tags",
        "  memory_in_mbs  = 256\n  freeform_tags  = local.common_tags",
        '  memory_in_mbs  = 256\n  freeform_tags  = { project = "x" }',
        "not local.common_tags",
    ),
    (
        "tags",
        'resource "helm_release" "vdimport"',
        'resource "oci_core_vnc" "typo"',
        "oci_core_vnc is not an OCI provider resource type",
    ),
    ("tags", 'resource "helm_release" "vdimport"', 'resource "aws_s3_bucket" "x"', "aws_s3_bucket is not classified"),
    ("references", "cidr_blocks    = [var.vcn_cidr]", "cidr_blocks    = [var.vnc_cidr]", "var.vnc_cidr does not resolve"),
    (
        "references",
        "  vcn_id         = oci_core_vcn.main.id\n  cidr_block",
        "  vcn_id         = oci_core_vcn.primary.id\n  cidr_block",
        "oci_core_vcn.primary.id does not resolve",
    ),
    (
        "references",
        "namespace             = data.oci_objectstorage_namespace.this.namespace",
        "namespace = data.oci_objectstorage_namespace.that.namespace",
        "data.oci_objectstorage_namespace.that.namespace does not resolve",
    ),
    (
        "references",
        "${lower(data.oci_objectstorage_namespace.this.namespace)}",
        "${lower(local.registry)}",
        "local.registry does not resolve",
    ),
    (
        "references",
        "request.principal.cluster_id = '${oci_containerengine_cluster.oke.id}'}\n",
        "request.principal.cluster_id = '${oci_containerengine_cluster.eks.id}'}\n",
        "oci_containerengine_cluster.eks.id does not resolve",
    ),
    (
        "references",
        "depends_on = [oci_identity_policy.steps]",
        "depends_on = [oci_identity_policy.step]",
        "oci_identity_policy.step does not resolve",
    ),
    ("references", 'oci_core_subnet.all["workers"].id', "oci_core_subnet.all[var.subnet_key].id", "var.subnet_key does not resolve"),
    ("references", "min = ingress_security_rules.value", "min = ingress_rules.value", "ingress_rules.value does not resolve"),
    ("references", '"${name}=${subnet.id}"', '"${name}=${subnets.id}"', "subnets.id does not resolve"),
    ("references", "${subnet.cidr_block} (${var.vcn_cidr})", "${subnet.cidr_block} (${var.vpc_cidr})", "var.vpc_cidr does not resolve"),
    (
        "references",
        "value       = oci_functions_function.on_upload.id",
        "value       = module.fn.id",
        "module.fn.id does not resolve",
    ),
    (
        "events",
        'create_object = "com.oraclecloud.objectstorage.createobject"',
        'create_object = "com.oraclecloud.objectstorage.deleteobject"',
        "not exactly",
    ),
    (
        "events",
        "eventType = [local.create_object]",
        'eventType = [local.create_object, "com.oraclecloud.objectstorage.updateobject"]',
        "not exactly",
    ),
    (
        "events",
        "bucketName = [oci_objectstorage_bucket.imports.name]",
        'bucketName = ["somewhere-else"]',
        "is not the import bucket",
    ),
    (
        "events",
        "    data      = { additionalDetails = { bucketName = [oci_objectstorage_bucket.imports.name] } }\n",
        "",
        "it matches every bucket",
    ),
    ("events", 'action_type = "FAAS"', 'action_type = "ONS"', "is not FAAS"),
    ("events", "object_events_enabled = true", "object_events_enabled = false", "object_events_enabled = true"),
    (
        "events",
        'resource "oci_events_rule" "upload" {',
        'resource "oci_objectstorage_bucket" "work" {\n  name                  = "work"\n  object_events_enabled = true\n}\n\n'
        'resource "oci_events_rule" "upload" {',
        "oci_objectstorage_bucket.work is not the import bucket and does not set object_events_enabled = false",
    ),
    (
        "events",
        '  display_name   = "${var.name_prefix}-upload"\n  is_enabled     = true',
        '  display_name   = "${var.name_prefix}-upload"\n  is_enabled     = false',
        "is not enabled",
    ),
    (
        "policies",
        "to manage instance-family in compartment",
        "to manage all-resources in compartment",
        "grants manage all-resources",
    ),
    ("policies", 'fn-function in compartment id ${var.compartment_ocid}"]', 'fn-function in tenancy"]', "tenancy-wide"),
    (
        "policies",
        "request.principal.namespace = '${var.step_namespace}', ",
        "request.principal.namespace = 'default', ",
        "namespace is 'default'",
    ),
    (
        "policies",
        "request.principal.service_account = '${local.step_service_account}'",
        "request.principal.service_account = 'airflow-worker'",
        "service_account is 'airflow-worker'",
    ),
    (
        "policies",
        "request.principal.cluster_id = '${oci_containerengine_cluster.oke.id}'}\",",
        "request.principal.cluster_id = 'ocid1.cluster.oc1..x'}\",",
        "is not this module's oci_containerengine_cluster id",
    ),
    (
        "policies",
        '["Allow service cloudEvents to use fn-invocation',
        '["Allow any-user to use fn-invocation',
        "any-user without a where clause",
    ),
    (
        "policies",
        "  statements = concat(",
        "  statements = var.extra_statements != null ? var.extra_statements : concat(",
        "is not a literal",
    ),
    (
        "policies",
        "  statements = concat(",
        '  statements = var.name_prefix == "" ? ["Allow service faas to manage all-resources in compartment id x"] : concat(',
        "grants manage all-resources",
    ),
    ("policies", ", resource.compartment.id = '${var.compartment_ocid}'}", "}", "names no resource.compartment.id"),
    ("policies", 'matching_rule  = "ALL {', 'matching_rule  = "ANY {', "is ANY {...}"),
    ("cluster", 'type               = "ENHANCED_CLUSTER"', 'type               = "BASIC_CLUSTER"', "needs ENHANCED_CLUSTER"),
    ("outputs", 'output "function_ocid"', 'output "handler_ocid"', "no output for the function's OCID"),
    ("outputs", '  description = "OCID of the OKE cluster."\n', "", "output cluster_ocid has no description"),
    (
        "providers",
        '    helm = {\n      source  = "hashicorp/helm"\n      version = "~> 2.17"\n    }\n',
        "",
        "provider helm is used",
    ),
    ("schema", "  step_namespace: {type: string}\n", "", "variable step_namespace is missing from variables"),
    ("schema", "    variables: [tenancy_ocid]", "    variables: [tenancy_ocid, region]", "variableGroups names region"),
    (
        "tfvars",
        'compartment_ocid = "ocid1.compartment.oc1..aaaaexample"\n',
        "",
        "does not set compartment_ocid",
    ),
    ("tfvars", "tenancy_ocid     = ", "tenancy_id = ", "sets tenancy_id, which is not a variable"),
]


@pytest.mark.parametrize(("check", "old", "new", "expected"), MUTATIONS, ids=[f"{m[0]}-{i}" for i, m in enumerate(MUTATIONS)])
def test_mutation_is_caught(tmp_path: Path, check: str, old: str, new: str, expected: str) -> None:
    """Each check reports the defect planted in a copy of the fixture (and names it)."""
    root = _copy(FIXTURE, tmp_path / "stack")
    (path,) = [p for p in sorted(root.iterdir()) if old in p.read_text(encoding="utf-8")]
    path.write_text(path.read_text(encoding="utf-8").replace(old, new, 1), encoding="utf-8")
    problems = _all_problems(root)[check]
    assert any(expected in problem for problem in problems), f"{check} did not report {expected!r}: {problems}"


PLANTED = """
variable "zz_planted_ocid" {
  type = string
}

resource "oci_objectstorage_bucket" "zz_planted" {
  compartment_id = var.zz_not_declared
  name           = "planted"
  namespace      = "planted"
}

resource "oci_identity_policy" "zz_planted" {
  compartment_id = var.zz_planted_ocid
  name           = "planted"
  description    = "planted"
  statements     = ["Allow group Administrators to manage all-resources in tenancy"]
}
"""


def test_defects_planted_in_a_copy_of_terraform_are_caught(tmp_path: Path) -> None:
    """The checks see what is in terraform/ today: a file of defects added to a copy is reported."""
    root = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, root)
    (root / "zz_planted.tf").write_text(PLANTED, encoding="utf-8")
    module = load_module(root)
    expected: list[tuple[Check, str]] = [
        (tfkit.variable_problems, "variable zz_planted_ocid has no description"),
        (tfkit.validation_problems, "variable zz_planted_ocid (an OCID, id or CIDR) has no validation block"),
        (tfkit.reference_problems, "var.zz_not_declared does not resolve"),
        (tfkit.tag_problems, "oci_objectstorage_bucket.zz_planted takes freeform_tags but does not set them"),
        (tfkit.policy_problems, "grants manage all-resources"),
        (tfkit.policy_problems, "tenancy-wide"),
    ]
    for check, message in expected:
        problems = check(module)
        assert any(message in p and re.search(r"zz_planted\.tf:\d+|zz_planted", p) for p in problems), f"{check.__name__}: {problems}"
