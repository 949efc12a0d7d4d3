# Service logs in one log group: where to look when an upload does not become an import.
#   uploads    Object Storage write log of the import bucket (who uploaded what, when)
#   function   invocations of the function (its decision per event, errors)
#   devops     build and deployment runs
# (The import itself logs in Airflow and in the step pods: README.md, "Where to look".)

resource "oci_logging_log_group" "this" {
  compartment_id = var.compartment_ocid
  display_name   = "${var.name_prefix}-logs"
  description    = "vdimport: uploads, function invocations, DevOps runs"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

resource "oci_logging_log" "bucket_writes" {
  display_name       = "${var.name_prefix}-uploads"
  log_group_id       = oci_logging_log_group.this.id
  log_type           = "SERVICE"
  is_enabled         = true
  retention_duration = 30
  freeform_tags      = local.freeform_tags
  defined_tags       = var.defined_tags

  configuration {
    compartment_id = var.compartment_ocid
    source {
      source_type = "OCISERVICE"
      service     = "objectstorage"
      resource    = oci_objectstorage_bucket.images.name
      category    = "write"
    }
  }
}

resource "oci_logging_log" "function_invocations" {
  display_name       = "${var.name_prefix}-function"
  log_group_id       = oci_logging_log_group.this.id
  log_type           = "SERVICE"
  is_enabled         = true
  retention_duration = 30
  freeform_tags      = local.freeform_tags
  defined_tags       = var.defined_tags

  configuration {
    compartment_id = var.compartment_ocid
    source {
      source_type = "OCISERVICE"
      service     = "functions"
      resource    = oci_functions_application.this.id
      category    = "invoke"
    }
  }
}

resource "oci_logging_log" "devops" {
  count = local.devops_count

  display_name       = "${var.name_prefix}-devops"
  log_group_id       = oci_logging_log_group.this.id
  log_type           = "SERVICE"
  is_enabled         = true
  retention_duration = 30
  freeform_tags      = local.freeform_tags
  defined_tags       = var.defined_tags

  configuration {
    compartment_id = var.compartment_ocid
    source {
      source_type = "OCISERVICE"
      service     = "devops"
      resource    = oci_devops_project.this[0].id
      category    = "all"
    }
  }
}
