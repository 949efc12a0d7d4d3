# OCI DevOps (enable_devops): builds both images from this repository with the build specs in
# images/*/build_spec.yaml and delivers them to the OCIR repositories of registry.tf; the
# function's build then triggers a deployment pipeline that points vdimport-trigger at the new
# image.
#
#   GitHub --(connection, PAT from Vault)--> mirrored code repository (synced every 30 min)
#     --(trigger: push to git_branch)--> build pipeline "worker":   Managed Build -> Deliver Artifacts
#                                        build pipeline "function": Managed Build -> Deliver Artifacts
#                                                                   -> Trigger Deployment -> Deploy Function
#
# Names shared with the build specs: output artifacts vdimport-worker-image and
# vdimport-function-image, exported variables WORKER_IMAGE_TAG and FUNCTION_IMAGE_TAG.
# The deployment part exists once the function does (function_image_tag): the first function
# image comes from a manual run of the function build pipeline (README.md).

locals {
  devops_count     = var.enable_devops ? 1 : 0
  deploy_count     = var.enable_devops && local.create_function ? 1 : 0
  build_source     = "vdimport" # the build source name; build specs run from its root
  build_runner_img = "OL8_X86_64_STANDARD_10"

  # Per image: build spec, output artifact, exported tag variable, target repository.
  image_builds = {
    worker = {
      build_spec   = "images/worker/build_spec.yaml"
      artifact     = "vdimport-worker-image"
      tag_variable = "WORKER_IMAGE_TAG"
      repository   = local.worker_image_repository
      paths        = ["images/worker/**"]
    }
    function = {
      build_spec   = "images/function/build_spec.yaml"
      artifact     = "vdimport-function-image"
      tag_variable = "FUNCTION_IMAGE_TAG"
      repository   = local.function_image_repository
      paths        = ["images/function/**"]
    }
  }
  image_build_keys = var.enable_devops ? toset(keys(local.image_builds)) : toset([])
}

