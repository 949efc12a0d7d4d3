# Inputs of the stack. Every variable has a type, a description and, where a value can be
# wrong, a validation. Checks that involve two variables are preconditions on the resources
# that need them (Terraform 1.5 validations can only see their own variable).
# schema.yaml (Resource Manager) lists every variable here, in groups.

# ---------------------------------------------------------------------------------------------
# Tenancy, region, compartments, naming, tags
# ---------------------------------------------------------------------------------------------

variable "tenancy_ocid" {
  type        = string
  description = "OCID of the tenancy (dynamic groups live there). Resource Manager fills it in."

  validation {
    condition     = can(regex("^ocid1\\.tenancy\\.[a-z0-9._-]+$", var.tenancy_ocid))
    error_message = "tenancy_ocid must be a tenancy OCID (ocid1.tenancy....)."
  }
}

variable "region" {
  type        = string
  description = "OCI region identifier, e.g. us-ashburn-1 or eu-frankfurt-1. Resource Manager fills it in."

  validation {
    condition     = can(regex("^[a-z]+(-[a-z]+)+-[0-9]+$", var.region))
    error_message = "region must be a region identifier such as us-ashburn-1."
  }
}

variable "compartment_ocid" {
  type        = string
  description = "Compartment for the stack's resources (network, cluster, bucket, function, vault, DevOps, policies). The tenancy OCID means the root compartment."

  validation {
    condition     = can(regex("^ocid1\\.(compartment|tenancy)\\.[a-z0-9._-]+$", var.compartment_ocid))
    error_message = "compartment_ocid must be a compartment OCID (ocid1.compartment....) or the tenancy OCID."
  }
}

variable "import_compartment_ocid" {
  type        = string
  description = "Compartment of the worker VMs and the imported block volumes: the only compartment where the step runner may create and delete instances and volumes. Empty: a child compartment <name_prefix>-imports of compartment_ocid is created. An existing one must be compartment_ocid itself or below it (the policies are attached to compartment_ocid)."
  default     = ""

  validation {
    condition     = var.import_compartment_ocid == "" || can(regex("^ocid1\\.(compartment|tenancy)\\.[a-z0-9._-]+$", var.import_compartment_ocid))
    error_message = "import_compartment_ocid must be empty or a compartment OCID."
  }
}

variable "oci_config_profile" {
  type        = string
  description = "Profile of the OCI CLI config file (~/.oci/config) for the oci provider and for the kubeconfig token (oci ce cluster generate-token). Empty: DEFAULT, or Resource Manager's own authentication."
  default     = ""

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]*$", var.oci_config_profile))
    error_message = "oci_config_profile may contain letters, digits, '_', '.' and '-' only."
  }
}

variable "name_prefix" {
  type        = string
  description = "Prefix of every resource name (compartment, VCN, cluster, bucket, dynamic groups, policies...). Dynamic group and policy names are unique per tenancy, so a second stack in the same tenancy needs another prefix."
  default     = "vdimport"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,13}[a-z0-9])?$", var.name_prefix))
    error_message = "name_prefix must be 1-15 lowercase letters, digits or '-', start with a letter and not end with '-'."
  }
}

variable "freeform_tags" {
  type        = map(string)
  description = "Free-form tags added to every resource; the stack's own tags (project = vdimport, stack = <name_prefix>, managed-by = terraform) win on a clash."
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.freeform_tags : length(k) <= 100 && length(v) <= 256])
    error_message = "freeform_tags keys must be at most 100 characters and values at most 256."
  }
}

variable "defined_tags" {
  type        = map(string)
  description = "Defined tags added to every resource that supports them, as \"Namespace.Key\" = \"value\". The tag namespaces must exist."
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.defined_tags) : can(regex("^[^.]+\\.[^.]+$", k))])
    error_message = "defined_tags keys must have the form Namespace.Key."
  }
}

# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------

variable "existing_vcn_id" {
  type        = string
  description = "Use this VCN instead of creating one. The stack still creates its subnets, route tables, security lists and NSGs in it (subnets default to /24s 0-4 of its first CIDR: set the *_subnet_cidr variables if those are taken); its gateways must be given below (a VCN has at most one service gateway)."
  default     = ""

  validation {
    condition     = var.existing_vcn_id == "" || can(regex("^ocid1\\.vcn\\.[a-z0-9._-]+$", var.existing_vcn_id))
    error_message = "existing_vcn_id must be empty or a VCN OCID (ocid1.vcn....)."
  }
}

