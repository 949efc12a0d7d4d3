"""The step pods can pull the step runner image (issue 16, item 3), as the stack wires it.

OCIR repositories are private by default. OKE pulls from a private repository with a
docker-registry Secret holding an OCI user's auth token (OKE docs, "Pulling Images from Registry
during Deployment"), and Kubernetes reads such a Secret's ``.dockerconfigjson`` key
(``kubernetes.io/dockerconfigjson``). Without it every step pod ended in ``ErrImagePull``.
These checks read terraform/ as python-hcl2 parses it: the Secret is made where the pods run,
under the name the chart is given; the user can only read repositories; and the pods are
pinned to the image's digest once the tag is in the repository.
"""

from __future__ import annotations

import re

from tfkit import Module


def _local(module: Module, name: str) -> str:
    return str(module.locals[name][0])


def test_private_repositories_get_a_pull_secret_made_by_terraform(module: Module) -> None:
    create = _local(module, "create_pull_secret")
    assert "!var.container_repositories_public" in create and 'var.image_pull_secret_name == ""' in create
    assert "var.deploy_helm_releases" in create
    assert module.variables["container_repositories_public"].body["default"] is False, "repositories stay private by default"
    secret = module.resources[("kubernetes_secret_v1", "ocir_pull")].body
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert list(secret["data"]) == [".dockerconfigjson"]
    config = secret["data"][".dockerconfigjson"]
    assert re.search(r"auths = \{\(local\.ocir_host\) = \{username = \"\$\{local\.ocir_namespace\}/\$\{local\.pull_user_name\}\"", config)
    assert "password = oci_identity_auth_token.ocir_pull[0].token" in config and "auth = base64encode(" in config
    metadata = secret["metadata"][0]
    assert metadata["namespace"] == "${local.step_runner_namespace}", "the Secret must be where the step pods run"
    assert metadata["name"] == "${local.pull_secret_name}"


def test_the_chart_gets_the_secrets_name(module: Module) -> None:
    release = module.resources[("helm_release", "vdimport")].body
    assert 'name = "stepRunner.image.pullSecrets", value = [local.pull_secret_name]' in release["set_list"]
    assert module.resources[("helm_release", "vdimport")].body["namespace"] == "${local.step_runner_namespace}"


def test_the_pull_user_can_only_read_repositories_with_an_auth_token(module: Module) -> None:
    capabilities = module.resources[("oci_identity_user_capabilities_management", "ocir_pull")].body
    assert {k: v for k, v in capabilities.items() if k.startswith("can_use_")} == {
        "can_use_api_keys": False,
        "can_use_auth_tokens": True,
        "can_use_console_password": False,
        "can_use_customer_secret_keys": False,
        "can_use_smtp_credentials": False,
    }
    [statement] = module.resources[("oci_identity_policy", "ocir_pull")].body["statements"]
    assert statement == "Allow group ${oci_identity_group.ocir_pull[0].name} to read repos in ${local.compartment}"
    membership = module.resources[("oci_identity_user_group_membership", "ocir_pull")].body
    assert (membership["user_id"], membership["group_id"]) == (
        "${oci_identity_user.ocir_pull[0].id}",
        "${oci_identity_group.ocir_pull[0].id}",
    )


def test_pods_are_pinned_to_the_digest_or_pull_the_tag_always(module: Module) -> None:
    """IfNotPresent with a reused tag keeps a rebuilt image off the nodes: a digest, else Always."""
    lookup = module.data[("oci_artifacts_container_images", "worker")].body
    assert (lookup["repository_name"], lookup["version"]) == ("${local.worker_repository_name}", "${local.worker_image_tag}")
    digest = _local(module, "worker_image_digest")
    assert "container_image_collection[0].items" in digest and ".digest" in digest
    sets = module.resources[("helm_release", "vdimport")].body["set"]
    assert 'local.worker_image_digest == "" ? [{name = "stepRunner.image.pullPolicy", value = "Always"}]' in sets
    assert '{name = "stepRunner.image.digest", value = local.worker_image_digest}' in sets
