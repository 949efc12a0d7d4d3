# Optional (deploy_helm_releases): the Kubernetes half of the system from the same apply.
#
#   1. namespace airflow (oke.tf) and Airflow's Secrets (below; charts/airflow/README.md lists
#      them), generated once and kept in the Terraform state;
#   2. the vdimport chart (charts/vdimport) in namespace vdimport: the step runner's
#      ServiceAccount, RBAC, ConfigMaps (also vdimport-dag-settings in namespace airflow);
#   3. the official Airflow chart with charts/airflow/values.yaml, the DAGs from git_repo_url
#      and the API server's internal load balancer open to the function subnet only (with
#      mirror_runtime_images, its images from the OCIR copies of mirror.tf);
#   4. the load balancer's address, read back for the function's VDIMPORT_AIRFLOW_URL.
#
# Terraform must reach the cluster's API endpoint (allowed_source_cidr, or a host in the VCN)
# and have the oci CLI for the token. Without that, use the two-stage path in README.md: apply
# with deploy_helm_releases = false, then run the printed helm commands (outputs).

locals {
  helm_count = var.deploy_helm_releases ? 1 : 0

  # Fernet keys are 32 bytes, URL-safe base64.
  airflow_fernet_key = var.deploy_helm_releases ? replace(replace(random_bytes.airflow_fernet_key[0].base64, "+", "-"), "/", "_") : ""

  # Secret name => data; names and keys are those charts/airflow/values.yaml refers to.
  airflow_secret_names = var.deploy_helm_releases ? toset([
    "airflow-fernet-key", "airflow-jwt-secret", "airflow-api-secret-key",
    "airflow-postgresql", "airflow-metadata-db", "airflow-api-user",
  ]) : toset([])
  airflow_secret_data = { for name, data in {
    "airflow-fernet-key"     = { "fernet-key" = local.airflow_fernet_key }
    "airflow-jwt-secret"     = { "jwt-secret" = try(random_password.airflow_jwt_secret[0].result, "") }
    "airflow-api-secret-key" = { "api-secret-key" = try(random_password.airflow_api_secret_key[0].result, "") }
    "airflow-postgresql"     = { "postgres-password" = try(random_password.airflow_postgres[0].result, "") }
    "airflow-metadata-db" = {
      "connection" = "postgresql://postgres:${try(random_password.airflow_postgres[0].result, "")}@airflow-postgresql.${local.airflow_namespace}:5432/postgres?sslmode=disable"
    }
    # The same login as the function's Vault secret (vault.tf).
    "airflow-api-user" = {
      "username" = var.airflow_api_username
      "password" = random_password.airflow_api.result
    }
  } : name => data if var.deploy_helm_releases }
}

resource "random_bytes" "airflow_fernet_key" {
  count  = local.helm_count
  length = 32
}

resource "random_password" "airflow_jwt_secret" {
  count   = local.helm_count
  length  = 48
  special = false
}

resource "random_password" "airflow_api_secret_key" {
  count   = local.helm_count
  length  = 48
  special = false
}

# Letters and digits only: it is embedded in the metadata database URL.
resource "random_password" "airflow_postgres" {
  count   = local.helm_count
  length  = 32
  special = false
}

resource "kubernetes_secret_v1" "airflow" {
  for_each = local.airflow_secret_names

  metadata {
    name      = each.key
    namespace = kubernetes_namespace_v1.airflow[0].metadata[0].name
    labels = {
      "app.kubernetes.io/part-of"    = "vdimport"
      "app.kubernetes.io/managed-by" = "terraform"
    }
  }

  type = "Opaque"
  data = local.airflow_secret_data[each.key]
}

locals {
  # Everything the vdimport release renders from: its chart's files and the values set here.
  vdimport_chart_dir = "${path.module}/../charts/vdimport"
  vdimport_release_hash = var.deploy_helm_releases ? sha256(jsonencode([
    [for f in sort(fileset(local.vdimport_chart_dir, "**")) : filesha256("${local.vdimport_chart_dir}/${f}")],
    helm_release.vdimport[0].set,
    helm_release.vdimport[0].set_list,
  ])) : ""
}

