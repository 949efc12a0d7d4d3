"""The pods KubernetesPodOperator would submit, built offline and validated against Kubernetes' schemas.

For every task: render its templates with a realistic context (a run triggered by the
function's conf, the earlier steps' results in XCom), build the pod with
``build_pod_request_obj(context, dry_run=True)`` and validate it with ``kubernetes_validate``
in strict mode (no unknown fields) for each Kubernetes version from 1.31 to 1.34; then check
what the import relies on: labels, ServiceAccount, image, command and args, ConfigMap env,
resources, XCom sidecar, deadlines.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest
from dagkit import clear_vdimport_env, parse_dag
from vdimport_dag.steps import STEP_ORDER, STEP_TIMEOUTS, upstream_steps
from vdimport_dag.templating import run_label

KUBERNETES_VERSIONS = ("1.31", "1.32", "1.33", "1.34")
RUN_ID = "manual__2026-11-25T19:04:05.123456+00:00"
CONF = {
    "namespace": "axaxnpcrorw5",
    "bucket": "vdimport-images",
    "object": "vm/app server (prod).qcow2",
    "etag": "a6ad4d8b-6b5b-4c52-9b0e-5c8e1f2a2f4e",
    "size": 1234567890,
    "metadata": {"ad_number": "2", "tags": '{"project": "migration"}'},
}
# What the earlier steps leave in XCom (shapes as the step runner returns them; content is opaque to the DAG).
RESULTS: dict[str, Any] = {
    "inspect_object": {
        "plan": {"volume_name": "app server (prod)", "availability_domain": "Uocm:US-ASHBURN-AD-2"},
        "step": "inspect_object",
    },
    "launch_worker": {"instance_id": "ocid1.instance.oc1.iad.abc", "availability_domain": "Uocm:US-ASHBURN-AD-2"},
    "wait_worker_ready": {"qemu_img": "8.2.0", "free_bytes": 40_000_000_000},
    "download_image": {"path": "/var/tmp/vdimport/image", "format": "qcow2", "virtual_size": 10737418240},
    "create_volume": {"volume_id": "ocid1.volume.oc1.iad.def", "size_gb": 50},
    "attach_volume": {"attachment_id": "ocid1.volumeattachment.oc1.iad.ghi", "device": "/dev/oracleoci/oraclevdb"},
    "write_image": {"cache": "none"},
    "verify_image": {"identical": True},
    "fsck_volume": {"partitions": [{"number": 1, "fs": "ext4", "status": "clean"}]},
    "detach_volume": {"detached": True},
    "terminate_worker": {"terminated": ["ocid1.instance.oc1.iad.abc"], "pars_deleted": 0},
    "tune_volume": {"vpus_per_gb": 10},
    "assign_backup_policy": {"policy": None},
}
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class FakeTI:
    """A task instance as the KubernetesPodOperator and the templates use it."""

    def __init__(self, task_id: str, dag_id: str):
        self.task_id, self.dag_id = task_id, dag_id
        self.run_id, self.map_index, self.try_number = RUN_ID, -1, 1

    def xcom_pull(self, task_ids: str, **_: Any) -> Any:
        return RESULTS.get(task_ids)


class FakeDagRun:
    run_id = RUN_ID
    conf = CONF


def _context(dag: Any, task: Any) -> dict[str, Any]:
    ti = FakeTI(task.task_id, dag.dag_id)
    # Params as a run sees them: the declared ones resolved, the conf on top (dag_run_conf_overrides_params).
    params = {name: CONF.get(name, dag.params.get_param(name).value) for name in dag.params}
    params.update(CONF)
    return {"ti": ti, "task_instance": ti, "run_id": RUN_ID, "dag_run": FakeDagRun(), "params": params, "dag": dag, "task": task}


def _build(dag: Any, step: str) -> dict[str, Any]:
    from kubernetes.client import ApiClient

    task = dag.get_task(step)
    context = _context(dag, task)
    task.render_template_fields(context)
    pod = task.build_pod_request_obj(context, dry_run=True)
    return dict(ApiClient().sanitize_for_serialization(pod))


@pytest.fixture(scope="module")
def pods(module_monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, dict[str, Any]]]:
    """Every step's pod under the default settings (kubernetes runner)."""
    clear_vdimport_env(module_monkeypatch)
    # The connection the operator's hook reads (sidecar image, namespace); in a cluster, in-cluster defaults.
    module_monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps({"conn_type": "kubernetes"}))
    dag = parse_dag()
    yield {step: _build(dag, step) for step in STEP_ORDER}


