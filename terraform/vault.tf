# Vault: the secret holding the Airflow API login of the function, as
# {"username": ..., "password": ...} (images/function reads VDIMPORT_AIRFLOW_SECRET_ID).
# The password is generated here; with deploy_helm_releases the same pair becomes the Kubernetes
# Secret airflow-api-user from which the Airflow chart creates the user (helm.tf). In the
# two-stage path, README.md shows how to copy it from the Vault into that Secret.

locals {
  create_vault              = var.vault_id == ""
  create_vault_key          = var.vault_key_id == ""
  vault_id                  = local.create_vault ? oci_kms_vault.this[0].id : var.vault_id
  vault_key_id              = local.create_vault_key ? oci_kms_key.secrets[0].id : var.vault_key_id
  vault_management_endpoint = local.create_vault ? oci_kms_vault.this[0].management_endpoint : one(data.oci_kms_vault.existing[*].management_endpoint)
}

resource "oci_kms_vault" "this" {
  count = local.create_vault ? 1 : 0

  compartment_id = var.compartment_ocid
  display_name   = "${var.name_prefix}-vault"
  vault_type     = "DEFAULT" # a virtual vault on shared HSMs; no dedicated partition needed
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

# An existing vault's management endpoint, to create the key in it.
data "oci_kms_vault" "existing" {
  count = !local.create_vault && local.create_vault_key ? 1 : 0

  vault_id = var.vault_id
}

resource "oci_kms_key" "secrets" {
  count = local.create_vault_key ? 1 : 0

  compartment_id      = var.compartment_ocid
  display_name        = "${var.name_prefix}-secrets"
  management_endpoint = local.vault_management_endpoint
  protection_mode     = var.vault_key_protection_mode
  freeform_tags       = local.freeform_tags
  defined_tags        = var.defined_tags

  key_shape {
    algorithm = "AES"
    length    = 32
  }
}

# Letters and digits only: the value travels through JSON, shell commands and URLs unquoted.
resource "random_password" "airflow_api" {
  length  = 32
  special = false
}

resource "oci_vault_secret" "airflow_api" {
  compartment_id = var.compartment_ocid
  vault_id       = local.vault_id
  key_id         = local.vault_key_id
  secret_name    = "${var.name_prefix}-airflow-api"
  description    = "Airflow API login of the vdimport function: {\"username\", \"password\"}"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags

  secret_content {
    content_type = "BASE64"
    content = base64encode(jsonencode({
      username = var.airflow_api_username
      password = random_password.airflow_api.result
    }))
  }

  lifecycle {
    precondition {
      condition     = local.create_vault_key || !local.create_vault
      error_message = "vault_key_id must be a key of vault_id: set vault_id too."
    }
  }
}
