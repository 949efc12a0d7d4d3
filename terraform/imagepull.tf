# How the step pods get the step runner image (deploy_helm_releases): from a private OCIR
# repository with an image pull secret this apply makes, addressed by digest.
#
# Pull secret. OKE pulls from a private repository with a docker-registry Secret holding an OCI
# user's auth token ("Pulling Images from Registry during Deployment", OKE docs). Unless the
# repositories are public (container_repositories_public) or the operator names a Secret of
# their own (image_pull_secret_name), Terraform makes a user whose only right is reading this
# compartment's repositories (no console password, no API keys), its auth token, and the
# Secret in the step runner namespace. The mirror of the runtime images (mirror.tf) is private
# whatever container_repositories_public says, so mirror_runtime_images makes them too, and the
# same Secret in the Airflow namespace. The token lives in Terraform's state, as the other
# generated secrets do (helm.tf): keep the state encrypted (Resource Manager does).
#
# Digest. A rebuilt image reuses its tag and the pods' pull policy is IfNotPresent, so a node
# keeps running the old image. The apply looks the tag up in the repository and pins the pods
# to its digest; a tag not pushed yet (a first apply before the first build) falls back to the
# tag with pull policy Always, and the next apply pins the digest.

locals {
  create_pull_secret = var.deploy_helm_releases && var.image_pull_secret_name == "" && (!var.container_repositories_public || var.mirror_runtime_images)
  pull_secret_name   = local.create_pull_secret ? "${var.name_prefix}-ocir-pull" : var.image_pull_secret_name
  pull_user_name     = "${var.name_prefix}-ocir-pull"

  worker_image_tag = var.worker_image_tag != "" ? var.worker_image_tag : yamldecode(file("${path.module}/../charts/vdimport/Chart.yaml")).appVersion
  worker_image_digest = var.deploy_helm_releases ? try(
    one(data.oci_artifacts_container_images.worker[0].container_image_collection[0].items).digest, ""
  ) : ""
}

data "oci_artifacts_container_images" "worker" {
  count = local.helm_count

  compartment_id  = var.compartment_ocid
  repository_name = local.worker_repository_name
  version         = local.worker_image_tag

  depends_on = [oci_artifacts_container_repository.worker]
}

resource "oci_identity_user" "ocir_pull" {
  count = local.create_pull_secret ? 1 : 0

  compartment_id = var.tenancy_ocid # users are tenancy objects
  name           = local.pull_user_name
  description    = "vdimport ${var.name_prefix}: pulls the step runner image from OCIR (auth token only)"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

resource "oci_identity_user_capabilities_management" "ocir_pull" {
  count = local.create_pull_secret ? 1 : 0

  user_id                      = oci_identity_user.ocir_pull[0].id
  can_use_api_keys             = false
  can_use_auth_tokens          = true
  can_use_console_password     = false
  can_use_customer_secret_keys = false
  can_use_smtp_credentials     = false
}

resource "oci_identity_group" "ocir_pull" {
  count = local.create_pull_secret ? 1 : 0

  compartment_id = var.tenancy_ocid # groups are tenancy objects
  name           = local.pull_user_name
  description    = "vdimport ${var.name_prefix}: may read (pull) the stack's OCIR repositories"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

resource "oci_identity_user_group_membership" "ocir_pull" {
  count = local.create_pull_secret ? 1 : 0

  group_id = oci_identity_group.ocir_pull[0].id
  user_id  = oci_identity_user.ocir_pull[0].id
}

resource "oci_identity_policy" "ocir_pull" {
  count = local.create_pull_secret ? 1 : 0

  compartment_id = var.compartment_ocid
  name           = "${var.name_prefix}-ocir-pull"
  description    = "vdimport: the image pull user reads the stack's repositories, nothing else"
  statements     = ["Allow group ${oci_identity_group.ocir_pull[0].name} to read repos in ${local.compartment}"]
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

resource "oci_identity_auth_token" "ocir_pull" {
  count = local.create_pull_secret ? 1 : 0

  user_id     = oci_identity_user.ocir_pull[0].id
  description = "vdimport ${var.name_prefix}: image pull secret ${local.pull_secret_name}"

  depends_on = [oci_identity_user_capabilities_management.ocir_pull]
}

resource "kubernetes_secret_v1" "ocir_pull" {
  count = local.create_pull_secret ? 1 : 0

  metadata {
    name      = local.pull_secret_name
    namespace = local.step_runner_namespace
    labels = {
      "app.kubernetes.io/part-of"    = "vdimport"
      "app.kubernetes.io/managed-by" = "terraform"
    }
  }

  type = "kubernetes.io/dockerconfigjson"
  data = {
    # OCIR's login: <tenancy namespace>/<user name> (a user of the Default identity domain).
    ".dockerconfigjson" = jsonencode({
      auths = {
        (local.ocir_host) = {
          username = "${local.ocir_namespace}/${local.pull_user_name}"
          password = oci_identity_auth_token.ocir_pull[0].token
          auth     = base64encode("${local.ocir_namespace}/${local.pull_user_name}:${oci_identity_auth_token.ocir_pull[0].token}")
        }
      }
    })
  }

  # The namespace is the vdimport release's (create_namespace); the policy must hold before a pull.
  depends_on = [helm_release.vdimport, oci_identity_policy.ocir_pull, oci_identity_user_group_membership.ocir_pull]
}
