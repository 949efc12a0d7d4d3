# The import bucket: users upload disk images here; each upload's createobject event starts an
# import (events.tf). Private, object events on, versioning off, optional lifecycle rule.
# The work bucket: Run Command output too large for its 1 KB of text (the download and fsck
# results of images with many snapshots or partitions), one object per command that the step
# runner reads and deletes at once. Private, no object events, gone after a day regardless.

resource "oci_objectstorage_bucket" "images" {
  #checkov:skip=CKV_OCI_8:Versioning stays off by design: an upload over an existing name is a new object (new etag) and a new import, and previous versions would only keep multi-GB disk images nobody reads; the step runner pins the exact version it imports with If-Match on the etag.
  #checkov:skip=CKV_OCI_9:A customer-managed key is optional (bucket_kms_key_id); without it Object Storage still encrypts every object with Oracle-managed AES-256 keys, and the bucket only holds transient upload copies.
  compartment_id        = var.compartment_ocid
  namespace             = data.oci_objectstorage_namespace.this.namespace
  name                  = local.bucket_name
  access_type           = "NoPublicAccess"
  object_events_enabled = true
  versioning            = "Disabled"
  storage_tier          = "Standard"
  auto_tiering          = "Disabled"
  kms_key_id            = var.bucket_kms_key_id == "" ? null : var.bucket_kms_key_id
  freeform_tags         = local.freeform_tags
  defined_tags          = var.defined_tags
}

# Optional: delete uploads N days after they were made (imported or not; the volume is the
# result, the upload only its source). Object Storage acts on behalf of the bucket, which needs
# the service policy in iam.tf first.
resource "oci_objectstorage_object_lifecycle_policy" "images" {
  count = var.delete_objects_after_days > 0 ? 1 : 0

  namespace = oci_objectstorage_bucket.images.namespace
  bucket    = oci_objectstorage_bucket.images.name

  rules {
    name        = "delete-uploads-after-${var.delete_objects_after_days}-days"
    action      = "DELETE"
    target      = "objects"
    is_enabled  = true
    time_amount = var.delete_objects_after_days
    time_unit   = "DAYS"
  }

  depends_on = [oci_identity_policy.object_storage_lifecycle]
}

resource "oci_objectstorage_bucket" "work" {
  #checkov:skip=CKV_OCI_7:Object events stay off by design: nothing reacts to the work bucket, and an event on it would only add noise next to the import bucket's createobject rule.
  #checkov:skip=CKV_OCI_8:Versioning stays off by design: each object is one command's output, read once and deleted by the step runner; old versions would only keep outputs nobody reads.
  #checkov:skip=CKV_OCI_9:A customer-managed key is optional (bucket_kms_key_id, as for the import bucket); without it Object Storage still encrypts every object with Oracle-managed AES-256 keys, and the bucket only holds command output for minutes.
  compartment_id        = var.compartment_ocid
  namespace             = data.oci_objectstorage_namespace.this.namespace
  name                  = local.work_bucket_name
  access_type           = "NoPublicAccess"
  object_events_enabled = false
  versioning            = "Disabled"
  storage_tier          = "Standard"
  auto_tiering          = "Disabled"
  kms_key_id            = var.bucket_kms_key_id == "" ? null : var.bucket_kms_key_id
  freeform_tags         = local.freeform_tags
  defined_tags          = var.defined_tags

  lifecycle {
    precondition {
      condition     = local.bucket_name != local.work_bucket_name
      error_message = "bucket_name must not be <name_prefix>-work, the work bucket: command output written there would start imports."
    }
  }
}

# What a killed step or a failed delete leaves is gone after a day (the reaper is faster).
resource "oci_objectstorage_object_lifecycle_policy" "work" {
  namespace = oci_objectstorage_bucket.work.namespace
  bucket    = oci_objectstorage_bucket.work.name

  rules {
    name        = "delete-command-output-after-1-day"
    action      = "DELETE"
    target      = "objects"
    is_enabled  = true
    time_amount = 1
    time_unit   = "DAYS"
  }

  depends_on = [oci_identity_policy.object_storage_lifecycle]
}