variable "existing_nat_gateway_id" {
  type        = string
  description = "NAT gateway of existing_vcn_id (required with it): internet egress of the nodes (image pulls) and of the worker VMs."
  default     = ""

  validation {
    condition     = var.existing_nat_gateway_id == "" || can(regex("^ocid1\\.natgateway\\.[a-z0-9._-]+$", var.existing_nat_gateway_id))
    error_message = "existing_nat_gateway_id must be empty or a NAT gateway OCID (ocid1.natgateway....)."
  }
}

variable "existing_service_gateway_id" {
  type        = string
  description = "Service gateway (all services in the Oracle Services Network) of existing_vcn_id (required with it): Object Storage, OCIR and the OCI APIs without the internet."
  default     = ""

  validation {
    condition     = var.existing_service_gateway_id == "" || can(regex("^ocid1\\.servicegateway\\.[a-z0-9._-]+$", var.existing_service_gateway_id))
    error_message = "existing_service_gateway_id must be empty or a service gateway OCID (ocid1.servicegateway....)."
  }
}

variable "existing_internet_gateway_id" {
  type        = string
  description = "Internet gateway of existing_vcn_id; only needed when allowed_source_cidr makes the Kubernetes API endpoint public."
  default     = ""

  validation {
    condition     = var.existing_internet_gateway_id == "" || can(regex("^ocid1\\.internetgateway\\.[a-z0-9._-]+$", var.existing_internet_gateway_id))
    error_message = "existing_internet_gateway_id must be empty or an internet gateway OCID (ocid1.internetgateway....)."
  }
}

variable "vcn_cidr" {
  type        = string
  description = "IPv4 CIDR of the new VCN (ignored with existing_vcn_id, whose first CIDR is used). Subnets left empty below are the /24s number 0-4 of it: API endpoint, nodes, load balancers, functions, worker VMs."
  default     = "10.0.0.0/16"

  validation {
    condition     = can(cidrhost(var.vcn_cidr, 0)) && tonumber(split("/", var.vcn_cidr)[1]) >= 8 && tonumber(split("/", var.vcn_cidr)[1]) <= 21
    error_message = "vcn_cidr must be an IPv4 CIDR with a prefix length between /8 and /21 (room for five /24 subnets)."
  }
}

variable "api_subnet_cidr" {
  type        = string
  description = "CIDR of the Kubernetes API endpoint subnet. Empty: the first /24 of the VCN."
  default     = ""

  validation {
    condition     = var.api_subnet_cidr == "" || can(cidrhost(var.api_subnet_cidr, 0))
    error_message = "api_subnet_cidr must be empty or an IPv4 CIDR."
  }
}

variable "node_subnet_cidr" {
  type        = string
  description = "CIDR of the worker node subnet. Empty: the second /24 of the VCN."
  default     = ""

  validation {
    condition     = var.node_subnet_cidr == "" || can(cidrhost(var.node_subnet_cidr, 0))
    error_message = "node_subnet_cidr must be empty or an IPv4 CIDR."
  }
}

variable "lb_subnet_cidr" {
  type        = string
  description = "CIDR of the private subnet of Kubernetes service load balancers (the Airflow API's internal load balancer). Empty: the third /24 of the VCN."
  default     = ""

  validation {
    condition     = var.lb_subnet_cidr == "" || can(cidrhost(var.lb_subnet_cidr, 0))
    error_message = "lb_subnet_cidr must be empty or an IPv4 CIDR."
  }
}

variable "function_subnet_cidr" {
  type        = string
  description = "CIDR of the OCI Functions subnet; the Airflow API load balancer admits only this range. Empty: the fourth /24 of the VCN (10.0.3.0/24 with the default VCN, the placeholder in charts/airflow/values.yaml)."
  default     = ""

  validation {
    condition     = var.function_subnet_cidr == "" || can(cidrhost(var.function_subnet_cidr, 0))
    error_message = "function_subnet_cidr must be empty or an IPv4 CIDR."
  }
}

variable "worker_subnet_cidr" {
  type        = string
  description = "CIDR of the subnet of the temporary worker VMs. Empty: the fifth /24 of the VCN."
  default     = ""

  validation {
    condition     = var.worker_subnet_cidr == "" || can(cidrhost(var.worker_subnet_cidr, 0))
    error_message = "worker_subnet_cidr must be empty or an IPv4 CIDR."
  }
}

