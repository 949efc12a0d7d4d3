# What a user needs after `terraform apply` (README.md, "After the apply", walks through them).

# --- Uploading ------------------------------------------------------------------------------

output "object_storage_namespace" {
  description = "Object Storage namespace of the tenancy (also the OCIR namespace)."
  value       = local.ocir_namespace
}

output "bucket_name" {
  description = "The import bucket: every object created in it starts an import."
  value       = oci_objectstorage_bucket.images.name
}

output "work_bucket_name" {
  description = "The work bucket (VDIMPORT_WORK_BUCKET, the chart's oci.workBucketName): Run Command output beyond 1 KB; never upload there."
  value       = oci_objectstorage_bucket.work.name
}

output "upload_command" {
  description = "Upload a disk image and import it (options as object metadata, see README.md)."
  value       = "oci os object put --namespace ${local.ocir_namespace} --bucket-name ${oci_objectstorage_bucket.images.name} --file <disk image> --metadata '{\"ad_number\": \"1\"}'"
}

# --- Cluster --------------------------------------------------------------------------------

output "cluster_id" {
  description = "OCID of the OKE cluster (the workload identity policy names it)."
  value       = oci_containerengine_cluster.this.id
}

output "kubernetes_version" {
  description = "Kubernetes version of the cluster and node pool."
  value       = local.kubernetes_version
}

output "kubeconfig_command" {
  description = "Write a kubeconfig for the cluster (public endpoint only with allowed_source_cidr; else run it on a host in the VCN)."
  value       = "oci ce cluster create-kubeconfig --cluster-id ${oci_containerengine_cluster.this.id} --region ${var.region} --token-version 2.0.0 --kube-endpoint ${local.api_endpoint_public ? "PUBLIC_ENDPOINT" : "PRIVATE_ENDPOINT"} --file $HOME/.kube/config"
}

output "airflow_ui_command" {
  description = "Open the Airflow UI at http://localhost:8080 through the Kubernetes API (login: airflow_api_secret_id)."
  value       = "kubectl -n ${local.airflow_namespace} port-forward service/${local.airflow_api_service} 8080:${local.airflow_api_port}"
}

# --- Network and compartments -------------------------------------------------------------

output "vcn_id" {
  description = "OCID of the VCN (created or given)."
  value       = local.vcn_id
}

output "import_compartment_id" {
  description = "Compartment of the worker VMs and the imported block volumes (the vdimport chart's oci.compartmentId)."
  value       = local.import_compartment_id
}

output "worker_subnet_id" {
  description = "Subnet of the worker VMs (the vdimport chart's oci.subnetId)."
  value       = oci_core_subnet.this["workers"].id
}

output "function_subnet_cidr" {
  description = "CIDR of the functions subnet: the Airflow chart's apiServer.service.loadBalancerSourceRanges."
  value       = local.function_subnet_cidr
}

output "api_subnet_cidr" {
  description = "CIDR of the Kubernetes API endpoint subnet: the vdimport chart's networkPolicy.kubernetesApiCidrs."
  value       = local.api_subnet_cidr
}

# --- Images -------------------------------------------------------------------------------

output "ocir_registry" {
  description = "OCI Registry host of the region (docker login target)."
  value       = local.ocir_host
}

output "docker_login_command" {
  description = "Log in to OCIR with an auth token as password (identity-domain users: <namespace>/<domain>/<user>)."
  value       = "docker login ${local.ocir_host} -u '${local.ocir_namespace}/<username>'"
}

output "worker_image_repository" {
  description = "Repository of the step runner image (the vdimport chart's stepRunner.image.repository)."
  value       = local.worker_image_repository
}

output "function_image_repository" {
  description = "Repository of the function image; set function_image_tag to a tag pushed here."
  value       = local.function_image_repository
}

# --- Function and Airflow -----------------------------------------------------------------

output "function_application_id" {
  description = "OCID of the Functions application."
  value       = oci_functions_application.this.id
}

output "function_id" {
  description = "OCID of the function vdimport-trigger (null until function_image_tag is set)."
  value       = one(oci_functions_function.trigger[*].id)
}

output "events_rule_id" {
  description = "OCID of the createobject Events rule (null until the function exists)."
  value       = one(oci_events_rule.object_created[*].id)
}

output "airflow_api_url" {
  description = "The Airflow API URL the function uses (empty until known)."
  value       = local.airflow_api_url
}

output "airflow_api_secret_id" {
  description = "Vault secret with the Airflow login {\"username\", \"password\"} of the function (and of the UI)."
  value       = oci_vault_secret.airflow_api.id
}