def test_kubernetes_versions_are_available_offline() -> None:
    available = {".".join(v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()}
    assert set(KUBERNETES_VERSIONS) <= available


@pytest.mark.parametrize("step", STEP_ORDER)
def test_pod_validates_strictly_for_each_kubernetes_version(pods: dict[str, dict[str, Any]], step: str) -> None:
    for version in KUBERNETES_VERSIONS:
        try:
            assert kubernetes_validate.validate(pods[step], version, strict=True) == version
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{step}: not a valid Pod for Kubernetes {version}: {path}: {exc.message}")


@pytest.mark.parametrize("step", STEP_ORDER)
def test_pod_carries_labels_service_account_image_and_args(pods: dict[str, dict[str, Any]], step: str) -> None:
    pod = pods[step]
    meta, spec = pod["metadata"], pod["spec"]
    labels = meta["labels"]
    assert labels["vdimport/run"] == run_label(RUN_ID) and LABEL_VALUE.fullmatch(labels["vdimport/run"])
    assert labels["vdimport/step"] == step
    assert all(LABEL_VALUE.fullmatch(v) and len(v) <= 63 for v in labels.values()), labels
    assert meta["annotations"]["vdimport/run-id"] == RUN_ID
    assert meta["namespace"] == "vdimport"
    assert meta["name"].startswith("vdimport-" + step.replace("_", "-")) and DNS_LABEL.fullmatch(meta["name"]) and len(meta["name"]) <= 63
    assert spec["serviceAccountName"] == "vdimport-step-runner"
    assert spec["automountServiceAccountToken"] is True
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == int(STEP_TIMEOUTS[step]) + 300
    assert spec["securityContext"]["runAsNonRoot"] is True

    base, *sidecars = spec["containers"]
    assert base["name"] == "base"
    assert base["image"] == "vdimport-worker:latest"
    assert base["command"] == ["vdimport-step"]
    args = base["args"]
    assert args[:3] == [step, "--run-id", RUN_ID] and args[3] == "--request" and args[5] == "--state" and len(args) == 7
    assert json.loads(args[4]) == CONF, "the request is the run's conf (unset params left out)"
    assert json.loads(args[6]) == {s: RESULTS[s] for s in upstream_steps(step)}
    assert base["envFrom"] == [{"configMapRef": {"name": "vdimport-step-runner"}}]
    assert {"name": "VDIMPORT_RESULT_PATH", "value": "/airflow/xcom/return.json"} in base["env"]
    assert base["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}
    assert base["securityContext"]["allowPrivilegeEscalation"] is False
    assert base["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert {"name": "xcom", "mountPath": "/airflow/xcom"} in base["volumeMounts"]
    assert [c["name"] for c in sidecars] == ["airflow-xcom-sidecar"], "do_xcom_push adds the sidecar that reads the result"


def test_operator_settings(module_monkeypatch: pytest.MonkeyPatch) -> None:
    clear_vdimport_env(module_monkeypatch)
    dag = parse_dag()
    for task in [t for t in dag.tasks if t.task_id != "begin"]:
        assert task.do_xcom_push and task.get_logs
        assert task.on_finish_action.value == "delete_succeeded_pod", "failed pods stay for kubectl logs"
        assert task.startup_timeout_seconds == 600
        assert task.deferrable is False
        assert task.kubernetes_conn_id == "kubernetes_default"


def test_configured_pods_validate_too(module_monkeypatch: pytest.MonkeyPatch) -> None:
    """Non-default settings (another namespace, OCIR pull secret, resources) still make valid pods."""
    clear_vdimport_env(module_monkeypatch)
    module_monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps({"conn_type": "kubernetes"}))
    settings = {
        "VDIMPORT_POD_NAMESPACE": "imports",
        "VDIMPORT_POD_IMAGE": "iad.ocir.io/axaxnpcrorw5/vdimport/worker:1.2.3",
        "VDIMPORT_POD_IMAGE_PULL_POLICY": "Always",
        "VDIMPORT_POD_IMAGE_PULL_SECRETS": "ocir-pull",
        "VDIMPORT_POD_SERVICE_ACCOUNT": "importer",
        "VDIMPORT_POD_CONFIGMAP": "importer-env",
        "VDIMPORT_POD_RESOURCES": json.dumps({"requests": {"cpu": "250m", "memory": "300Mi"}, "limits": {"memory": "1Gi"}}),
    }
    for key, value in settings.items():
        module_monkeypatch.setenv(key, value)
    pod = _build(parse_dag(), "write_image")
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)
    base = pod["spec"]["containers"][0]
    assert pod["metadata"]["namespace"] == "imports"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "ocir-pull"}]
    assert pod["spec"]["serviceAccountName"] == "importer"
    assert (base["image"], base["imagePullPolicy"]) == ("iad.ocir.io/axaxnpcrorw5/vdimport/worker:1.2.3", "Always")
    assert base["envFrom"] == [{"configMapRef": {"name": "importer-env"}}]
    assert base["resources"] == {"requests": {"cpu": "250m", "memory": "300Mi"}, "limits": {"memory": "1Gi"}}


