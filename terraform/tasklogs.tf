# Airflow's task logs in Object Storage (deploy_helm_releases and remote_task_logs): a task's
# log outlives its pod, so the Airflow UI still shows it after the pod is gone.
#
# Airflow writes remote logs through the Amazon provider's S3 task handler (in the official
# image); Object Storage answers the S3 API at https://<namespace>.compat.objectstorage.<region>.
# oraclecloud.com with a Customer Secret Key (an access key id and secret of an OCI user). The
# apply makes a user whose only right is the objects of the logs bucket (customer secret keys
# only: no console password, no API keys, no auth tokens), its key, and the Secret
# `airflow-remote-logs` in the airflow namespace: the connection and the [logging] settings as
# environment variables. charts/airflow/values.yaml loads that Secret optionally
# (extraEnvFrom): without it (a by-hand install that skipped it) logs stay in the pods.

locals {
  create_task_logs      = var.deploy_helm_releases && var.remote_task_logs
  task_logs_bucket_name = "${var.name_prefix}-airflow-logs"
  task_logs_user_name   = "${var.name_prefix}-airflow-logs"
  task_logs_conn_id     = "oci_object_storage_logs"
  # Object Storage's S3 Compatibility API endpoint of this region and namespace.
  s3_compat_endpoint = "https://${local.ocir_namespace}.compat.objectstorage.${var.region}.oraclecloud.com"
}

resource "oci_objectstorage_bucket" "task_logs" {
  #checkov:skip=CKV_OCI_7:Object events stay off by design: nothing reacts to task logs.
  #checkov:skip=CKV_OCI_8:Versioning stays off by design: Airflow appends to a log by rewriting it; versions would only multiply the same text.
  #checkov:skip=CKV_OCI_9:A customer-managed key is optional (bucket_kms_key_id, as for the other buckets); without it Object Storage still encrypts every object with Oracle-managed AES-256 keys.
  count = local.create_task_logs ? 1 : 0

  compartment_id        = var.compartment_ocid
  namespace             = data.oci_objectstorage_namespace.this.namespace
  name                  = local.task_logs_bucket_name
  access_type           = "NoPublicAccess"
  object_events_enabled = false
  versioning            = "Disabled"
  storage_tier          = "Standard"
  auto_tiering          = "Disabled"
  kms_key_id            = var.bucket_kms_key_id == "" ? null : var.bucket_kms_key_id
  freeform_tags         = local.freeform_tags
  defined_tags          = var.defined_tags
}

resource "oci_objectstorage_object_lifecycle_policy" "task_logs" {
  count = local.create_task_logs ? 1 : 0

  namespace = oci_objectstorage_bucket.task_logs[0].namespace
  bucket    = oci_objectstorage_bucket.task_logs[0].name

  rules {
    name        = "delete-task-logs-after-${var.task_log_retention_days}-days"
    action      = "DELETE"
    target      = "objects"
    is_enabled  = true
    time_amount = var.task_log_retention_days
    time_unit   = "DAYS"
  }

  depends_on = [oci_identity_policy.object_storage_lifecycle]
}

resource "oci_identity_user" "task_logs" {
  count = local.create_task_logs ? 1 : 0

  compartment_id = var.tenancy_ocid # users are tenancy objects
  name           = local.task_logs_user_name
  description    = "vdimport ${var.name_prefix}: Airflow writes and reads its task logs in ${local.task_logs_bucket_name} (customer secret key only)"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

resource "oci_identity_user_capabilities_management" "task_logs" {
  count = local.create_task_logs ? 1 : 0

  user_id                      = oci_identity_user.task_logs[0].id
  can_use_api_keys             = false
  can_use_auth_tokens          = false
  can_use_console_password     = false
  can_use_customer_secret_keys = true
  can_use_smtp_credentials     = false
}

resource "oci_identity_group" "task_logs" {
  count = local.create_task_logs ? 1 : 0

  compartment_id = var.tenancy_ocid # groups are tenancy objects
  name           = local.task_logs_user_name
  description    = "vdimport ${var.name_prefix}: may use the objects of the Airflow task logs bucket"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

resource "oci_identity_user_group_membership" "task_logs" {
  count = local.create_task_logs ? 1 : 0

  group_id = oci_identity_group.task_logs[0].id
  user_id  = oci_identity_user.task_logs[0].id
}

resource "oci_identity_policy" "task_logs" {
  count = local.create_task_logs ? 1 : 0

  compartment_id = var.compartment_ocid
  name           = "${var.name_prefix}-airflow-logs"
  description    = "vdimport: Airflow's task logs, that bucket only"
  statements = [
    "Allow group ${oci_identity_group.task_logs[0].name} to read buckets in ${local.compartment} where target.bucket.name = '${local.task_logs_bucket_name}'",
    "Allow group ${oci_identity_group.task_logs[0].name} to manage objects in ${local.compartment} where target.bucket.name = '${local.task_logs_bucket_name}'",
  ]
  freeform_tags = local.freeform_tags
  defined_tags  = var.defined_tags
}

resource "oci_identity_customer_secret_key" "task_logs" {
  count = local.create_task_logs ? 1 : 0

  user_id      = oci_identity_user.task_logs[0].id
  display_name = "vdimport ${var.name_prefix}: Airflow task logs (Secret airflow-remote-logs)"

  depends_on = [oci_identity_user_capabilities_management.task_logs]
}

resource "kubernetes_secret_v1" "airflow_remote_logs" {
  count = local.create_task_logs ? 1 : 0

  metadata {
    name      = "airflow-remote-logs" # charts/airflow/values.yaml, extraEnvFrom
    namespace = kubernetes_namespace_v1.airflow[0].metadata[0].name
    labels = {
      "app.kubernetes.io/part-of"    = "vdimport"
      "app.kubernetes.io/managed-by" = "terraform"
    }
  }

  type = "Opaque"
  data = {
    AIRFLOW__LOGGING__REMOTE_LOGGING         = "True"
    AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER = "s3://${local.task_logs_bucket_name}/task-logs"
    AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID     = local.task_logs_conn_id
    # Object Storage encrypts every object itself and takes no S3 SSE header on this API.
    AIRFLOW__LOGGING__ENCRYPT_S3_LOGS = "False"
    # An Airflow connection in JSON (AIRFLOW_CONN_<ID>): the Amazon provider's "aws" type
    # pointed at Object Storage's S3 endpoint, path-style addressing (bucket in the path).
    AIRFLOW_CONN_OCI_OBJECT_STORAGE_LOGS = jsonencode({
      conn_type = "aws"
      login     = oci_identity_customer_secret_key.task_logs[0].id
      password  = oci_identity_customer_secret_key.task_logs[0].key
      extra = {
        endpoint_url  = local.s3_compat_endpoint
        region_name   = var.region
        config_kwargs = { s3 = { addressing_style = "path" } }
      }
    })
  }

  depends_on = [oci_identity_policy.task_logs, oci_identity_user_group_membership.task_logs]
}
