# Runtime images from this stack's OCIR (mirror_runtime_images): the images the Airflow pods and
# the step pods' XCom sidecar run, copied once into private repositories <prefix>/mirror/<name>.
#
# Without it the nodes pull apache/airflow, bitnamilegacy/postgresql and alpine from Docker Hub
# and git-sync from registry.k8s.io, all through the one NAT gateway: Docker Hub limits
# anonymous pulls per source IP, and every node shares that IP, so a new node pool or a wave of
# rescheduled pods can end in ErrImagePull (toomanyrequests). With it the nodes pull from the
# region's OCIR, through the service gateway, with the pull user of imagepull.tf (its policy
# reads every repository in compartment_ocid, these too).
#
# Terraform makes the repositories and points the charts at them; it does not copy the images
# (neither Terraform nor Resource Manager has a registry client): the output mirror_commands
# lists the `skopeo copy` lines an operator runs once, before the charts use the copies
# (README.md, "Runtime images").

locals {
  # The one list of runtime images: name => the public source and its tag (the Airflow chart's
  # default, or our pin in charts/airflow/values.yaml and charts/vdimport/values.yaml;
  # tests/terraform/test_runtime_images.py checks both against the charts), the chart whose
  # values point at the copy (value key => the part of the copy it takes: registry, path below
  # the registry, repository, tag or image), and the place in mirror_commands (what the install
  # starts first: the database, the migration job, git-sync in every DAG-parsing pod, then the
  # step pods of the first import).
  runtime_images = {
    "postgresql" = {
      order  = 1
      source = "docker.io/bitnamilegacy/postgresql" # the Airflow chart's PostgreSQL (bitnami subchart: registry + repository)
      tag    = "16.1.0-debian-11-r15"
      chart  = "airflow"
      values = {
        "postgresql.image.registry"   = "registry"
        "postgresql.image.repository" = "path"
        "postgresql.image.tag"        = "tag"
      }
    }
    "airflow" = {
      order = 2
      # defaultAirflowRepository is what every Airflow image falls back to (images.airflow,
      # images.pod_template for the KubernetesExecutor's task pods, the jobs), so one value moves all.
      source = "docker.io/apache/airflow"
      tag    = yamldecode(file("${path.module}/../charts/airflow/values.yaml")).defaultAirflowTag
      chart  = "airflow"
      values = {
        "defaultAirflowRepository" = "repository"
        "defaultAirflowTag"        = "tag"
      }
    }
    "git-sync" = {
      order  = 3
      source = "registry.k8s.io/git-sync/git-sync"
      tag    = "v4.4.2"
      chart  = "airflow"
      values = {
        "images.gitSync.repository" = "repository"
        "images.gitSync.tag"        = "tag"
      }
    }
    "xcom-sidecar" = {
      order  = 4
      source = "docker.io/library/alpine" # charts/vdimport airflow.xcomSidecarImage (the provider's default image)
      tag    = "3.24.2"
      chart  = "vdimport"
      values = {
        "airflow.xcomSidecarImage" = "image"
      }
    }
  }

  runtime_image_names     = [for entry in sort([for name, image in local.runtime_images : "${image.order} ${name}"]) : split(" ", entry)[1]]
  mirror_repository_names = { for name, image in local.runtime_images : name => "${var.name_prefix}/mirror/${name}" }

  # Where each copy is, in the parts the charts' values take.
  mirror_images = { for name, image in local.runtime_images : name => {
    registry   = local.ocir_host
    path       = "${local.ocir_namespace}/${local.mirror_repository_names[name]}"
    repository = "${local.ocir_host}/${local.ocir_namespace}/${local.mirror_repository_names[name]}"
    tag        = image.tag
    image      = "${local.ocir_host}/${local.ocir_namespace}/${local.mirror_repository_names[name]}:${image.tag}"
  } }

  # Chart => the values that point it at the copies (none without mirror_runtime_images). Both
  # Helm paths take these: helm.tf (releases) and outputs.tf (helm_commands).
  mirror_settings = { for chart in ["airflow", "vdimport"] : chart => merge([
    for name, image in local.runtime_images : { for key, part in image.values : key => local.mirror_images[name][part] }
    if var.mirror_runtime_images && image.chart == chart
  ]...) }

  # The Airflow pods pull the copies with the stack's pull secret (the chart's imagePullSecrets;
  # the bitnami subchart takes its own). The step pods, and so their XCom sidecar, already have
  # it (stepRunner.image.pullSecrets).
  mirror_pull_secrets = var.mirror_runtime_images && local.pull_secret_name != "" ? [local.pull_secret_name] : []
  mirror_airflow_lists = length(local.mirror_pull_secrets) == 0 ? {} : {
    "imagePullSecrets"             = local.mirror_pull_secrets
    "postgresql.image.pullSecrets" = local.mirror_pull_secrets
  }

  # The Airflow release's part as values documents, one per key ({"a":{"b":"value"}} for
  # a.b=value), merged by Helm after charts/airflow/values.yaml as with `-f` ...
  mirror_airflow_values = [for key, value in merge(local.mirror_settings["airflow"], local.mirror_airflow_lists) : join("", concat(
    [for part in split(".", key) : "{${jsonencode(part)}:"], [jsonencode(value)], [for part in split(".", key) : "}"],
  ))]
  # ... and as the flags of helm_commands (strings stay strings: --set-string).
  mirror_helm_flags = { for chart, settings in local.mirror_settings : chart => join("", concat(
    [for key, value in settings : " --set-string ${key}=${value}"],
    chart == "airflow" ? [for key, value in local.mirror_airflow_lists : " --set '${key}={${join(",", value)}}'"] : [],
  )) }

  # What the operator runs before the charts use the copies (output mirror_commands).
  mirror_commands = [for name in local.runtime_image_names :
    "skopeo copy --all docker://${local.runtime_images[name].source}:${local.runtime_images[name].tag} docker://${local.ocir_host}/${local.ocir_namespace}/${oci_artifacts_container_repository.mirror[name].display_name}:${local.runtime_images[name].tag}"
    if var.mirror_runtime_images
  ]
}

