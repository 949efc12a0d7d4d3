# IAM, least privilege. Every policy is attached to compartment_ocid and every statement is
# scoped to a compartment (compartment_ocid, or the import compartment below it); nothing is
# granted in the tenancy and nothing is "manage all-resources". Dynamic groups are tenancy
# objects by nature (they can only be created in the root compartment), but each one matches
# resources of one type in one compartment only.
#
# Who needs what (README.md has the table with the API calls behind each statement):
#   step runner pods  OKE workload identity of ServiceAccount vdimport/vdimport-step-runner in
#                     this cluster: worker VMs, volumes, Run Command, the bucket's objects and PARs,
#                     the work bucket's objects and PARs, publishing import outcomes to the topic
#   worker VMs        dynamic group: fetch and report their own Run Command commands
#   function          dynamic group: read the bucket's objects and the Airflow login secret
#   OCI services      Functions (network, image pull), Events (invoke the function),
#                     Object Storage (lifecycle rules)
#   DevOps            dynamic groups of build pipelines, deployment pipelines, code repositories
#                     and connections

locals {
  compartment = "compartment id ${var.compartment_ocid}"
  imports     = "compartment id ${local.import_compartment_id}"

  # Only pods of the vdimport-step-runner ServiceAccount in namespace vdimport of this cluster.
  step_runner_workload = join(", ", [
    "request.principal.type = 'workload'",
    "request.principal.namespace = '${local.step_runner_namespace}'",
    "request.principal.service_account = '${local.step_runner_service_account}'",
    "request.principal.cluster_id = '${oci_containerengine_cluster.this.id}'",
  ])
  import_bucket = "target.bucket.name = '${oci_objectstorage_bucket.images.name}'"
  work_bucket   = "target.bucket.name = '${oci_objectstorage_bucket.work.name}'"

  step_runner_statements = [
    # launch_worker, wait_worker_ready, terminate_worker: Launch/Get/List/TerminateInstance,
    # ListImages (newest Oracle Linux), the boot volume; attach/detach_volume: volume attachments.
    "Allow any-user to manage instance-family in ${local.imports} where all {${local.step_runner_workload}}",
    # create_volume, tune_volume, assign_backup_policy, terminate_worker (unverified volumes).
    "Allow any-user to manage volume-family in ${local.imports} where all {${local.step_runner_workload}}",
    # download/write/verify/fsck: CreateInstanceAgentCommand and its executions (Run Command).
    "Allow any-user to manage instance-agent-command-family in ${local.imports} where all {${local.step_runner_workload}}",
    # The worker VM's VNIC in the worker subnet (subnet and VNIC attach; not the VCN's config).
    "Allow any-user to use subnets in ${local.compartment} where all {${local.step_runner_workload}}",
    "Allow any-user to use vnics in ${local.compartment} where all {${local.step_runner_workload}}",
    "Allow any-user to use private-ips in ${local.compartment} where all {${local.step_runner_workload}}",
    "Allow any-user to use vnics in ${local.imports} where all {${local.step_runner_workload}}",
    # inspect_object: HeadObject, ranged GetObject of the upload, in the import bucket only.
    "Allow any-user to read objects in ${local.compartment} where all {${local.step_runner_workload}, ${local.import_bucket}}",
    "Allow any-user to read buckets in ${local.compartment} where all {${local.step_runner_workload}, ${local.import_bucket}}",
    # download_image, terminate_worker: create, list and delete the read-only PAR of the object.
    "Allow any-user to manage buckets in ${local.compartment} where all {${local.step_runner_workload}, ${local.import_bucket}, request.permission = 'PAR_MANAGE'}",
    # download_image, fsck_volume: a command's output object in the work bucket, through a
    # write-only PAR the step runner makes (a PAR needs its maker's object rights), then read
    # and deleted; the reaper lists and deletes what a dead run left. That bucket only.
    "Allow any-user to manage objects in ${local.compartment} where all {${local.step_runner_workload}, ${local.work_bucket}}",
    "Allow any-user to manage buckets in ${local.compartment} where all {${local.step_runner_workload}, ${local.work_bucket}, request.permission = 'PAR_MANAGE'}",
  ]

  # Import outcomes (notifications.tf): PublishMessage only. Notifications supports only the
  # general policy variables ("Details for Notifications" in the IAM policy reference), so no
  # target.ons-topic.id: the grant covers the topics of compartment_ocid, narrowed to the
  # publish permission (not subscribe, read or manage).
  step_runner_notification_statements = var.import_notifications ? [
    "Allow any-user to use ons-topics in ${local.compartment} where all {${local.step_runner_workload}, request.permission = 'ONS_TOPIC_PUBLISH'}",
  ] : []

  # Run Command: the agent on a worker VM fetches the commands addressed to itself and posts
  # their results. Only instances in the import compartment match the dynamic group.
  worker_vm_statements = [
    "Allow dynamic-group ${oci_identity_dynamic_group.worker_vms.name} to use instance-agent-command-execution-family in ${local.imports} where request.instance.id = target.instance.id",
  ]

  function_statements = [
    # HEAD of the uploaded object and its first/last bytes, in the import bucket only.
    "Allow dynamic-group ${oci_identity_dynamic_group.function.name} to read objects in ${local.compartment} where ${local.import_bucket}",
    # The Airflow login (VDIMPORT_AIRFLOW_SECRET_ID), that secret only.
    "Allow dynamic-group ${oci_identity_dynamic_group.function.name} to read secret-bundles in ${local.compartment} where target.secret.id = '${oci_vault_secret.airflow_api.id}'",
    # OCI Functions attaches the function's VNIC to the functions subnet and NSG.
    "Allow service faas to use virtual-network-family in ${local.compartment}",
    # ... and pulls the function image from the stack's OCIR repository in this compartment.
    "Allow service faas to read repos in ${local.compartment}",
    # Events invokes the function for the createobject rule.
    "Allow service cloudEvents to use functions-family in ${local.compartment}",
  ]

  # Object Storage itself carries out the lifecycle rules (deletes): always on the work bucket,
  # on the import bucket with delete_objects_after_days.
  object_storage_lifecycle_statements = concat(
    ["Allow service objectstorage-${var.region} to manage object-family in ${local.compartment} where ${local.work_bucket}"],
    var.delete_objects_after_days > 0 ? ["Allow service objectstorage-${var.region} to manage object-family in ${local.compartment} where ${local.import_bucket}"] : [],
    local.create_task_logs ? ["Allow service objectstorage-${var.region} to manage object-family in ${local.compartment} where target.bucket.name = '${local.task_logs_bucket_name}'"] : [],
  )

  devops_statements = var.enable_devops ? [
    # Build runs: read the mirrored repository and the pipeline definitions, push the images
    # (Deliver Artifacts), start the function's deployment (Trigger Deployment), notify.
    "Allow dynamic-group ${oci_identity_dynamic_group.devops_build[0].name} to read devops-family in ${local.compartment}",
    "Allow dynamic-group ${oci_identity_dynamic_group.devops_build[0].name} to manage devops-deployment in ${local.compartment}",
    "Allow dynamic-group ${oci_identity_dynamic_group.devops_build[0].name} to use repos in ${local.compartment}",
    "Allow dynamic-group ${oci_identity_dynamic_group.devops_build[0].name} to use ons-topics in ${local.compartment}",
    # Deployments: read the artifact and environment, update the function's image, notify.
    "Allow dynamic-group ${oci_identity_dynamic_group.devops_deploy[0].name} to read devops-family in ${local.compartment}",
    "Allow dynamic-group ${oci_identity_dynamic_group.devops_deploy[0].name} to read fn-app in ${local.compartment}",
    "Allow dynamic-group ${oci_identity_dynamic_group.devops_deploy[0].name} to manage fn-function in ${local.compartment}",
    "Allow dynamic-group ${oci_identity_dynamic_group.devops_deploy[0].name} to read repos in ${local.compartment}",
    "Allow dynamic-group ${oci_identity_dynamic_group.devops_deploy[0].name} to use ons-topics in ${local.compartment}",
    # Mirroring from GitHub: the connection's personal access token, that secret only (it must
    # live in compartment_ocid, e.g. in the stack's vault).
    "Allow dynamic-group ${oci_identity_dynamic_group.devops_repository[0].name} to read secret-family in ${local.compartment} where target.secret.id = '${var.github_token_secret_ocid}'",
    "Allow dynamic-group ${oci_identity_dynamic_group.devops_connection[0].name} to read secret-family in ${local.compartment} where target.secret.id = '${var.github_token_secret_ocid}'",
    "Allow dynamic-group ${oci_identity_dynamic_group.devops_repository[0].name} to use ons-topics in ${local.compartment}",
  ] : []
}

