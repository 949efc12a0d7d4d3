# Values derived from the variables and shared by several files, and the data sources that
# look up facts of the tenancy and region.

locals {
  # Common tags: every OCI resource that takes freeform tags gets these (and var.defined_tags).
  freeform_tags = merge(var.freeform_tags, {
    "project"    = "vdimport"
    "stack"      = var.name_prefix
    "managed-by" = "terraform"
  })

  # Names the other parts of the project define; repeated here because IAM policies and
  # Helm settings must match them. charts/vdimport/values.yaml is their definition.
  step_runner_namespace       = "vdimport"             # the vdimport release's namespace
  step_runner_service_account = "vdimport-step-runner" # stepRunner.serviceAccount.name
  airflow_namespace           = "airflow"              # charts/airflow/values.yaml: release airflow in namespace airflow
  airflow_api_service         = "airflow-api-server"   # the official chart's API server Service for release airflow
  airflow_api_port            = 8080                   # its port (apiServer.service.ports)
  function_name               = "vdimport-trigger"     # images/function/func.yaml
  dag_id                      = "virtual_disk_import"

  bucket_name      = var.bucket_name != "" ? var.bucket_name : "${var.name_prefix}-images"
  work_bucket_name = "${var.name_prefix}-work" # VDIMPORT_WORK_BUCKET (objectstorage.tf)

  # Compartment of worker VMs and volumes: created below compartment_ocid unless given.
  import_compartment_id = var.import_compartment_ocid != "" ? var.import_compartment_ocid : oci_identity_compartment.imports[0].id

  # Image locations in OCIR. The repository names match the build specs' artifacts
  # (vdimport-worker-image -> <prefix>/vdimport-worker, vdimport-function-image -> <prefix>/vdimport-function).
  ocir_host                 = "${lower(local.region_key)}.ocir.io"
  ocir_namespace            = data.oci_objectstorage_namespace.this.namespace
  worker_repository_name    = "${var.name_prefix}/vdimport-worker"
  function_repository_name  = "${var.name_prefix}/vdimport-function"
  worker_image_repository   = "${local.ocir_host}/${local.ocir_namespace}/${local.worker_repository_name}"
  function_image_repository = "${local.ocir_host}/${local.ocir_namespace}/${local.function_repository_name}"
  function_image            = var.function_image_tag == "" ? "" : "${local.function_image_repository}:${var.function_image_tag}"
  create_function           = var.function_image_tag != ""

  region_key = one([for r in data.oci_identity_regions.all.regions : r.key if r.name == var.region])

  availability_domains = [for ad in data.oci_identity_availability_domains.this.availability_domains : ad.name]

  # Kubernetes access for the kubernetes and helm providers (versions.tf).
  kubernetes_api_url = "https://${local.api_endpoint_public ? oci_containerengine_cluster.this.endpoints[0].public_endpoint : oci_containerengine_cluster.this.endpoints[0].private_endpoint}"
  kubernetes_ca_certificate = base64decode(
    yamldecode(data.oci_containerengine_cluster_kube_config.this.content)["clusters"][0]["cluster"]["certificate-authority-data"]
  )
  kubernetes_token_args = concat(
    ["ce", "cluster", "generate-token", "--cluster-id", oci_containerengine_cluster.this.id, "--region", var.region],
    var.oci_config_profile == "" ? [] : ["--profile", var.oci_config_profile],
  )

  # The Airflow API for the function: given, or the internal load balancer of the Helm release.
  airflow_api_url = var.airflow_api_url != "" ? trimsuffix(var.airflow_api_url, "/") : (
    var.deploy_helm_releases ? "http://${try(data.kubernetes_service_v1.airflow_api[0].status[0].load_balancer[0].ingress[0].ip, "")}:${local.airflow_api_port}" : ""
  )
}

data "oci_identity_regions" "all" {}

data "oci_identity_availability_domains" "this" {
  compartment_id = var.tenancy_ocid
}

data "oci_objectstorage_namespace" "this" {
  compartment_id = var.tenancy_ocid
}

# The import compartment: worker VMs and the volumes they write. Keeping them apart from the
# cluster's nodes and volumes is what lets the step runner's policy say "manage instances and
# volumes" without reaching the nodes or Airflow's database volume. Not deleted on destroy
# (enable_delete = false): it holds the imported volumes; a later apply adopts it again.
resource "oci_identity_compartment" "imports" {
  count = var.import_compartment_ocid == "" ? 1 : 0

  compartment_id = var.compartment_ocid
  name           = "${var.name_prefix}-imports"
  description    = "vdimport: temporary worker VMs and the block volumes imported from disk images"
  enable_delete  = false
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}