def test_an_invalid_pod_is_caught() -> None:
    """The validation is real: strict mode rejects an unknown field, and a bad type fails in any mode."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "image": "i", "bogus": 1}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, "1.34", strict=True)
    pod["spec"]["containers"][0].pop("bogus")
    pod["spec"]["activeDeadlineSeconds"] = "soon"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, "1.31", strict=True)


def _finished_pod(exit_code: int) -> Any:
    from kubernetes.client import models as k8s

    terminated = k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=exit_code, message="FAILED: the cause"))
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="vdimport-inspect-object-abc", namespace="vdimport", annotations={}),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base", image="vdimport-worker:latest")], restart_policy="Never"),
        status=k8s.V1PodStatus(
            phase="Failed",
            container_statuses=[
                k8s.V1ContainerStatus(name="base", state=terminated, ready=False, restart_count=0, image="i", image_id="i")
            ],
        ),
    )


class PodApi:
    """The few Kubernetes API calls the operator's cleanup makes about one finished pod, over HTTP."""

    def __init__(self, pod: Any):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from kubernetes.client import ApiClient

        body = ApiClient().sanitize_for_serialization(pod)
        self.calls: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                api.calls.append(f"{self.command} {self.path}")
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                path = self.path.split("?")[0]
                if path.endswith(f"/pods/{body['metadata']['name']}"):
                    status, reply = 200, body
                elif path.endswith("/events"):
                    status, reply = 200, {"kind": "EventList", "apiVersion": "v1", "items": []}
                elif path == "/api/v1/namespaces/vdimport":
                    status, reply = 200, {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "vdimport", "labels": {}}}
                else:
                    status, reply = 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}
                raw = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_PATCH = do_DELETE = _answer

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kubeconfig(self) -> str:
        port = self.server.server_address[1]
        return f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u, namespace: vdimport}}}}]
current-context: x
"""


@pytest.mark.parametrize(("exit_code", "retried"), [(1, True), (3, False)])
def test_a_rejecting_step_fails_without_retry(module_monkeypatch: pytest.MonkeyPatch, tmp_path: Any, exit_code: int, retried: bool) -> None:
    """Exit 1 (a retry may help) stays an ordinary failure; exit 3 (bad request or image) fails the task for good.

    The operator's own cleanup runs, its API calls answered over HTTP with the status
    Kubernetes reports for the finished pod."""
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
    from vdimport_dag.pods import StepPodOperator
    from vdimport_dag.steps import EXIT_REJECTED

    from vdimport_worker.cli import EXIT_REJECTED as WORKER_EXIT_REJECTED

    assert EXIT_REJECTED == WORKER_EXIT_REJECTED == 3
    pod = _finished_pod(exit_code)
    api = PodApi(pod)
    clear_vdimport_env(module_monkeypatch)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(api.kubeconfig())
    connection = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}
    module_monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(connection))
    task = parse_dag().get_task("inspect_object")
    assert isinstance(task, StepPodOperator)
    with pytest.raises(AirflowException) as raised:
        task.cleanup(pod, pod)
    api.server.shutdown()
    assert isinstance(raised.value, AirflowFailException) is not retried
    # The one-line cause from the pod's termination message (its last FAILED: line), not the operator's own text.
    assert str(raised.value).startswith("step inspect_object ") and str(raised.value).endswith("): the cause"), raised.value
    assert any(call.startswith("GET /api/v1/namespaces/vdimport/pods/") for call in api.calls)