variable "allowed_source_cidr" {
  type        = string
  description = "Administrator CIDR (e.g. your office's public range) allowed to reach the Kubernetes API endpoint on 6443, which then gets a public IP: kubectl, helm, and the Airflow UI through kubectl port-forward. Empty (default): everything stays private; use a host in the VCN, OCI Bastion or a VPN."
  default     = ""

  validation {
    condition     = var.allowed_source_cidr == "" || (can(cidrhost(var.allowed_source_cidr, 0)) && var.allowed_source_cidr != "0.0.0.0/0")
    error_message = "allowed_source_cidr must be empty or an IPv4 CIDR other than 0.0.0.0/0."
  }
}

variable "worker_internet_egress" {
  type        = bool
  description = "Route the worker VMs' subnet to the NAT gateway as well as the service gateway. The VMs only need HTTPS to Object Storage, the OCI APIs and the Oracle Linux yum mirrors (all in the Oracle Services Network); false (the default) keeps them off the internet; set true only if the worker image's package repositories are outside it."
  default     = false
}

# ---------------------------------------------------------------------------------------------
# OKE
# ---------------------------------------------------------------------------------------------

variable "kubernetes_version" {
  type        = string
  description = "Kubernetes version of the cluster and node pool, e.g. v1.33.1. Empty: the newest version OKE offers."
  default     = ""

  validation {
    condition     = var.kubernetes_version == "" || can(regex("^v1\\.[0-9]+\\.[0-9]+$", var.kubernetes_version))
    error_message = "kubernetes_version must be empty or of the form v1.<minor>.<patch>."
  }
}

variable "pods_cidr" {
  type        = string
  description = "CIDR of the pods (flannel overlay); must not overlap the VCN or services_cidr."
  default     = "10.244.0.0/16"

  validation {
    condition     = can(cidrhost(var.pods_cidr, 0))
    error_message = "pods_cidr must be an IPv4 CIDR."
  }
}

variable "services_cidr" {
  type        = string
  description = "CIDR of the Kubernetes services; must not overlap the VCN or pods_cidr."
  default     = "10.96.0.0/16"

  validation {
    condition     = can(cidrhost(var.services_cidr, 0))
    error_message = "services_cidr must be an IPv4 CIDR."
  }
}

variable "node_shape" {
  type        = string
  description = "Shape of the worker nodes (x86: the images are built for amd64)."
  default     = "VM.Standard.E5.Flex"

  validation {
    condition     = can(regex("^VM\\.[A-Za-z0-9.]+$", var.node_shape)) && !can(regex("A[0-9]+", var.node_shape))
    error_message = "node_shape must be an x86 VM shape such as VM.Standard.E5.Flex (not an Ampere A1/A2 shape)."
  }
}

variable "node_ocpus" {
  type        = number
  description = "OCPUs per node (flexible shapes)."
  default     = 2

  validation {
    condition     = var.node_ocpus >= 1 && var.node_ocpus <= 64
    error_message = "node_ocpus must be between 1 and 64."
  }
}

variable "node_memory_gb" {
  type        = number
  description = "Memory per node in GB (flexible shapes). Two nodes of 2 OCPUs / 16 GB hold Airflow and a few imports."
  default     = 16

  validation {
    condition     = var.node_memory_gb >= 4 && var.node_memory_gb <= 1024
    error_message = "node_memory_gb must be between 4 and 1024."
  }
}

variable "node_count" {
  type        = number
  description = "Number of worker nodes, spread over the availability domains."
  default     = 2

  validation {
    condition     = var.node_count >= 1 && var.node_count <= 100 && floor(var.node_count) == var.node_count
    error_message = "node_count must be a whole number between 1 and 100."
  }
}

variable "node_boot_volume_gb" {
  type        = number
  description = "Boot volume size of each node in GB (images and emptyDirs live there)."
  default     = 50

  validation {
    condition     = var.node_boot_volume_gb >= 50 && var.node_boot_volume_gb <= 1024 && floor(var.node_boot_volume_gb) == var.node_boot_volume_gb
    error_message = "node_boot_volume_gb must be a whole number between 50 and 1024."
  }
}

variable "node_image_id" {
  type        = string
  description = "Image of the worker nodes. Empty: the newest Oracle Linux 8 OKE image for the Kubernetes version."
  default     = ""

  validation {
    condition     = var.node_image_id == "" || can(regex("^ocid1\\.image\\.[a-z0-9._-]+$", var.node_image_id))
    error_message = "node_image_id must be empty or an image OCID (ocid1.image....)."
  }
}

