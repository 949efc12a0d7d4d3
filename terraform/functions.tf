# OCI Functions: the application in the functions subnet (NSG functions: out to OCI services
# and the Airflow API load balancer only) and the function vdimport-trigger (images/function),
# configured with the Airflow API endpoint, the Vault secret holding its login and the bucket.
#
# OCI Functions needs the image to exist when the function is created, so the function waits
# for function_image_tag: apply once (repositories, DevOps), push or build the image, apply
# again with the tag (README.md).

resource "oci_functions_application" "this" {
  compartment_id             = var.compartment_ocid
  display_name               = "${var.name_prefix}-app"
  subnet_ids                 = [oci_core_subnet.this["functions"].id]
  network_security_group_ids = [oci_core_network_security_group.functions.id]
  shape                      = "GENERIC_X86" # the DevOps build runner builds amd64 images
  freeform_tags              = local.freeform_tags
  defined_tags               = var.defined_tags
}

resource "oci_functions_function" "trigger" {
  count = local.create_function ? 1 : 0

  application_id     = oci_functions_application.this.id
  display_name       = local.function_name
  image              = local.function_image
  memory_in_mbs      = var.function_memory_mb
  timeout_in_seconds = var.function_timeout_seconds
  freeform_tags      = local.freeform_tags
  defined_tags       = var.defined_tags

  # images/function/vdimport_function/config.py reads these.
  config = {
    VDIMPORT_AIRFLOW_URL       = local.airflow_api_url
    VDIMPORT_AIRFLOW_SECRET_ID = oci_vault_secret.airflow_api.id
    VDIMPORT_BUCKETS           = oci_objectstorage_bucket.images.name
    VDIMPORT_DAG_ID            = local.dag_id
    VDIMPORT_OCI_AUTH          = "resource_principal"
  }

  lifecycle {
    # Terraform sets the first image; afterwards the DevOps deployment pipeline (or
    # `oci fn function update`) moves the function to new builds and must not be rolled back.
    ignore_changes = [image, image_digest]

    precondition {
      condition     = can(regex("^https?://[^:/?#\\s]+", local.airflow_api_url))
      error_message = "The function needs the Airflow API URL: set airflow_api_url (kubectl -n airflow get service airflow-api-server), or deploy_helm_releases = true."
    }
  }

  # The function reads the bucket and the secret with its resource principal.
  depends_on = [oci_identity_policy.function, oci_artifacts_container_repository.function]
}
