"""Airflow's task logs go to Object Storage (issue 16, item 7), as Airflow itself reads the settings.

Terraform's Secret ``airflow-remote-logs`` carries ``[logging]`` options as ``AIRFLOW__SECTION__KEY``
variables and the connection as ``AIRFLOW_CONN_<ID>``. Checked against the pinned Airflow: each
variable names an option of its configuration, the connection's JSON (the ``jsonencode`` object,
evaluated here with placeholder values for the key) is one Airflow's ``Connection`` parses into
an ``aws`` connection at Object Storage's S3 endpoint, and its id is the one the logging options
name. The chart loads that Secret by the same name.
"""

from __future__ import annotations

import json
import re

import hcl2
import yaml
from tfkit import REPO, Module

AIRFLOW_VALUES = REPO / "charts" / "airflow" / "values.yaml"
SECRET = ("kubernetes_secret_v1", "airflow_remote_logs")
PLACEHOLDERS = {
    "oci_identity_customer_secret_key.task_logs[0].id": "access-key-id",
    "oci_identity_customer_secret_key.task_logs[0].key": "secret-key",
    "local.s3_compat_endpoint": "https://mytenancy.compat.objectstorage.eu-frankfurt-1.oraclecloud.com",
    "var.region": "eu-frankfurt-1",
}


def _data(module: Module) -> dict[str, str]:
    return module.resources[SECRET].body["data"]


def _connection_json(module: Module) -> str:
    """What ``jsonencode`` makes of the connection object, with the references as placeholders."""
    expression = _data(module)["AIRFLOW_CONN_OCI_OBJECT_STORAGE_LOGS"]
    found = re.fullmatch(r"\$\{jsonencode\((?P<object>\{.*\})\)\}", expression, re.S)
    assert found, expression
    literal = found.group("object")
    for reference, value in PLACEHOLDERS.items():
        literal = literal.replace(reference, json.dumps(value))
    assert not re.search(r"\b(local|var|oci_\w+)\.", literal), f"an unevaluated reference: {literal}"
    return json.dumps(_unquoted(hcl2.loads(f"connection = {literal}\n")["connection"]))


def _unquoted(value: object) -> object:
    """python-hcl2 keeps a string literal's quotes inside an expression: the value Terraform has."""
    if isinstance(value, dict):
        return {str(_unquoted(k)): _unquoted(v) for k, v in value.items()}
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return json.loads(value)
    return value


def test_each_logging_variable_is_an_airflow_option(module: Module) -> None:
    from airflow.configuration import conf

    for name in _data(module):
        if name.startswith("AIRFLOW__"):
            section, key = name.removeprefix("AIRFLOW__").lower().split("__", 1)
            assert conf.has_option(section, key), f"{name}: Airflow has no [{section}] {key}"
    assert _data(module)["AIRFLOW__LOGGING__REMOTE_LOGGING"] == "True"
    assert _data(module)["AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER"].startswith("s3://${local.task_logs_bucket_name}/")


def test_the_connection_is_an_aws_connection_to_the_s3_compatibility_endpoint(module: Module) -> None:
    from airflow.models.connection import Connection

    conn_id = str(module.locals["task_logs_conn_id"][0])
    assert _data(module)["AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID"] == "${local.task_logs_conn_id}"
    assert "AIRFLOW_CONN_" + conn_id.upper() in _data(module), "the variable Airflow looks the connection id up by"
    connection = Connection.from_json(_connection_json(module), conn_id=conn_id)
    assert (connection.conn_type, connection.login, connection.password) == ("aws", "access-key-id", "secret-key")
    extra = connection.extra_dejson
    assert extra["endpoint_url"] == PLACEHOLDERS["local.s3_compat_endpoint"]
    assert extra["config_kwargs"] == {"s3": {"addressing_style": "path"}}
    assert extra["region_name"] == "eu-frankfurt-1"
    endpoint = str(module.locals["s3_compat_endpoint"][0])
    assert endpoint == "https://${local.ocir_namespace}.compat.objectstorage.${var.region}.oraclecloud.com"


def test_the_chart_loads_that_secret_and_the_user_can_only_use_the_bucket(module: Module) -> None:
    values = yaml.safe_load(AIRFLOW_VALUES.read_text())
    name = module.resources[SECRET].body["metadata"][0]["name"]
    assert {"secretRef": {"name": name, "optional": True}} in yaml.safe_load(values["extraEnvFrom"])
    statements = module.resources[("oci_identity_policy", "task_logs")].body["statements"]
    assert all("where target.bucket.name = '${local.task_logs_bucket_name}'" in s for s in statements), statements
    assert [re.search(r" to (\w+ \w+) in ", s).group(1) for s in statements] == ["read buckets", "manage objects"]  # type: ignore[union-attr]
    capabilities = module.resources[("oci_identity_user_capabilities_management", "task_logs")].body
    assert [k for k, v in capabilities.items() if k.startswith("can_use_") and v is True] == ["can_use_customer_secret_keys"]