variable "node_ssh_public_key" {
  type        = string
  description = "SSH public key for the worker nodes (debugging only; the node NSG opens no SSH port). Empty: none."
  default     = ""

  validation {
    condition     = var.node_ssh_public_key == "" || can(regex("^(ssh-(rsa|ed25519)|ecdsa-sha2-nistp[0-9]+) ", var.node_ssh_public_key))
    error_message = "node_ssh_public_key must be empty or an OpenSSH public key (ssh-ed25519 ..., ssh-rsa ..., ecdsa-sha2-...)."
  }
}

# ---------------------------------------------------------------------------------------------
# Object Storage
# ---------------------------------------------------------------------------------------------

variable "bucket_name" {
  type        = string
  description = "Name of the import bucket (unique in the tenancy's Object Storage namespace). Empty: <name_prefix>-images."
  default     = ""

  validation {
    condition     = var.bucket_name == "" || can(regex("^[A-Za-z0-9._-]{1,256}$", var.bucket_name))
    error_message = "bucket_name may contain letters, digits, '.', '_' and '-' only (1-256 characters)."
  }
}

variable "bucket_kms_key_id" {
  type        = string
  description = "Vault key to encrypt the bucket with (customer-managed). Empty: Oracle-managed keys. The key's policy must let the Object Storage service use it (README.md)."
  default     = ""

  validation {
    condition     = var.bucket_kms_key_id == "" || can(regex("^ocid1\\.key\\.[a-z0-9._-]+$", var.bucket_kms_key_id))
    error_message = "bucket_kms_key_id must be empty or a Vault key OCID (ocid1.key....)."
  }
}

variable "delete_objects_after_days" {
  type        = number
  description = "Delete objects from the import bucket this many days after upload (an Object Storage lifecycle rule; it applies to every object, imported or not). 0: keep them."
  default     = 0

  validation {
    condition     = var.delete_objects_after_days >= 0 && var.delete_objects_after_days <= 36500 && floor(var.delete_objects_after_days) == var.delete_objects_after_days
    error_message = "delete_objects_after_days must be a whole number between 0 and 36500."
  }
}

# ---------------------------------------------------------------------------------------------
# Container images (OCI Registry)
# ---------------------------------------------------------------------------------------------

variable "container_repositories_public" {
  type        = bool
  description = "Make the two OCIR repositories public (unauthenticated pulls). The images hold only this project's code; true spares the step pods an image pull secret."
  default     = false
}

variable "worker_image_tag" {
  type        = string
  description = "Tag of the step runner image in <name_prefix>/vdimport-worker (WORKER_IMAGE_TAG of a DevOps build, or your docker push). Empty: the vdimport chart's appVersion."
  default     = ""

  validation {
    condition     = var.worker_image_tag == "" || can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.worker_image_tag))
    error_message = "worker_image_tag must be empty or a valid image tag."
  }
}

variable "max_volume_gb" {
  type        = number
  description = "Largest volume one import may create, in GB (the vdimport chart's maxVolumeGb). An image's header alone sets its volume's size, so this caps what one upload can cost; a larger image fails at inspect_object before anything is created."
  default     = 32768

  validation {
    condition     = var.max_volume_gb >= 50 && var.max_volume_gb <= 32768 && floor(var.max_volume_gb) == var.max_volume_gb
    error_message = "max_volume_gb must be a whole number of GB from 50 (OCI's smallest volume) to 32768 (its largest)."
  }
}

variable "function_image_tag" {
  type        = string
  description = "Tag of the function image in <name_prefix>/vdimport-function. The function, its Events rule and its deployment pipeline are created only once this is set, because OCI Functions needs the image to exist (README.md: first apply, push, second apply)."
  default     = ""

  validation {
    condition     = var.function_image_tag == "" || can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.function_image_tag))
    error_message = "function_image_tag must be empty or a valid image tag."
  }
}

variable "image_pull_secret_name" {
  type        = string
  description = "Name of a docker-registry Secret of your own in the vdimport namespace for pulling the step runner image from the private OCIR repository. Empty: with private repositories, Terraform makes one (imagepull.tf: a user that can only read the repositories, its auth token, the Secret); with public ones, none."
  default     = ""

  validation {
    condition     = var.image_pull_secret_name == "" || can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.image_pull_secret_name))
    error_message = "image_pull_secret_name must be empty or a Kubernetes object name (lowercase letters, digits, '-')."
  }
}

