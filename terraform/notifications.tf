# Import outcomes (import_notifications): the step runner publishes one message per import to
# this topic (images/worker/vdimport_worker/notify.py), "<object> imported" with the volume's
# OCID or "<object> failed at <step>" with the cause, and a link to the run when airflow_ui_url
# is set. Subscribe whatever should hear of it: import_notification_email below, or Slack,
# PagerDuty, HTTPS or a function with `oci ons subscription create --topic-id <topic>`.
#
# The step runner gets the topic's OCID as the vdimport chart's notifications.topicId
# (VDIMPORT_NOTIFICATION_TOPIC_ID, helm.tf) and may only publish to topics of compartment_ocid
# (iam.tf). Without the topic the step runner notifies nobody.

resource "oci_ons_notification_topic" "imports" {
  count = var.import_notifications ? 1 : 0

  compartment_id = var.compartment_ocid
  name           = "${var.name_prefix}-imports"
  description    = "vdimport: the outcome of each disk image import (volume OCID, or the failed step and its cause)"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

# OCI mails a confirmation link first: nothing is delivered until the address confirms it.
resource "oci_ons_subscription" "imports_email" {
  count = var.import_notifications && var.import_notification_email != "" ? 1 : 0

  compartment_id = var.compartment_ocid
  topic_id       = oci_ons_notification_topic.imports[0].id
  protocol       = "EMAIL"
  endpoint       = var.import_notification_email
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}
