# Network: a VCN (or an existing one) with five regional subnets, NAT, service and (only for a
# public API endpoint) internet gateways, route tables, and security rules that open only what
# the flows below need.
#
#   subnet     what lives there                         reaches
#   api        OKE Kubernetes API endpoint (NSG api)    OCI services; kubelets
#   nodes      OKE worker nodes (NSG nodes)             everything (images from the internet via NAT)
#   lb         Kubernetes service load balancers        NodePorts of the nodes
#              (the Airflow API's internal LB, NSG api_lb: made here and attached by the
#              Service's annotations, so OKE's cloud controller manages no security rules and
#              needs no IAM grant for NSGs; it admits only the function NSG on :8080)
#   functions  OCI Functions (NSG functions)            Object Storage, Vault (service gateway); Airflow API LB :8080
#   workers    the temporary worker VMs                 HTTPS only: Object Storage (PAR download), OCI APIs, yum
#
# Nothing listens for traffic from the internet. With allowed_source_cidr set, the API endpoint
# gets a public IP that admits that CIDR on 6443 only.
#
# Security lists carry only a stateless ICMP "fragmentation needed" rule (path MTU discovery)
# plus what must live on a subnet (the LB's egress to NodePorts, the worker VMs' egress: the
# step runner launches them without an NSG). Everything else is in NSGs.