variable "mirror_runtime_images" {
  type        = bool
  description = "Pull Airflow's runtime images (apache/airflow, git-sync, the chart's PostgreSQL, the step pods' XCom sidecar) from private OCIR copies <name_prefix>/mirror/<name> instead of Docker Hub and registry.k8s.io, whose anonymous pull limits count per IP and all nodes share the NAT's. Terraform makes the repositories and points both charts and helm_commands at them; the copy itself is the skopeo commands of the mirror_commands output, run before the charts use them (README.md, \"Runtime images\"). Off by default: the copy needs a machine with skopeo (or docker) and access to both registries, which Resource Manager's runner does not have."
  default     = false
}

# ---------------------------------------------------------------------------------------------
# Function and Airflow API
# ---------------------------------------------------------------------------------------------

variable "function_memory_mb" {
  type        = number
  description = "Memory of the function in MB (images/function/func.yaml says 256)."
  default     = 256

  validation {
    condition     = var.function_memory_mb >= 128 && var.function_memory_mb <= 3072 && var.function_memory_mb % 64 == 0
    error_message = "function_memory_mb must be a multiple of 64 between 128 and 3072."
  }
}

variable "function_timeout_seconds" {
  type        = number
  description = "Timeout of one function invocation in seconds (images/function/func.yaml says 120)."
  default     = 120

  validation {
    condition     = var.function_timeout_seconds >= 5 && var.function_timeout_seconds <= 300 && floor(var.function_timeout_seconds) == var.function_timeout_seconds
    error_message = "function_timeout_seconds must be a whole number between 5 and 300."
  }
}

variable "airflow_api_url" {
  type        = string
  description = "Base URL of the Airflow API server for the function, e.g. http://10.0.2.15:8080 (kubectl -n airflow get service airflow-api-server). Empty: taken from the load balancer of the Helm release when deploy_helm_releases is true."
  default     = ""

  validation {
    condition     = var.airflow_api_url == "" || can(regex("^https?://[^/?#\\s]+(/[^?#\\s]*)?$", var.airflow_api_url))
    error_message = "airflow_api_url must be empty or an http(s) base URL without query or fragment."
  }
}

variable "airflow_api_username" {
  type        = string
  description = "Airflow login the function uses (its password is generated); stored in the Vault secret and, with deploy_helm_releases, in the Kubernetes Secret airflow-api-user."
  default     = "vdimport"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.@-]{1,64}$", var.airflow_api_username))
    error_message = "airflow_api_username must be 1-64 letters, digits, '_', '.', '@' or '-'."
  }
}

# ---------------------------------------------------------------------------------------------
# Vault
# ---------------------------------------------------------------------------------------------

variable "vault_id" {
  type        = string
  description = "Existing Vault for the Airflow credentials secret. Empty: a vault <name_prefix>-vault is created (deleting a vault is scheduled, 7-30 days)."
  default     = ""

  validation {
    condition     = var.vault_id == "" || can(regex("^ocid1\\.vault\\.[a-z0-9._-]+$", var.vault_id))
    error_message = "vault_id must be empty or a Vault OCID (ocid1.vault....)."
  }
}

variable "vault_key_id" {
  type        = string
  description = "Existing AES master encryption key (in vault_id) for the secret. Empty: a key is created in the vault."
  default     = ""

  validation {
    condition     = var.vault_key_id == "" || can(regex("^ocid1\\.key\\.[a-z0-9._-]+$", var.vault_key_id))
    error_message = "vault_key_id must be empty or a Vault key OCID (ocid1.key....)."
  }
}

variable "vault_key_protection_mode" {
  type        = string
  description = "Protection of a created master key: HSM (hardware security module) or SOFTWARE."
  default     = "HSM"

  validation {
    condition     = contains(["HSM", "SOFTWARE"], var.vault_key_protection_mode)
    error_message = "vault_key_protection_mode must be HSM or SOFTWARE."
  }
}

# ---------------------------------------------------------------------------------------------
# Source repository and OCI DevOps
# ---------------------------------------------------------------------------------------------

variable "git_repo_url" {
  type        = string
  description = "HTTPS URL of the Git repository holding this project (your fork), e.g. https://github.com/you/vdimport.git: Airflow's git-sync reads dags/ from it, DevOps mirrors and builds it."
  default     = ""

  validation {
    condition     = var.git_repo_url == "" || can(regex("^https://[^\\s]+$", var.git_repo_url))
    error_message = "git_repo_url must be empty or an https:// URL."
  }
}

