# OKE: an enhanced cluster (workload identity, which the step runner authenticates with, exists
# only on enhanced clusters) with a flannel overlay, its API endpoint in the api subnet behind
# NSG api, service load balancers in the lb subnet, and one node pool spread over the
# availability domains.

locals {
  # Newest offered version when none is given ("v1.33.1" sorts by minor, then patch).
  offered_kubernetes_versions = data.oci_containerengine_cluster_option.all.kubernetes_versions
  newest_kubernetes_version = split("|", reverse(sort([
    for v in local.offered_kubernetes_versions :
    format("%04d.%04d|%s", tonumber(regex("^v1\\.([0-9]+)\\.([0-9]+)", v)[0]), tonumber(regex("^v1\\.([0-9]+)\\.([0-9]+)", v)[1]), v)
    if can(regex("^v1\\.([0-9]+)\\.([0-9]+)", v))
  ]))[0])[1]
  kubernetes_version = var.kubernetes_version != "" ? var.kubernetes_version : local.newest_kubernetes_version

  # Newest Oracle Linux 8 x86 OKE node image for that version, e.g.
  # "Oracle-Linux-8.10-2025.06.17-0-OKE-1.33.1-787" (not the -aarch64- or -GPU- variants).
  node_image_pattern = "^Oracle-Linux-8\\.[0-9]+-[0-9]{4}\\.[0-9]{2}\\.[0-9]{2}-[0-9]+-OKE-${replace(trimprefix(local.kubernetes_version, "v"), ".", "\\.")}-[0-9]+$"
  node_image_candidates = reverse(sort([
    for s in data.oci_containerengine_node_pool_option.all.sources :
    "${regex("[0-9]{4}\\.[0-9]{2}\\.[0-9]{2}", s.source_name)}|${s.image_id}"
    if s.source_type == "IMAGE" && can(regex(local.node_image_pattern, s.source_name))
  ]))
  node_image_id = var.node_image_id != "" ? var.node_image_id : try(split("|", local.node_image_candidates[0])[1], "")

  node_shape_is_flex = endswith(var.node_shape, ".Flex")
}

data "oci_containerengine_cluster_option" "all" {
  cluster_option_id = "all"
  compartment_id    = var.compartment_ocid
}

data "oci_containerengine_node_pool_option" "all" {
  node_pool_option_id = "all"
  compartment_id      = var.compartment_ocid
}

resource "oci_containerengine_cluster" "this" {
  #checkov:skip=CKV2_OCI_6:PodSecurityPolicy was removed in Kubernetes 1.25 and OKE cannot enable it on current versions; the step pods are confined by their own ServiceAccount without Kubernetes rights, namespace-scoped RBAC and a NetworkPolicy (charts/vdimport), and Pod Security Admission labels can be set per namespace.
  compartment_id     = var.compartment_ocid
  name               = "${var.name_prefix}-oke"
  vcn_id             = local.vcn_id
  kubernetes_version = local.kubernetes_version
  type               = "ENHANCED_CLUSTER"
  freeform_tags      = local.freeform_tags
  defined_tags       = var.defined_tags

  cluster_pod_network_options {
    cni_type = "FLANNEL_OVERLAY"
  }

  endpoint_config {
    subnet_id            = oci_core_subnet.this["api"].id
    nsg_ids              = [oci_core_network_security_group.api.id]
    is_public_ip_enabled = local.api_endpoint_public
  }

  options {
    service_lb_subnet_ids = [oci_core_subnet.this["lb"].id]

    kubernetes_network_config {
      pods_cidr     = var.pods_cidr
      services_cidr = var.services_cidr
    }

    # Tags for what Kubernetes creates: Airflow's PostgreSQL volume, the API load balancer.
    persistent_volume_config {
      freeform_tags = local.freeform_tags
      defined_tags  = var.defined_tags
    }

    service_lb_config {
      freeform_tags = local.freeform_tags
      defined_tags  = var.defined_tags
    }
  }

  lifecycle {
    precondition {
      condition     = contains(local.offered_kubernetes_versions, local.kubernetes_version)
      error_message = "kubernetes_version is not offered by OKE in this region; leave it empty for the newest."
    }
  }
}

resource "oci_containerengine_node_pool" "this" {
  cluster_id         = oci_containerengine_cluster.this.id
  compartment_id     = var.compartment_ocid
  name               = "${var.name_prefix}-nodes"
  kubernetes_version = local.kubernetes_version
  node_shape         = var.node_shape
  ssh_public_key     = var.node_ssh_public_key == "" ? null : var.node_ssh_public_key
  freeform_tags      = local.freeform_tags
  defined_tags       = var.defined_tags

  dynamic "node_shape_config" {
    for_each = local.node_shape_is_flex ? [1] : []
    content {
      ocpus         = var.node_ocpus
      memory_in_gbs = var.node_memory_gb
    }
  }

  node_source_details {
    source_type             = "IMAGE"
    image_id                = local.node_image_id
    boot_volume_size_in_gbs = var.node_boot_volume_gb
  }

  node_config_details {
    size                                = var.node_count
    nsg_ids                             = [oci_core_network_security_group.nodes.id]
    is_pv_encryption_in_transit_enabled = true
    freeform_tags                       = local.freeform_tags
    defined_tags                        = var.defined_tags

    dynamic "placement_configs" {
      for_each = local.availability_domains
      content {
        availability_domain = placement_configs.value
        subnet_id           = oci_core_subnet.this["nodes"].id
      }
    }

    node_pool_pod_network_option_details {
      cni_type = "FLANNEL_OVERLAY"
    }
  }

  initial_node_labels {
    key   = "app.kubernetes.io/part-of"
    value = "vdimport"
  }

  lifecycle {
    precondition {
      condition     = local.node_image_id != ""
      error_message = "No Oracle Linux 8 OKE node image was found for the Kubernetes version; set node_image_id."
    }
  }
}

# The kubeconfig's CA certificate for the kubernetes and helm providers (the token comes from
# `oci ce cluster generate-token`, see versions.tf).
data "oci_containerengine_cluster_kube_config" "this" {
  cluster_id    = oci_containerengine_cluster.this.id
  endpoint      = local.api_endpoint_public ? "PUBLIC_ENDPOINT" : "PRIVATE_ENDPOINT"
  token_version = "2.0.0"
}

# Airflow's namespace. It must exist before either release: the vdimport chart writes the
# ConfigMap vdimport-dag-settings into it, and Airflow's Secrets (helm.tf) live there.
# Two-stage path: `kubectl create namespace airflow` (README.md).
resource "kubernetes_namespace_v1" "airflow" {
  count = var.deploy_helm_releases ? 1 : 0

  metadata {
    name = local.airflow_namespace
    labels = {
      "app.kubernetes.io/part-of" = "vdimport"
    }
  }

  # Nodes first: a namespace is nothing without them, and destroy then removes it (and the
  # releases) before the node pool.
  depends_on = [oci_containerengine_node_pool.this]
}