output "airflow_api_login_command" {
  description = "Print the Airflow login stored in the Vault secret."
  value       = "oci secrets secret-bundle get --secret-id ${oci_vault_secret.airflow_api.id} --query 'data.\"secret-bundle-content\".content' --raw-output | base64 -d"
}

output "vault_id" {
  description = "Vault of the stack's secrets (also a place for the GitHub token secret of DevOps)."
  value       = local.vault_id
}

output "vault_key_id" {
  description = "Master encryption key of the stack's secrets."
  value       = local.vault_key_id
}

output "import_notification_topic_id" {
  description = "Notification topic of import outcomes (the vdimport chart's notifications.topicId); subscribe to it with oci ons subscription create. Null without import_notifications."
  value       = one(oci_ons_notification_topic.imports[*].id)
}

# --- DevOps -------------------------------------------------------------------------------

output "devops_project_id" {
  description = "OCID of the DevOps project (null without enable_devops)."
  value       = one(oci_devops_project.this[*].id)
}

output "build_pipeline_ids" {
  description = "Build pipelines by image (worker, function); start one with: oci devops build-run create --build-pipeline-id <id>."
  value       = { for k, p in oci_devops_build_pipeline.image : k => p.id }
}

output "deploy_pipeline_id" {
  description = "The function's deployment pipeline (null until the function exists)."
  value       = one(oci_devops_deploy_pipeline.function[*].id)
}

output "devops_notification_topic_id" {
  description = "Notification topic of DevOps build and deployment results."
  value       = one(oci_ons_notification_topic.devops[*].id)
}

# --- Two-stage Helm path (deploy_helm_releases = false) -----------------------------------

output "helm_commands" {
  description = "The Helm half by hand, in order, from the repository root (README.md, two-stage path). Create the airflow namespace and Secrets first (charts/airflow/README.md)."
  value = join("\n", [
    "helm upgrade --install vdimport charts/vdimport -n ${local.step_runner_namespace} --create-namespace --set oci.region=${var.region} --set oci.compartmentId=${local.import_compartment_id} --set oci.subnetId=${oci_core_subnet.this["workers"].id} --set oci.bucketName=${oci_objectstorage_bucket.images.name} --set oci.workBucketName=${oci_objectstorage_bucket.work.name} --set stepRunner.image.repository=${local.worker_image_repository}${var.worker_image_tag == "" ? "" : " --set stepRunner.image.tag=${var.worker_image_tag}"} --set 'networkPolicy.kubernetesApiCidrs={${local.api_subnet_cidr}}'${var.image_pull_secret_name == "" ? "" : " --set 'stepRunner.image.pullSecrets={${var.image_pull_secret_name}}'"}${var.import_notifications ? " --set notifications.topicId=${oci_ons_notification_topic.imports[0].id}" : ""}${var.airflow_ui_url == "" ? "" : " --set airflow.uiUrl=${var.airflow_ui_url}"}${local.mirror_helm_flags["vdimport"]}",
    "helm upgrade --install airflow airflow --repo https://airflow.apache.org --version ${var.airflow_chart_version} -n ${local.airflow_namespace} -f charts/airflow/values.yaml --set dags.gitSync.repo=${var.git_repo_url == "" ? "<git_repo_url>" : var.git_repo_url} --set dags.gitSync.branch=${var.git_branch} --set dags.gitSync.ref=${var.git_branch} --set 'apiServer.service.loadBalancerSourceRanges={${local.function_subnet_cidr}}' --set 'apiServer.service.annotations.oci\\.oraclecloud\\.com/oci-network-security-groups=${oci_core_network_security_group.api_lb.id}'${local.mirror_helm_flags["airflow"]}",
  ])
}

output "mirror_commands" {
  description = "With mirror_runtime_images: the skopeo copies of the runtime images into their OCIR repositories, in the order the install needs them; run them before the charts use the copies, after `skopeo login` to the registry with an auth token (README.md, \"Runtime images\"): terraform output -raw mirror_commands | bash. Empty without mirror_runtime_images."
  value       = join("\n", local.mirror_commands)
}

output "iam_policy_statements" {
  description = "Every policy statement the stack creates, by policy."
  value = {
    step_runner              = concat(local.step_runner_statements, local.step_runner_notification_statements)
    worker_vms               = local.worker_vm_statements
    function                 = local.function_statements
    object_storage_lifecycle = local.object_storage_lifecycle_statements
    devops                   = local.devops_statements
  }
}
