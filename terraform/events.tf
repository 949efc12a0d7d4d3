# Events: every object created in the import bucket (also an upload over an existing name,
# which is a new object with a new etag) invokes the function. Only createobject: the seed's
# rule also matched updateobject, which fires on metadata changes and would re-import
# unchanged bytes. The function checks the event type and bucket again (VDIMPORT_BUCKETS).

locals {
  # The rule's condition as an object; jsonencode'd below. Fields not named here are ignored
  # by Events, and each listed field must match one of its values.
  import_event_condition = {
    eventType = ["com.oraclecloud.objectstorage.createobject"]
    data = {
      additionalDetails = {
        bucketName = [oci_objectstorage_bucket.images.name]
      }
    }
  }
}

# Created together with the function (function_image_tag set), which it invokes.
resource "oci_events_rule" "object_created" {
  count = local.create_function ? 1 : 0

  compartment_id = var.compartment_ocid
  display_name   = "${var.name_prefix}-object-created"
  description    = "Uploads to ${oci_objectstorage_bucket.images.name} start a vdimport import"
  is_enabled     = true
  condition      = jsonencode(local.import_event_condition)
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags

  actions {
    actions {
      action_type = "FAAS"
      is_enabled  = true
      function_id = oci_functions_function.trigger[0].id
      description = "Trigger the Airflow DAG ${local.dag_id}"
    }
  }

  # Events invokes the function as the cloudEvents service principal (iam.tf).
  depends_on = [oci_identity_policy.function]
}
