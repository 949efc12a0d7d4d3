"""The Airflow API's load balancer gets an NSG that the stack makes (issue 16, item 4).

In security-rule-management-mode NSG the cloud controller makes the load balancer's NSG with the
cluster's own identity, which needs IAM grants on NSGs that the stack did not give: the load
balancer stayed pending and the function's Airflow URL empty. Now the NSG is Terraform's,
attached through the Service annotation ``oci.oraclecloud.com/oci-network-security-groups``,
and the chart's values say mode None.
"""

from __future__ import annotations

from tfkit import Module


def test_the_nsg_admits_only_the_function_on_the_api_port(module: Module) -> None:
    rules = str(module.locals["nsg_rules"][0])
    assert 'nsg = "api_lb"' in rules
    lb_rules = [chunk for chunk in rules.split("merge(local.nsg_rule_defaults, ")[1:] if 'nsg = "api_lb"' in chunk]
    assert len(lb_rules) == 1, lb_rules
    [rule] = lb_rules
    for part in (
        'direction = "INGRESS"',
        'protocol = "6"',
        "peer = oci_core_network_security_group.functions.id",
        'peer_type = "NETWORK_SECURITY_GROUP"',
        "port_min = local.airflow_api_port",
        "port_max = local.airflow_api_port",
    ):
        assert part in rule, (part, rule)
    assert module.locals["nsg_ids"][0]["api_lb"] == "${oci_core_network_security_group.api_lb.id}"


def test_the_airflow_release_and_the_manual_commands_attach_it(module: Module) -> None:
    release = module.resources[("helm_release", "airflow")].body
    key = "apiServer.service.annotations.oci\\.oraclecloud\\.com/oci-network-security-groups"  # helm --set escaping
    assert {"name": key, "value": "${oci_core_network_security_group.api_lb.id}"} in release["set"]
    commands = module.outputs["helm_commands"].body["value"]
    raw = key.replace("\\", "\\\\")  # the output is an expression: its string escapes stay as written
    assert f"--set '{raw}=${{oci_core_network_security_group.api_lb.id}}'" in commands
