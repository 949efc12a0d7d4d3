# Terraform and provider versions, and the provider configurations.
#
# oracle/oci 7.32 is the last 7.x release (January 2026); every argument used here is in its
# documentation. hashicorp/helm 3.x takes `kubernetes = { ... }` and `set = [ ... ]` as
# attributes (not blocks); hashicorp/kubernetes 3.x is used with its *_v1 resources only.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    oci = {
      source  = "oracle/oci"
      version = "~> 7.32"
    }
    helm = {
      source  = "hashicorp/helm"
      version = "~> 3.1"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 3.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.7"
    }
  }
}

# Authentication comes from the environment: Resource Manager's own principal, or the OCI CLI
# config file (~/.oci/config, profile `oci_config_profile` or DEFAULT) when run locally.
provider "oci" {
  region              = var.region
  config_file_profile = var.oci_config_profile == "" ? null : var.oci_config_profile
}

# The Kubernetes and Helm providers reach the OKE API endpoint (public when
# `allowed_source_cidr` is set, else private: run Terraform from inside the VCN) with a
# short-lived token from `oci ce cluster generate-token`, the same exec plugin the kubeconfig
# of `oci ce cluster create-kubeconfig` uses. They are only used when `deploy_helm_releases`
# is true; README.md describes the two-stage alternative.
provider "kubernetes" {
  host                   = local.kubernetes_api_url
  cluster_ca_certificate = local.kubernetes_ca_certificate

  exec {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "oci"
    args        = local.kubernetes_token_args
  }
}

provider "helm" {
  kubernetes = {
    host                   = local.kubernetes_api_url
    cluster_ca_certificate = local.kubernetes_ca_certificate
    exec = {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "oci"
      args        = local.kubernetes_token_args
    }
  }
}
