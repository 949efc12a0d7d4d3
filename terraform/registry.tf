# OCI Registry: one repository per image, in compartment_ocid, so that pushes (docker, skaffold
# or the DevOps Deliver Artifacts stage) land here rather than auto-creating repositories in the
# root compartment. Paths: <region-key>.ocir.io/<namespace>/<name_prefix>/vdimport-worker and
# .../vdimport-function (charts/airflow/README.md, "Images and OCI DevOps").

resource "oci_artifacts_container_repository" "worker" {
  compartment_id = var.compartment_ocid
  display_name   = local.worker_repository_name
  is_public      = var.container_repositories_public
  is_immutable   = false # the DevOps build may re-push a tag when a build is re-run
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags

  readme {
    format  = "TEXT_MARKDOWN"
    content = "vdimport step runner (images/worker): one KubernetesPodOperator pod per import step."
  }
}

resource "oci_artifacts_container_repository" "function" {
  compartment_id = var.compartment_ocid
  display_name   = local.function_repository_name
  is_public      = var.container_repositories_public
  is_immutable   = false
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags

  readme {
    format  = "TEXT_MARKDOWN"
    content = "vdimport OCI Function vdimport-trigger (images/function): object-created events to DAG runs."
  }
}