variable "git_branch" {
  type        = string
  description = "Branch of git_repo_url that Airflow syncs and DevOps builds."
  default     = "main"

  validation {
    condition     = can(regex("^[A-Za-z0-9._/-]+$", var.git_branch))
    error_message = "git_branch may contain letters, digits, '.', '_', '/' and '-' only."
  }
}

variable "enable_devops" {
  type        = bool
  description = "Create the OCI DevOps project: GitHub connection, mirrored code repository, build pipelines for both images (images/*/build_spec.yaml) delivering to OCIR, a build trigger, and the function's deployment pipeline. Needs git_repo_url and github_token_secret_ocid."
  default     = false
}

variable "github_token_secret_ocid" {
  type        = string
  description = "Vault secret holding a GitHub personal access token (read access to git_repo_url) for the DevOps connection. Required with enable_devops."
  default     = ""

  validation {
    condition     = var.github_token_secret_ocid == "" || can(regex("^ocid1\\.vaultsecret\\.[a-z0-9._-]+$", var.github_token_secret_ocid))
    error_message = "github_token_secret_ocid must be empty or a Vault secret OCID (ocid1.vaultsecret....)."
  }
}

variable "notification_email" {
  type        = string
  description = "E-mail address subscribed to the DevOps notification topic (build and deployment results). Empty: no subscription."
  default     = ""

  validation {
    condition     = var.notification_email == "" || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.notification_email))
    error_message = "notification_email must be empty or an e-mail address."
  }
}

# ---------------------------------------------------------------------------------------------
# Import notifications (notifications.tf)
# ---------------------------------------------------------------------------------------------

variable "import_notifications" {
  type        = bool
  description = "Create the notification topic <name_prefix>-imports and let the step runner publish each import's outcome to it (the volume's OCID, or the failed step and its cause). Subscribe to it with import_notification_email or any other Notifications protocol. False: nobody is notified."
  default     = true
}

variable "import_notification_email" {
  type        = string
  description = "E-mail address subscribed to the import notification topic (OCI mails a confirmation link first). Empty: no subscription."
  default     = ""

  validation {
    condition     = var.import_notification_email == "" || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.import_notification_email))
    error_message = "import_notification_email must be empty or an e-mail address."
  }
}

variable "airflow_ui_url" {
  type        = string
  description = "Base URL of the Airflow UI as the people notified reach it, e.g. https://airflow.example.com or http://localhost:8080 (airflow_ui_command's port-forward); import notifications then link to their run. Empty: no link."
  default     = ""

  validation {
    condition     = var.airflow_ui_url == "" || can(regex("^https?://[^\\s/?#@,]+(/[^\\s?#,]*)?$", var.airflow_ui_url))
    error_message = "airflow_ui_url must be empty or an http(s) URL without credentials, query, fragment or commas."
  }
}

# ---------------------------------------------------------------------------------------------
# Helm releases (optional second half of the one-apply path)
# ---------------------------------------------------------------------------------------------

variable "deploy_helm_releases" {
  type        = bool
  description = "Install the vdimport chart (charts/vdimport) and the official Airflow chart (with charts/airflow/values.yaml), the airflow namespace and Airflow's Secrets from this apply. Terraform must reach the Kubernetes API (allowed_source_cidr, or run inside the VCN) and have the oci CLI. False: the two-stage path in README.md."
  default     = false
}

variable "remote_task_logs" {
  type        = bool
  description = "With deploy_helm_releases: keep Airflow's task logs in the Object Storage bucket <name_prefix>-airflow-logs (S3 Compatibility API, a user with a Customer Secret Key for that bucket only), so the UI shows a step's log after its pod is gone. False: logs live only in the pods."
  default     = true
}

variable "task_log_retention_days" {
  type        = number
  description = "Days a task log stays in the logs bucket before Object Storage's lifecycle rule deletes it."
  default     = 30

  validation {
    condition     = var.task_log_retention_days >= 1 && var.task_log_retention_days <= 3650 && floor(var.task_log_retention_days) == var.task_log_retention_days
    error_message = "task_log_retention_days must be a whole number of days from 1 to 3650."
  }
}

variable "airflow_chart_version" {
  type        = string
  description = "Version of the official Apache Airflow Helm chart; charts/airflow/values.yaml is validated against 1.22.0."
  default     = "1.22.0"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.airflow_chart_version))
    error_message = "airflow_chart_version must be a version such as 1.22.0."
  }
}