resource "oci_artifacts_container_repository" "mirror" {
  for_each = var.mirror_runtime_images ? local.mirror_repository_names : {}

  compartment_id = var.compartment_ocid
  display_name   = each.value
  is_public      = false # copies of public images, but pulled only by this stack's nodes
  is_immutable   = false # mirror_commands may run again (same tag, same digest)
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags

  readme {
    format  = "TEXT_MARKDOWN"
    content = "vdimport runtime image: a copy of ${local.runtime_images[each.key].source}:${local.runtime_images[each.key].tag} (terraform output mirror_commands)."
  }

  lifecycle {
    precondition {
      condition     = local.pull_secret_name != ""
      error_message = "mirror_runtime_images: the mirror repositories are private, so the pods need a pull secret. On the two-stage path set image_pull_secret_name to a docker-registry Secret you create in the namespaces vdimport and airflow (README.md, \"Runtime images\")."
    }
  }
}

# The pull secret of imagepull.tf again, in the Airflow namespace (Secrets are namespaced): the
# same user, token and registry.
resource "kubernetes_secret_v1" "ocir_pull_airflow" {
  count = local.create_pull_secret && var.mirror_runtime_images ? 1 : 0

  metadata {
    name      = local.pull_secret_name
    namespace = kubernetes_namespace_v1.airflow[0].metadata[0].name
    labels = {
      "app.kubernetes.io/part-of"    = "vdimport"
      "app.kubernetes.io/managed-by" = "terraform"
    }
  }

  type = "kubernetes.io/dockerconfigjson"
  data = kubernetes_secret_v1.ocir_pull[0].data
}