locals {
  create_vcn = var.existing_vcn_id == ""
  vcn_id     = local.create_vcn ? oci_core_vcn.this[0].id : var.existing_vcn_id
  vcn_cidr   = local.create_vcn ? var.vcn_cidr : data.oci_core_vcn.existing[0].cidr_blocks[0]

  # Subnets default to consecutive /24s of the VCN (10.0.0.0/24 ... 10.0.4.0/24 for 10.0.0.0/16).
  subnet_newbits       = 24 - tonumber(split("/", local.vcn_cidr)[1])
  api_subnet_cidr      = var.api_subnet_cidr != "" ? var.api_subnet_cidr : cidrsubnet(local.vcn_cidr, local.subnet_newbits, 0)
  node_subnet_cidr     = var.node_subnet_cidr != "" ? var.node_subnet_cidr : cidrsubnet(local.vcn_cidr, local.subnet_newbits, 1)
  lb_subnet_cidr       = var.lb_subnet_cidr != "" ? var.lb_subnet_cidr : cidrsubnet(local.vcn_cidr, local.subnet_newbits, 2)
  function_subnet_cidr = var.function_subnet_cidr != "" ? var.function_subnet_cidr : cidrsubnet(local.vcn_cidr, local.subnet_newbits, 3)
  worker_subnet_cidr   = var.worker_subnet_cidr != "" ? var.worker_subnet_cidr : cidrsubnet(local.vcn_cidr, local.subnet_newbits, 4)

  api_endpoint_public = var.allowed_source_cidr != ""

  nat_gateway_id      = local.create_vcn ? oci_core_nat_gateway.this[0].id : var.existing_nat_gateway_id
  service_gateway_id  = local.create_vcn ? oci_core_service_gateway.this[0].id : var.existing_service_gateway_id
  internet_gateway_id = local.create_vcn ? one(oci_core_internet_gateway.this[*].id) : var.existing_internet_gateway_id

  # "All <region> Services In Oracle Services Network": Object Storage, OCIR, the OCI APIs, yum.
  osn_service_id   = data.oci_core_services.all_osn.services[0].id
  osn_service_cidr = data.oci_core_services.all_osn.services[0].cidr_block

  vcn_dns_label = substr(replace(var.name_prefix, "-", ""), 0, 15)
  # Subnet DNS labels need a VCN with one (an existing VCN may have none).
  subnet_dns = local.create_vcn || try(length(data.oci_core_vcn.existing[0].dns_label) > 0, false)

  nsg_ids = {
    api       = oci_core_network_security_group.api.id
    nodes     = oci_core_network_security_group.nodes.id
    functions = oci_core_network_security_group.functions.id
    api_lb    = oci_core_network_security_group.api_lb.id
  }

  # One entry per NSG rule, on top of these defaults (so every entry has every attribute).
  nsg_rule_defaults = { port_min = null, port_max = null, icmp_type = null, icmp_code = null }
  nsg_rules = merge(
    {
      api_ingress_kubernetes_api_from_nodes = merge(local.nsg_rule_defaults, {
        nsg         = "api"
        direction   = "INGRESS"
        protocol    = "6"
        peer        = oci_core_network_security_group.nodes.id
        peer_type   = "NETWORK_SECURITY_GROUP"
        port_min    = 6443
        port_max    = 6443
        description = "Kubernetes API from the worker nodes"
      })
      api_ingress_proxymux_from_nodes = merge(local.nsg_rule_defaults, {
        nsg         = "api"
        direction   = "INGRESS"
        protocol    = "6"
        peer        = oci_core_network_security_group.nodes.id
        peer_type   = "NETWORK_SECURITY_GROUP"
        port_min    = 12250
        port_max    = 12250
        description = "OKE node communication and the workload identity token exchange from the nodes"
      })
      api_ingress_path_mtu_from_nodes = merge(local.nsg_rule_defaults, {
        nsg         = "api"
        direction   = "INGRESS"
        protocol    = "1"
        peer        = oci_core_network_security_group.nodes.id
        peer_type   = "NETWORK_SECURITY_GROUP"
        icmp_type   = 3
        icmp_code   = 4
        description = "Path MTU discovery"
      })
      api_egress_oci_services = merge(local.nsg_rule_defaults, {
        nsg         = "api"
        direction   = "EGRESS"
        protocol    = "6"
        peer        = local.osn_service_cidr
        peer_type   = "SERVICE_CIDR_BLOCK"
        port_min    = 443
        port_max    = 443
        description = "Control plane to OCI services through the service gateway"
      })
      api_egress_nodes = merge(local.nsg_rule_defaults, {
        nsg         = "api"
        direction   = "EGRESS"
        protocol    = "6"
        peer        = oci_core_network_security_group.nodes.id
        peer_type   = "NETWORK_SECURITY_GROUP"
        description = "Control plane to kubelets and pods"
      })
      api_egress_path_mtu_to_nodes = merge(local.nsg_rule_defaults, {
        nsg         = "api"
        direction   = "EGRESS"
        protocol    = "1"
        peer        = oci_core_network_security_group.nodes.id
        peer_type   = "NETWORK_SECURITY_GROUP"
        icmp_type   = 3
        icmp_code   = 4
        description = "Path MTU discovery"
      })

      nodes_ingress_nodes = merge(local.nsg_rule_defaults, {
        nsg         = "nodes"
        direction   = "INGRESS"
        protocol    = "all"
        peer        = oci_core_network_security_group.nodes.id
        peer_type   = "NETWORK_SECURITY_GROUP"
        description = "Node to node and pod to pod (flannel VXLAN)"
      })
      nodes_ingress_control_plane = merge(local.nsg_rule_defaults, {
        nsg         = "nodes"
        direction   = "INGRESS"
        protocol    = "6"
        peer        = oci_core_network_security_group.api.id
        peer_type   = "NETWORK_SECURITY_GROUP"
        description = "Control plane to kubelets and pods"
      })
      nodes_ingress_path_mtu = merge(local.nsg_rule_defaults, {
        nsg         = "nodes"
        direction   = "INGRESS"
        protocol    = "1"
        peer        = "0.0.0.0/0"
        peer_type   = "CIDR_BLOCK"
        icmp_type   = 3
        icmp_code   = 4
        description = "Path MTU discovery"
      })
      nodes_ingress_node_ports_from_lbs = merge(local.nsg_rule_defaults, {
        nsg         = "nodes"
        direction   = "INGRESS"
        protocol    = "6"
        peer        = local.lb_subnet_cidr
        peer_type   = "CIDR_BLOCK"
        port_min    = 30000
        port_max    = 32767
        description = "Service load balancers to NodePorts (the Airflow API)"
      })
      nodes_ingress_health_checks_from_lbs = merge(local.nsg_rule_defaults, {
        nsg         = "nodes"
        direction   = "INGRESS"
        protocol    = "6"
        peer        = local.lb_subnet_cidr
        peer_type   = "CIDR_BLOCK"
        port_min    = 10256
        port_max    = 10256
        description = "Load balancer health checks of kube-proxy"
      })
      nodes_egress_all = merge(local.nsg_rule_defaults, {
        nsg         = "nodes"
        direction   = "EGRESS"
        protocol    = "all"
        peer        = "0.0.0.0/0"
        peer_type   = "CIDR_BLOCK"
        description = "Image pulls (NAT), OCI APIs and OCIR (service gateway), the API endpoint and other nodes"
      })

      api_lb_ingress_from_functions = merge(local.nsg_rule_defaults, {
        nsg         = "api_lb"
        direction   = "INGRESS"
        protocol    = "6"
        peer        = oci_core_network_security_group.functions.id
        peer_type   = "NETWORK_SECURITY_GROUP"
        port_min    = local.airflow_api_port
        port_max    = local.airflow_api_port
        description = "The function's calls to the Airflow API (POST /auth/token, POST .../dagRuns)"
      })

      functions_egress_oci_services = merge(local.nsg_rule_defaults, {
        nsg         = "functions"
        direction   = "EGRESS"
        protocol    = "6"
        peer        = local.osn_service_cidr
        peer_type   = "SERVICE_CIDR_BLOCK"
        port_min    = 443
        port_max    = 443
        description = "Object Storage (HEAD/GET of the upload) and the Vault secret through the service gateway"
      })
      functions_egress_airflow_api = merge(local.nsg_rule_defaults, {
        nsg         = "functions"
        direction   = "EGRESS"
        protocol    = "6"
        peer        = local.lb_subnet_cidr
        peer_type   = "CIDR_BLOCK"
        port_min    = local.airflow_api_port
        port_max    = local.airflow_api_port
        description = "The Airflow API server's internal load balancer"
      })
    },
    # Only with a public endpoint (a filtering for, not "cond ? {...} : {}", keeps one type).
    { for k, v in {
      api_ingress_kubernetes_api_from_admins = merge(local.nsg_rule_defaults, {
        nsg         = "api"
        direction   = "INGRESS"
        protocol    = "6"
        peer        = var.allowed_source_cidr
        peer_type   = "CIDR_BLOCK"
        port_min    = 6443
        port_max    = 6443
        description = "kubectl, helm and port-forward (Airflow UI) from allowed_source_cidr"
      })
    } : k => v if local.api_endpoint_public },
  )
}

