"""The read-only OCI APIs a deployment check uses, through the real SDK: Functions (get, invoke),
Events rules, IAM policies and dynamic groups, container images and clusters.

Each answer must deserialize into the SDK's own model with the fields a caller reads, and the
invoke must reach the function's listener and bring back its answer or OCI's 502.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import oci
import pytest
from emulator_helpers import error_of, new_compartment

from vdimport_local.emulator.client import EmulatorHandle

NO_RETRY = oci.retry.NoneRetryStrategy()


@pytest.fixture
def listener() -> Iterator[tuple[str, list[bytes]]]:
    """A function container stand-in: echoes the body back as JSON, 502 for the body ``fail``."""
    seen: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"] or 0))
            seen.append(body)
            answer = json.dumps({"echo": body.decode()}).encode()
            self.send_response(502 if body == b"fail" else 200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/invoke", seen
    server.shutdown()
    server.server_close()


def test_a_registered_function_is_got_and_invoked(emu: EmulatorHandle, listener: tuple[str, list[bytes]]) -> None:
    url, seen = listener
    compartment = new_compartment()
    made = emu.admin("POST", "functions", {"displayName": "trigger", "compartmentId": compartment, "config": {"A": "1"}, "url": url})
    manage = emu.client(oci.functions.FunctionsManagementClient, retry_strategy=NO_RETRY)
    function = manage.get_function(made["id"]).data
    assert (function.display_name, function.config, function.lifecycle_state, function.compartment_id) == (
        "trigger",
        {"A": "1"},
        "ACTIVE",
        compartment,
    )
    assert [f.id for f in manage.list_functions(function.application_id).data] == [made["id"]]
    invoke = oci.functions.FunctionsInvokeClient(emu.config, service_endpoint=function.invoke_endpoint, retry_strategy=NO_RETRY)
    answer = invoke.invoke_function(function.id, invoke_function_body='{"vdimport": "preflight"}')
    assert answer.status == 200 and json.loads(answer.data.text) == {"echo": '{"vdimport": "preflight"}'}
    assert seen == [b'{"vdimport": "preflight"}']
    failed = error_of(invoke.invoke_function, function.id, invoke_function_body="fail")
    assert (failed.status, failed.code) == (502, "FunctionInvokeExecutionFailed")
    assert error_of(manage.get_function, "ocid1.fnfunc.oc1..none").status == 404


def test_event_rules_show_their_condition_and_faas_action(emu: EmulatorHandle) -> None:
    compartment = new_compartment()
    spec = {"url": "http://127.0.0.1:9/x", "eventTypes": ["com.oraclecloud.objectstorage.createobject"], "bucketName": "images"}
    rule = emu.admin("POST", "events/rules", {**spec, "compartmentId": compartment, "functionId": "ocid1.fnfunc.oc1..f"})
    try:
        events = emu.client(oci.events.EventsClient, retry_strategy=NO_RETRY)
        assert [r.id for r in events.list_rules(compartment, lifecycle_state="ACTIVE").data] == [rule["id"]]
        got = events.get_rule(rule["id"]).data
        condition = json.loads(got.condition)
        assert condition == {"eventType": [spec["eventTypes"][0]], "data": {"additionalDetails": {"bucketName": ["images"]}}}
        (action,) = got.actions.actions
        assert (action.action_type, action.function_id, action.is_enabled, got.is_enabled) == ("FAAS", "ocid1.fnfunc.oc1..f", True, True)
    finally:
        emu.admin("DELETE", f"events/rules/{rule['id']}")


def test_policies_and_dynamic_groups_are_kept_as_written(emu: EmulatorHandle) -> None:
    identity = emu.client(oci.identity.IdentityClient, retry_strategy=NO_RETRY)
    models = oci.identity.models
    compartment = new_compartment()
    statements = ["Allow service faas to read repos in compartment id " + compartment]
    policy = identity.create_policy(
        models.CreatePolicyDetails(compartment_id=compartment, name="p", statements=statements, description="d")
    ).data
    assert [p.statements for p in identity.list_policies(compartment).data] == [statements]
    empty = models.CreatePolicyDetails(compartment_id=compartment, name="q", statements=[], description="d")
    assert error_of(identity.create_policy, empty).status == 400
    identity.delete_policy(policy.id)
    assert identity.list_policies(compartment).data == []
    rule = "ALL {resource.type = 'fnfunc'}"
    group = models.CreateDynamicGroupDetails(compartment_id=compartment, name="g", matching_rule=rule, description="d")
    identity.create_dynamic_group(group)
    assert [(g.name, g.matching_rule) for g in identity.list_dynamic_groups(compartment).data] == [("g", rule)]


def test_container_images_and_clusters(emu: EmulatorHandle) -> None:
    compartment = new_compartment()
    digest = "sha256:" + "e" * 64
    emu.admin("POST", "container/images", {"compartmentId": compartment, "repositoryName": "vd/w", "version": "1", "digest": digest})
    artifacts = emu.client(oci.artifacts.ArtifactsClient, retry_strategy=NO_RETRY)
    found = artifacts.list_container_images(compartment, repository_name="vd/w", version="1").data
    assert [(i.display_name, i.digest) for i in found.items] == [("vd/w:1", digest)]
    assert artifacts.list_container_images(compartment, repository_name="vd/w", image_digest="sha256:" + "f" * 64).data.items == []
    cluster = emu.admin("POST", "clusters", {"name": "k", "compartmentId": compartment, "type": "BASIC_CLUSTER"})
    got = emu.client(oci.container_engine.ContainerEngineClient, retry_strategy=NO_RETRY).get_cluster(cluster["id"]).data
    assert (got.name, got.type, got.lifecycle_state) == ("k", "BASIC_CLUSTER", "ACTIVE")