# Build and deployment results go here; notification_email subscribes to it.
resource "oci_ons_notification_topic" "devops" {
  count = local.devops_count

  compartment_id = var.compartment_ocid
  name           = "${var.name_prefix}-devops"
  description    = "vdimport DevOps build and deployment notifications"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

resource "oci_ons_subscription" "devops_email" {
  count = var.enable_devops && var.notification_email != "" ? 1 : 0

  compartment_id = var.compartment_ocid
  topic_id       = oci_ons_notification_topic.devops[0].id
  protocol       = "EMAIL"
  endpoint       = var.notification_email
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

resource "oci_devops_project" "this" {
  count = local.devops_count

  compartment_id = var.compartment_ocid
  name           = "${var.name_prefix}-devops"
  description    = "vdimport: builds of the step runner and function images, deployment of the function"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags

  notification_config {
    topic_id = oci_ons_notification_topic.devops[0].id
  }

  lifecycle {
    precondition {
      condition     = var.git_repo_url != "" && var.github_token_secret_ocid != ""
      error_message = "enable_devops needs git_repo_url and github_token_secret_ocid (a Vault secret with a GitHub personal access token)."
    }
  }

  # Build runs act as the pipelines' resource principals (iam.tf).
  depends_on = [oci_identity_policy.devops]
}

resource "oci_devops_connection" "github" {
  count = local.devops_count

  project_id      = oci_devops_project.this[0].id
  connection_type = "GITHUB_ACCESS_TOKEN"
  access_token    = var.github_token_secret_ocid
  display_name    = "${var.name_prefix}-github"
  description     = "GitHub access for mirroring ${var.git_repo_url}"
  freeform_tags   = local.freeform_tags
  defined_tags    = var.defined_tags
}

resource "oci_devops_repository" "mirror" {
  count = local.devops_count

  project_id      = oci_devops_project.this[0].id
  name            = "vdimport"
  repository_type = "MIRRORED"
  default_branch  = var.git_branch
  description     = "Mirror of ${var.git_repo_url}"
  freeform_tags   = local.freeform_tags
  defined_tags    = var.defined_tags

  mirror_repository_config {
    connector_id   = oci_devops_connection.github[0].id
    repository_url = var.git_repo_url

    trigger_schedule {
      schedule_type = "DEFAULT" # every 30 minutes
    }
  }
}

# Where the Deliver Artifacts stages push: the OCIR path with the build's exported tag.
resource "oci_devops_deploy_artifact" "image" {
  for_each = local.image_build_keys

  project_id                 = oci_devops_project.this[0].id
  display_name               = local.image_builds[each.key].artifact
  description                = "${local.image_builds[each.key].repository}:<${local.image_builds[each.key].tag_variable}>"
  deploy_artifact_type       = "DOCKER_IMAGE"
  argument_substitution_mode = "SUBSTITUTE_PLACEHOLDERS"
  freeform_tags              = local.freeform_tags
  defined_tags               = var.defined_tags

  deploy_artifact_source {
    deploy_artifact_source_type = "OCIR"
    image_uri                   = "${local.image_builds[each.key].repository}:$${${local.image_builds[each.key].tag_variable}}"
  }
}

resource "oci_devops_build_pipeline" "image" {
  for_each = local.image_build_keys

  project_id    = oci_devops_project.this[0].id
  display_name  = "${var.name_prefix}-${each.key}-image"
  description   = "Builds ${local.image_builds[each.key].build_spec} and pushes ${local.image_builds[each.key].repository}"
  freeform_tags = local.freeform_tags
  defined_tags  = var.defined_tags
}

resource "oci_devops_build_pipeline_stage" "build" {
  for_each = local.image_build_keys

  build_pipeline_id                  = oci_devops_build_pipeline.image[each.key].id
  build_pipeline_stage_type          = "BUILD"
  display_name                       = "build"
  description                        = "Managed Build with ${local.image_builds[each.key].build_spec}"
  image                              = local.build_runner_img
  build_spec_file                    = local.image_builds[each.key].build_spec
  primary_build_source               = local.build_source
  stage_execution_timeout_in_seconds = 1800
  freeform_tags                      = local.freeform_tags
  defined_tags                       = var.defined_tags

  build_runner_shape_config {
    build_runner_type = "DEFAULT"
  }

  build_source_collection {
    items {
      name            = local.build_source
      connection_type = "DEVOPS_CODE_REPOSITORY"
      repository_id   = oci_devops_repository.mirror[0].id
      repository_url  = oci_devops_repository.mirror[0].http_url
      branch          = var.git_branch
    }
  }

  build_pipeline_stage_predecessor_collection {
    items {
      id = oci_devops_build_pipeline.image[each.key].id
    }
  }
}

resource "oci_devops_build_pipeline_stage" "deliver" {
  for_each = local.image_build_keys

  build_pipeline_id         = oci_devops_build_pipeline.image[each.key].id
  build_pipeline_stage_type = "DELIVER_ARTIFACT"
  display_name              = "deliver"
  description               = "Push ${local.image_builds[each.key].artifact} to OCIR"
  freeform_tags             = local.freeform_tags
  defined_tags              = var.defined_tags

  deliver_artifact_collection {
    items {
      artifact_name = local.image_builds[each.key].artifact
      artifact_id   = oci_devops_deploy_artifact.image[each.key].id
    }
  }

  build_pipeline_stage_predecessor_collection {
    items {
      id = oci_devops_build_pipeline_stage.build[each.key].id
    }
  }
}

# Each push to git_branch that touches an image's folder (after the mirror syncs) builds it.
resource "oci_devops_trigger" "push" {
  count = local.devops_count

  project_id     = oci_devops_project.this[0].id
  display_name   = "${var.name_prefix}-push"
  description    = "Build the images on pushes to ${var.git_branch}"
  trigger_source = "DEVOPS_CODE_REPOSITORY"
  repository_id  = oci_devops_repository.mirror[0].id
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags

  dynamic "actions" {
    for_each = local.image_build_keys
    content {
      type              = "TRIGGER_BUILD_PIPELINE"
      build_pipeline_id = oci_devops_build_pipeline.image[actions.value].id

      filter {
        trigger_source = "DEVOPS_CODE_REPOSITORY"
        events         = ["PUSH"]

        include {
          head_ref = var.git_branch
          file_filter {
            file_paths = local.image_builds[actions.value].paths
          }
        }
      }
    }
  }
}

# ---------------------------------------------------------------------------------------------
# Deployment of the function (once it exists)
# ---------------------------------------------------------------------------------------------

resource "oci_devops_deploy_environment" "function" {
  count = local.deploy_count

  project_id              = oci_devops_project.this[0].id
  display_name            = "${var.name_prefix}-function"
  description             = "The OCI Function ${local.function_name}"
  deploy_environment_type = "FUNCTION"
  function_id             = oci_functions_function.trigger[0].id
  freeform_tags           = local.freeform_tags
  defined_tags            = var.defined_tags
}

resource "oci_devops_deploy_pipeline" "function" {
  count = local.deploy_count

  project_id    = oci_devops_project.this[0].id
  display_name  = "${var.name_prefix}-function"
  description   = "Points ${local.function_name} at vdimport-function:<FUNCTION_IMAGE_TAG>"
  freeform_tags = local.freeform_tags
  defined_tags  = var.defined_tags

  deploy_pipeline_parameters {
    items {
      name          = "FUNCTION_IMAGE_TAG"
      default_value = var.function_image_tag
      description   = "Tag of the function image; the build pipeline passes its exported value"
    }
  }
}

resource "oci_devops_deploy_stage" "function" {
  count = local.deploy_count

  deploy_pipeline_id              = oci_devops_deploy_pipeline.function[0].id
  deploy_stage_type               = "DEPLOY_FUNCTION"
  display_name                    = "deploy-function"
  description                     = "Update ${local.function_name} to the delivered image"
  function_deploy_environment_id  = oci_devops_deploy_environment.function[0].id
  docker_image_deploy_artifact_id = oci_devops_deploy_artifact.image["function"].id
  freeform_tags                   = local.freeform_tags
  defined_tags                    = var.defined_tags

  deploy_stage_predecessor_collection {
    items {
      id = oci_devops_deploy_pipeline.function[0].id
    }
  }
}

resource "oci_devops_build_pipeline_stage" "trigger_deployment" {
  count = local.deploy_count

  build_pipeline_id              = oci_devops_build_pipeline.image["function"].id
  build_pipeline_stage_type      = "TRIGGER_DEPLOYMENT_PIPELINE"
  display_name                   = "deploy"
  description                    = "Run the function's deployment pipeline with FUNCTION_IMAGE_TAG"
  deploy_pipeline_id             = oci_devops_deploy_pipeline.function[0].id
  is_pass_all_parameters_enabled = true
  freeform_tags                  = local.freeform_tags
  defined_tags                   = var.defined_tags

  build_pipeline_stage_predecessor_collection {
    items {
      id = oci_devops_build_pipeline_stage.deliver["function"].id
    }
  }
}