# ---------------------------------------------------------------------------------------------
# Dynamic groups (tenancy objects; each matches one resource type in one compartment)
# ---------------------------------------------------------------------------------------------

resource "oci_identity_dynamic_group" "function" {
  compartment_id = var.tenancy_ocid
  name           = "${var.name_prefix}-function"
  description    = "vdimport: OCI Functions in the stack's compartment"
  matching_rule  = "ALL {resource.type = 'fnfunc', resource.compartment.id = '${var.compartment_ocid}'}"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

# Instances in the import compartment are the worker VMs the step runner launches (the step
# runner may launch nowhere else; OKE nodes live in compartment_ocid).
resource "oci_identity_dynamic_group" "worker_vms" {
  compartment_id = var.tenancy_ocid
  name           = "${var.name_prefix}-worker-vms"
  description    = "vdimport: the temporary worker VMs (instances in the import compartment)"
  matching_rule  = "ALL {instance.compartment.id = '${local.import_compartment_id}'}"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

resource "oci_identity_dynamic_group" "devops_build" {
  count = local.devops_count

  compartment_id = var.tenancy_ocid
  name           = "${var.name_prefix}-devops-build"
  description    = "vdimport: DevOps build pipelines in the stack's compartment"
  matching_rule  = "ALL {resource.type = 'devopsbuildpipeline', resource.compartment.id = '${var.compartment_ocid}'}"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

resource "oci_identity_dynamic_group" "devops_deploy" {
  count = local.devops_count

  compartment_id = var.tenancy_ocid
  name           = "${var.name_prefix}-devops-deploy"
  description    = "vdimport: DevOps deployment pipelines in the stack's compartment"
  matching_rule  = "ALL {resource.type = 'devopsdeploypipeline', resource.compartment.id = '${var.compartment_ocid}'}"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

resource "oci_identity_dynamic_group" "devops_repository" {
  count = local.devops_count

  compartment_id = var.tenancy_ocid
  name           = "${var.name_prefix}-devops-repository"
  description    = "vdimport: DevOps code repositories in the stack's compartment"
  matching_rule  = "ALL {resource.type = 'devopsrepository', resource.compartment.id = '${var.compartment_ocid}'}"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

resource "oci_identity_dynamic_group" "devops_connection" {
  count = local.devops_count

  compartment_id = var.tenancy_ocid
  name           = "${var.name_prefix}-devops-connection"
  description    = "vdimport: DevOps external connections in the stack's compartment"
  matching_rule  = "ALL {resource.type = 'devopsconnection', resource.compartment.id = '${var.compartment_ocid}'}"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

# ---------------------------------------------------------------------------------------------
# Policies (attached to compartment_ocid)
# ---------------------------------------------------------------------------------------------

resource "oci_identity_policy" "step_runner" {
  compartment_id = var.compartment_ocid
  name           = "${var.name_prefix}-step-runner"
  description    = "vdimport: the step runner pods (OKE workload identity vdimport/vdimport-step-runner)"
  statements     = concat(local.step_runner_statements, local.step_runner_notification_statements)
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

resource "oci_identity_policy" "worker_vms" {
  compartment_id = var.compartment_ocid
  name           = "${var.name_prefix}-worker-vms"
  description    = "vdimport: Run Command on the worker VMs"
  statements     = local.worker_vm_statements
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

resource "oci_identity_policy" "function" {
  compartment_id = var.compartment_ocid
  name           = "${var.name_prefix}-function"
  description    = "vdimport: the trigger function, and the Functions and Events services"
  statements     = local.function_statements
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

resource "oci_identity_policy" "object_storage_lifecycle" {
  compartment_id = var.compartment_ocid
  name           = "${var.name_prefix}-object-lifecycle"
  description    = "vdimport: Object Storage applies the work bucket's and the import bucket's lifecycle rules"
  statements     = local.object_storage_lifecycle_statements
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

# It used to exist only with delete_objects_after_days; the work bucket's rule always needs it.
moved {
  from = oci_identity_policy.object_storage_lifecycle[0]
  to   = oci_identity_policy.object_storage_lifecycle
}

resource "oci_identity_policy" "devops" {
  count = local.devops_count

  compartment_id = var.compartment_ocid
  name           = "${var.name_prefix}-devops"
  description    = "vdimport: DevOps builds, deployments and GitHub mirroring"
  statements     = local.devops_statements
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}