data "oci_core_vcn" "existing" {
  count  = local.create_vcn ? 0 : 1
  vcn_id = var.existing_vcn_id
}

data "oci_core_services" "all_osn" {
  filter {
    name   = "name"
    values = ["All .* Services In Oracle Services Network"]
    regex  = true
  }
}

resource "oci_core_vcn" "this" {
  count = local.create_vcn ? 1 : 0

  compartment_id = var.compartment_ocid
  display_name   = "${var.name_prefix}-vcn"
  cidr_blocks    = [var.vcn_cidr]
  dns_label      = local.vcn_dns_label
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

# A new VCN's default security list admits SSH from anywhere. No subnet here uses it, but it
# is emptied down to path MTU discovery so that nobody attaches it by accident.
resource "oci_core_default_security_list" "this" {
  count = local.create_vcn ? 1 : 0

  manage_default_resource_id = oci_core_vcn.this[0].default_security_list_id
  display_name               = "${var.name_prefix}-default (unused)"
  freeform_tags              = local.freeform_tags
  defined_tags               = var.defined_tags

  ingress_security_rules {
    description = "Path MTU discovery"
    protocol    = "1"
    source      = "0.0.0.0/0"
    stateless   = true
    icmp_options {
      type = 3
      code = 4
    }
  }
}

resource "oci_core_nat_gateway" "this" {
  count = local.create_vcn ? 1 : 0

  compartment_id = var.compartment_ocid
  vcn_id         = local.vcn_id
  display_name   = "${var.name_prefix}-nat"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

resource "oci_core_service_gateway" "this" {
  count = local.create_vcn ? 1 : 0

  compartment_id = var.compartment_ocid
  vcn_id         = local.vcn_id
  display_name   = "${var.name_prefix}-sgw"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags

  services {
    service_id = local.osn_service_id
  }
}

# Only a public Kubernetes API endpoint needs the internet gateway.
resource "oci_core_internet_gateway" "this" {
  count = local.create_vcn && local.api_endpoint_public ? 1 : 0

  compartment_id = var.compartment_ocid
  vcn_id         = local.vcn_id
  display_name   = "${var.name_prefix}-igw"
  enabled        = true
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

# ---------------------------------------------------------------------------------------------
# Route tables
# ---------------------------------------------------------------------------------------------

# Nodes, load balancers and a private API endpoint: OCI services through the service gateway,
# the rest of the internet through NAT (container images from Docker Hub, quay.io, ...).
resource "oci_core_route_table" "private" {
  compartment_id = var.compartment_ocid
  vcn_id         = local.vcn_id
  display_name   = "${var.name_prefix}-private"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags

  route_rules {
    description       = "OCI services (Oracle Services Network)"
    destination       = local.osn_service_cidr
    destination_type  = "SERVICE_CIDR_BLOCK"
    network_entity_id = local.service_gateway_id
  }

  route_rules {
    description       = "Internet egress"
    destination       = "0.0.0.0/0"
    destination_type  = "CIDR_BLOCK"
    network_entity_id = local.nat_gateway_id
  }

  lifecycle {
    precondition {
      condition     = local.create_vcn || (var.existing_nat_gateway_id != "" && var.existing_service_gateway_id != "")
      error_message = "With existing_vcn_id, set existing_nat_gateway_id and existing_service_gateway_id (gateways of that VCN)."
    }
  }
}

# Functions: only OCI services (Object Storage, Vault); the Airflow API is inside the VCN.
resource "oci_core_route_table" "functions" {
  compartment_id = var.compartment_ocid
  vcn_id         = local.vcn_id
  display_name   = "${var.name_prefix}-functions"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags

  route_rules {
    description       = "OCI services (Oracle Services Network)"
    destination       = local.osn_service_cidr
    destination_type  = "SERVICE_CIDR_BLOCK"
    network_entity_id = local.service_gateway_id
  }
}

# Worker VMs: OCI services, and the internet only if worker_internet_egress.
resource "oci_core_route_table" "workers" {
  compartment_id = var.compartment_ocid
  vcn_id         = local.vcn_id
  display_name   = "${var.name_prefix}-workers"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags

  route_rules {
    description       = "OCI services (Oracle Services Network): Object Storage, Run Command, yum mirrors"
    destination       = local.osn_service_cidr
    destination_type  = "SERVICE_CIDR_BLOCK"
    network_entity_id = local.service_gateway_id
  }

  dynamic "route_rules" {
    for_each = var.worker_internet_egress ? [local.nat_gateway_id] : []
    content {
      description       = "Internet egress (worker_internet_egress)"
      destination       = "0.0.0.0/0"
      destination_type  = "CIDR_BLOCK"
      network_entity_id = route_rules.value
    }
  }
}

# A public Kubernetes API endpoint (allowed_source_cidr): the internet gateway.
resource "oci_core_route_table" "public" {
  count = local.api_endpoint_public ? 1 : 0

  compartment_id = var.compartment_ocid
  vcn_id         = local.vcn_id
  display_name   = "${var.name_prefix}-public"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags

  route_rules {
    description       = "Internet (answers to allowed_source_cidr)"
    destination       = "0.0.0.0/0"
    destination_type  = "CIDR_BLOCK"
    network_entity_id = local.internet_gateway_id
  }

  lifecycle {
    precondition {
      condition     = local.create_vcn || var.existing_internet_gateway_id != ""
      error_message = "With existing_vcn_id and allowed_source_cidr, set existing_internet_gateway_id (the public API endpoint needs it)."
    }
  }
}

# ---------------------------------------------------------------------------------------------
# Security lists
# ---------------------------------------------------------------------------------------------

resource "oci_core_security_list" "api" {
  compartment_id = var.compartment_ocid
  vcn_id         = local.vcn_id
  display_name   = "${var.name_prefix}-api"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags

  ingress_security_rules {
    description = "Path MTU discovery (the rest is in NSG api)"
    protocol    = "1"
    source      = "0.0.0.0/0"
    stateless   = true
    icmp_options {
      type = 3
      code = 4
    }
  }
}

resource "oci_core_security_list" "nodes" {
  compartment_id = var.compartment_ocid
  vcn_id         = local.vcn_id
  display_name   = "${var.name_prefix}-nodes"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags

  ingress_security_rules {
    description = "Path MTU discovery (the rest is in NSG nodes)"
    protocol    = "1"
    source      = "0.0.0.0/0"
    stateless   = true
    icmp_options {
      type = 3
      code = 4
    }
  }
}

# The load balancers' frontend rules come from the NSG that OKE's cloud controller creates
# per Service (security-rule-management-mode: NSG, admitting loadBalancerSourceRanges); their
# way to the backends is allowed here.
resource "oci_core_security_list" "lb" {
  compartment_id = var.compartment_ocid
  vcn_id         = local.vcn_id
  display_name   = "${var.name_prefix}-lb"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags

  ingress_security_rules {
    description = "Path MTU discovery (listeners are opened by the cloud controller's NSG)"
    protocol    = "1"
    source      = "0.0.0.0/0"
    stateless   = true
    icmp_options {
      type = 3
      code = 4
    }
  }

  egress_security_rules {
    description = "To the NodePorts of the worker nodes"
    protocol    = "6"
    destination = local.node_subnet_cidr
    tcp_options {
      min = 30000
      max = 32767
    }
  }

  egress_security_rules {
    description = "Health checks of kube-proxy on the worker nodes"
    protocol    = "6"
    destination = local.node_subnet_cidr
    tcp_options {
      min = 10256
      max = 10256
    }
  }
}

resource "oci_core_security_list" "functions" {
  compartment_id = var.compartment_ocid
  vcn_id         = local.vcn_id
  display_name   = "${var.name_prefix}-functions"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags

  ingress_security_rules {
    description = "Path MTU discovery (the rest is in NSG functions; nothing connects to a function)"
    protocol    = "1"
    source      = "0.0.0.0/0"
    stateless   = true
    icmp_options {
      type = 3
      code = 4
    }
  }
}

# Worker VMs are launched by the step runner without an NSG, so their rules live here: no
# inbound ports at all (Run Command is polled by the agent), outbound HTTPS only.
resource "oci_core_security_list" "workers" {
  compartment_id = var.compartment_ocid
  vcn_id         = local.vcn_id
  display_name   = "${var.name_prefix}-workers"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags

  ingress_security_rules {
    description = "Path MTU discovery; no inbound ports"
    protocol    = "1"
    source      = "0.0.0.0/0"
    stateless   = true
    icmp_options {
      type = 3
      code = 4
    }
  }

  egress_security_rules {
    description = "HTTPS: the image through its PAR, Run Command and the OCI APIs, Oracle Linux yum mirrors"
    protocol    = "6"
    destination = "0.0.0.0/0"
    tcp_options {
      min = 443
      max = 443
    }
  }
}

# ---------------------------------------------------------------------------------------------
# Network security groups and their rules
# ---------------------------------------------------------------------------------------------

resource "oci_core_network_security_group" "api" {
  compartment_id = var.compartment_ocid
  vcn_id         = local.vcn_id
  display_name   = "${var.name_prefix}-api"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

resource "oci_core_network_security_group" "nodes" {
  compartment_id = var.compartment_ocid
  vcn_id         = local.vcn_id
  display_name   = "${var.name_prefix}-nodes"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

resource "oci_core_network_security_group" "functions" {
  compartment_id = var.compartment_ocid
  vcn_id         = local.vcn_id
  display_name   = "${var.name_prefix}-functions"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

# The Airflow API server's load balancer (charts/airflow/values.yaml: security-rule-management-mode None).
resource "oci_core_network_security_group" "api_lb" {
  compartment_id = var.compartment_ocid
  vcn_id         = local.vcn_id
  display_name   = "${var.name_prefix}-airflow-api-lb"
  freeform_tags  = local.freeform_tags
  defined_tags   = var.defined_tags
}

resource "oci_core_network_security_group_security_rule" "rules" {
  #checkov:skip=CKV_OCI_21:Stateful rules on purpose: every flow here is connection-oriented (TCP to the API, kubelets, NodePorts, OCI services) and needs its return traffic; stateless ingress would need mirrored egress rules on ephemeral ports, opening more, not less.
  for_each = local.nsg_rules

  network_security_group_id = local.nsg_ids[each.value.nsg]
  description               = each.value.description
  direction                 = each.value.direction
  protocol                  = each.value.protocol
  stateless                 = false

  source           = each.value.direction == "INGRESS" ? each.value.peer : null
  source_type      = each.value.direction == "INGRESS" ? each.value.peer_type : null
  destination      = each.value.direction == "EGRESS" ? each.value.peer : null
  destination_type = each.value.direction == "EGRESS" ? each.value.peer_type : null

  dynamic "tcp_options" {
    for_each = each.value.protocol == "6" && each.value.port_min != null ? [each.value] : []
    content {
      destination_port_range {
        min = tcp_options.value.port_min
        max = tcp_options.value.port_max
      }
    }
  }

  dynamic "icmp_options" {
    for_each = each.value.protocol == "1" && each.value.icmp_type != null ? [each.value] : []
    content {
      type = icmp_options.value.icmp_type
      code = icmp_options.value.icmp_code
    }
  }
}

# ---------------------------------------------------------------------------------------------
# Subnets (regional, all private unless the API endpoint is public)
# ---------------------------------------------------------------------------------------------

locals {
  # One entry per subnet: CIDR, DNS label, route table, security list. Only the Kubernetes API
  # endpoint's subnet can be public (allowed_source_cidr); every other one is private.
  subnets = {
    api = {
      cidr             = local.api_subnet_cidr
      dns_label        = "api"
      route_table_id   = local.api_endpoint_public ? oci_core_route_table.public[0].id : oci_core_route_table.private.id
      security_list_id = oci_core_security_list.api.id
      public           = local.api_endpoint_public
    }
    nodes = {
      cidr             = local.node_subnet_cidr
      dns_label        = "nodes"
      route_table_id   = oci_core_route_table.private.id
      security_list_id = oci_core_security_list.nodes.id
      public           = false
    }
    lb = {
      cidr             = local.lb_subnet_cidr
      dns_label        = "lb"
      route_table_id   = oci_core_route_table.private.id
      security_list_id = oci_core_security_list.lb.id
      public           = false
    }
    functions = {
      cidr             = local.function_subnet_cidr
      dns_label        = "fn"
      route_table_id   = oci_core_route_table.functions.id
      security_list_id = oci_core_security_list.functions.id
      public           = false
    }
    workers = {
      cidr             = local.worker_subnet_cidr
      dns_label        = "workers"
      route_table_id   = oci_core_route_table.workers.id
      security_list_id = oci_core_security_list.workers.id
      public           = false
    }
  }
}

resource "oci_core_subnet" "this" {
  for_each = local.subnets

  compartment_id             = var.compartment_ocid
  vcn_id                     = local.vcn_id
  display_name               = "${var.name_prefix}-${each.key}"
  cidr_block                 = each.value.cidr
  dns_label                  = local.subnet_dns ? each.value.dns_label : null
  route_table_id             = each.value.route_table_id
  security_list_ids          = [each.value.security_list_id]
  prohibit_public_ip_on_vnic = !each.value.public
  prohibit_internet_ingress  = !each.value.public
  freeform_tags              = local.freeform_tags
  defined_tags               = var.defined_tags
}