resource "helm_release" "vdimport" {
  count = local.helm_count

  name             = "vdimport"
  chart            = "${path.module}/../charts/vdimport"
  namespace        = local.step_runner_namespace
  create_namespace = true
  wait             = true
  timeout          = 300

  set = concat(
    [
      { name = "oci.region", value = var.region },
      { name = "oci.compartmentId", value = local.import_compartment_id },
      { name = "oci.subnetId", value = oci_core_subnet.this["workers"].id },
      { name = "oci.bucketName", value = oci_objectstorage_bucket.images.name },
      { name = "oci.workBucketName", value = oci_objectstorage_bucket.work.name },
      { name = "stepRunner.image.repository", value = local.worker_image_repository },
      { name = "airflow.namespace", value = local.airflow_namespace },
      { name = "maxVolumeGb", value = tostring(var.max_volume_gb) },
    ],
    [{ name = "stepRunner.image.tag", value = local.worker_image_tag }],
    # Pinned by digest once the tag is in the repository (imagepull.tf); until then the tag,
    # pulled every time, so a rebuilt image under the same tag is never stale on a node.
    local.worker_image_digest == "" ? [{ name = "stepRunner.image.pullPolicy", value = "Always" }] : [
      { name = "stepRunner.image.digest", value = local.worker_image_digest },
    ],
    # Import outcomes (notifications.tf): VDIMPORT_NOTIFICATION_TOPIC_ID, VDIMPORT_AIRFLOW_UI_URL.
    var.import_notifications ? [{ name = "notifications.topicId", value = oci_ons_notification_topic.imports[0].id }] : [],
    var.airflow_ui_url == "" ? [] : [{ name = "airflow.uiUrl", value = var.airflow_ui_url }],
    # mirror_runtime_images (mirror.tf): the XCom sidecar from its OCIR copy.
    [for key, value in local.mirror_settings["vdimport"] : { name = key, value = value }],
  )

  set_list = concat(
    # Workload identity's token exchange goes to the API endpoint (port 12250): its subnet only.
    [{ name = "networkPolicy.kubernetesApiCidrs", value = [local.api_subnet_cidr] }],
    local.pull_secret_name == "" ? [] : [{ name = "stepRunner.image.pullSecrets", value = [local.pull_secret_name] }],
  )

  # The chart writes vdimport-dag-settings into namespace airflow; the step pods need their
  # IAM policy before the first import.
  depends_on = [kubernetes_namespace_v1.airflow, oci_identity_policy.step_runner]
}

resource "helm_release" "airflow" {
  count = local.helm_count

  name       = "airflow"
  repository = "https://airflow.apache.org"
  chart      = "airflow"
  version    = var.airflow_chart_version
  namespace  = kubernetes_namespace_v1.airflow[0].metadata[0].name
  # mirror_runtime_images (mirror.tf): the runtime images from their OCIR copies and the pull
  # secret, as values documents after ours (empty without it).
  values  = concat([file("${path.module}/../charts/airflow/values.yaml")], local.mirror_airflow_values)
  wait    = true
  timeout = 1200 # migrations, git-sync and the load balancer take a while on a new cluster

  set = [
    { name = "dags.gitSync.repo", value = var.git_repo_url },
    { name = "dags.gitSync.branch", value = var.git_branch },
    { name = "dags.gitSync.ref", value = var.git_branch },
    # The dag-processor reads the vdimport settings (the pool, max_active_runs) when it starts:
    # a changed vdimport release changes this annotation, and so rolls it.
    { name = "dagProcessor.podAnnotations.vdimport/settings-hash", value = local.vdimport_release_hash },
    # The load balancer's NSG is this stack's (network.tf); the cloud controller manages none.
    { name = "apiServer.service.annotations.oci\\.oraclecloud\\.com/oci-network-security-groups", value = oci_core_network_security_group.api_lb.id },
  ]

  # Only the function subnet may reach the API server's load balancer.
  set_list = [
    { name = "apiServer.service.loadBalancerSourceRanges", value = [local.function_subnet_cidr] },
  ]

  lifecycle {
    precondition {
      condition     = var.git_repo_url != ""
      error_message = "deploy_helm_releases needs git_repo_url: Airflow's git-sync reads the DAG from it."
    }
  }

  # Pods load the ConfigMap vdimport-dag-settings and the Secrets at start (the remote logs
  # Secret is optional to them: made first, or the pods would start without it).
  depends_on = [helm_release.vdimport, kubernetes_secret_v1.airflow, kubernetes_secret_v1.airflow_remote_logs, kubernetes_secret_v1.ocir_pull_airflow]
}

# The internal load balancer's private IP, for the function's VDIMPORT_AIRFLOW_URL.
data "kubernetes_service_v1" "airflow_api" {
  count = local.helm_count

  metadata {
    name      = local.airflow_api_service
    namespace = local.airflow_namespace
  }

  depends_on = [helm_release.airflow]
}
