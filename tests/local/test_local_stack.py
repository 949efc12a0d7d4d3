"""``vdimport-local up / import / status / logs / down`` as a user runs them, as subprocesses.

One stack serves the module: the OCI emulator, a real Airflow and the function's real fdk,
wired by an Events rule. Imports go only through an upload; the event, the function and the
DAG do the rest. Checks are the user's: exit status and ``--json`` fields, the volume's
availability domain and bytes, nothing left alive in the emulator, and after ``down`` no
process of the stack left on the machine.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oci
import pytest
from stackkit import cli, stack_processes

from vdimport_local import procs
from vdimport_local.airflow import free_port
from vdimport_local.diskimages import Partition, build_disk, convert, make_producer_ova, sample_files
from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.importer import render_report
from vdimport_local.pipeline import LOCAL_SUBNET, STEP_ORDER
from vdimport_local.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@dataclass
class Local:
    home: Path
    workdir: Path
    raw: Path  # the disk every image here holds

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return cli(self.home, *args, timeout=timeout)

    def import_json(self, *args: str) -> tuple[int, dict[str, Any], str]:
        done = self.run("import", *args, "--wait", "--json")
        try:
            return done.returncode, json.loads(done.stdout), done.stderr
        except ValueError:
            raise AssertionError(f"import --json printed no JSON (exit {done.returncode}):\n{done.stdout}\n{done.stderr}") from None


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    workdir = tmp_path_factory.mktemp("local-stack")
    raw = build_disk(workdir / "disk.raw", [Partition("ext4", 24, sample_files(seed=7, size=2 << 20))], table="gpt")
    env = Local(workdir / "home", workdir, raw)
    started = env.run("up", "--lifecycle-seconds", "0.2", "--airflow-port", str(free_port()))
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield env
    finally:
        env.run("down")


def test_up_prints_where_things_are_and_is_idempotent(local: Local) -> None:
    state = json.loads((local.home / "stack.json").read_text())
    again = local.run("up")
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stdout
    assert f"Airflow UI     {state['airflow_url']}   login admin / admin" in again.stdout
    # nothing was restarted: the same processes
    assert json.loads((local.home / "stack.json").read_text())["processes"] == state["processes"]


def test_qcow2_and_vmdk_import_into_ad_2(local: Local) -> None:
    """The issue's check: both formats with ad_number=2 succeed, land in AD 2, hold the disk's bytes."""
    expected = local.raw.read_bytes()
    qcow2 = convert(local.raw, "qcow2", local.workdir / "web server.qcow2")
    vmdk = convert(local.raw, "vmdk-stream", local.workdir / "db.vmdk")
    results = []
    for image, extra in ((qcow2, ()), (vmdk, ("--part-size-mib", "1"))):  # the vmdk goes up in parts
        code, result, stderr = local.import_json(str(image), "--meta", "ad_number=2", "--meta", "fsck=strict", *extra)
        assert code == 0 and result["state"] == "success", (result, stderr)
        results.append(result)
        assert result["availability_domain"].endswith("AD-2")
        assert result["dag_run_id"].startswith("upload__")
        assert [s["name"] for s in result["steps"]] == list(STEP_ORDER)
        assert {s["state"] for s in result["steps"]} == {"success"}
        assert result["virtual_size"] == len(expected) and result["error"] is None
        with open(result["volume_path"], "rb") as f:
            assert f.read(len(expected)) == expected, f"{image.name}: the volume does not hold the disk's bytes"
    assert [r["source_format"] for r in results] == ["qcow2", "vmdk"]
    assert results[0]["object"]["name"] == "web server.qcow2"
    assert "upload: 100%" in stderr  # progress went to stderr, the JSON alone to stdout

    status = local.run("status", "--json")
    assert status.returncode == 0
    report = json.loads(status.stdout)
    assert report["up"] is True
    run_ids = {r["dag_run_id"]: r["state"] for r in report["runs"]}
    assert all(run_ids.get(r["dag_run_id"]) == "success" for r in results)
    resources = report["resources"]
    assert resources["instances"] == [] and resources["attachments"] == [] and resources["pars"] == []
    volumes = {v["id"]: v for v in resources["volumes"]}
    assert all(volumes[r["volume_id"]]["availabilityDomain"].endswith("AD-2") for r in results)

    logs = local.run("logs", "write_image", "--run", results[1]["dag_run_id"])
    assert logs.returncode == 0 and "Step write_image of run" in logs.stdout and "progress 100%" in logs.stdout


def test_a_vm_with_a_data_disk_imports_as_one_volume_per_disk(local: Local) -> None:
    """An ovftool export of a VM with a data disk, through the real Airflow: one run, two volumes
    named after the OVA and the disk, each holding its own disk, both in the printed report."""
    data_disk = build_disk(local.workdir / "data.raw", [Partition("vfat", 16, {"DATA.TXT": b"data disk\r\n"})], table="dos")
    ova = make_producer_ova([local.raw, data_disk], local.workdir / "app vm.ova", "ovftool")
    code, result, stderr = local.import_json(str(ova))
    assert code == 0 and result["state"] == "success", (result, stderr)
    volumes = result["volumes"]
    assert [(v["disk"], v["volume_name"]) for v in volumes] == [(1, "app-vm-disk1"), (2, "app-vm-disk2")]
    for volume, raw in zip(volumes, (local.raw, data_disk), strict=True):
        expected = raw.read_bytes()
        with open(volume["volume_path"], "rb") as f:
            assert f.read(len(expected)) == expected, f"disk {volume['disk']}: the volume does not hold the disk's bytes"
        assert volume["checks"]["verify"] == "identical"
    text = render_report(result)
    assert "disk 2        app vm-disk2.vmdk" in text and f"volume        app-vm-disk2  ({volumes[1]['volume_id']})" in text


def test_an_upload_that_is_not_a_disk_image_says_why(local: Local) -> None:
    notes = local.workdir / "notes.txt"
    notes.write_text("not a disk\n" * 1000)
    code, result, _ = local.import_json(str(notes), "--name", "odd $(touch /tmp/pwned) 'name'.img")
    assert code == 1 and result["state"] == "failed" and result["dag_run_id"] is None
    assert "not a disk image" in result["error"] and "odd $(touch /tmp/pwned) 'name'.img" in result["error"]
    assert not Path("/tmp/pwned").exists()


def test_a_bad_metadata_value_fails_the_run_with_its_cause(local: Local) -> None:
    image = convert(local.raw, "qcow2", local.workdir / "bad-ad.qcow2")
    code, result, _ = local.import_json(str(image), "--meta", "ad_number=7")
    assert code == 1 and result["state"] == "failed"
    assert result["error"].startswith("inspect_object: ") and "ad_number" in result["error"]
    assert result["volume_id"] is None
    # rejected, not retried (the DAG retries other failures twice)
    tries = LocalStack(local.home).airflow().task_instances("virtual_disk_import", result["dag_run_id"])["inspect_object"]["try_number"]
    assert tries == 1
    human = local.run("import", str(image), "--name", "bad-ad-again.qcow2", "--meta", "ad_number=7", "--wait")
    assert human.returncode == 1 and "result        FAILED" in human.stdout and "error         inspect_object: " in human.stdout


def _preflight_deployment(local: Local) -> tuple[Any, dict[str, Any], Any]:
    """The local stack given what terraform/ would add (iam.tf's grants, the cluster, the pushed image)."""
    from preflightkit import DIGEST, PREFIX, terraform_iam

    state = json.loads((local.home / "stack.json").read_text())
    emulator = EmulatorHandle(local.home / "emulator")
    tenancy = emulator.tenancy
    cluster = emulator.admin("POST", "clusters", {"name": "vdimport-oke", "compartmentId": tenancy, "type": "ENHANCED_CLUSTER"})
    image = {"compartmentId": tenancy, "repositoryName": f"{PREFIX}/vdimport-worker", "version": "0.1.0", "digest": DIGEST}
    emulator.admin("POST", "container/images", image)
    iam = terraform_iam(
        {
            "var.compartment_ocid": tenancy,
            "local.import_compartment_id": tenancy,
            "var.name_prefix": PREFIX,
            "var.region": "us-ashburn-1",
            "oci_containerengine_cluster.this.id": cluster["id"],
            "oci_objectstorage_bucket.images.name": state["bucket"],
            "oci_objectstorage_bucket.work.name": state["work_bucket"],
            "oci_vault_secret.airflow_api.id": state["secret_id"],
            "oci_identity_dynamic_group.function.name": f"{PREFIX}-function",
            "oci_identity_dynamic_group.worker_vms.name": f"{PREFIX}-worker-vms",
        }
    )
    assert set(iam.policies) >= {"oci_identity_policy.step_runner", "oci_identity_policy.function", "oci_identity_policy.worker_vms"}
    identity = emulator.client(oci.identity.IdentityClient)
    models = oci.identity.models
    for name, rule in iam.dynamic_groups.items():
        identity.create_dynamic_group(
            models.CreateDynamicGroupDetails(compartment_id=tenancy, name=name, matching_rule=rule, description=name)
        )
    policies = {
        address: identity.create_policy(
            models.CreatePolicyDetails(compartment_id=tenancy, name=address.split(".")[-1], statements=statements, description=address)
        ).data.id
        for address, statements in iam.policies.items()
    }
    return emulator, {"state": state, "cluster": cluster["id"], "policies": policies, "iam": iam}, identity


def test_preflight_passes_on_what_terraform_makes_and_names_each_gap(local: Local) -> None:
    """``vdimport-local preflight`` against the local stack plus terraform/iam.tf's grants: all ok; then
    each thing an operator gets wrong, one at a time, fails its own check with its cause."""
    from preflightkit import chart_objects, serving

    from vdimport_local import preflight

    emulator, made, identity = _preflight_deployment(local)
    state = made["state"]
    storage = emulator.client(oci.object_storage.ObjectStorageClient)
    objects = chart_objects(state["namespace"], emulator.tenancy, LOCAL_SUBNET, state["bucket"], state["work_bucket"], state["topic_id"])
    with serving(objects) as kube:
        kubeconfig = kube.kubeconfig(local.workdir / "kubeconfig")
        args = ["--oci-config", str(emulator.config_path), "--oci-endpoint", emulator.endpoint, "--kubeconfig", str(kubeconfig)]
        args += ["--cluster-id", made["cluster"]]
        calls_before = len(emulator.calls())
        runs_before = LocalStack(local.home).airflow().api("GET", "/api/v2/dags/virtual_disk_import/dagRuns")["total_entries"]
        done = local.run("preflight", *args, "--json", timeout=120)
        report = json.loads(done.stdout)
        # it only reads (and invokes the function once), and the probe triggers no run
        operations = {c["operation"] for c in emulator.calls()[calls_before:]}
        assert operations and all(op.startswith(("Get", "List")) or op == "InvokeFunction" for op in operations), operations
        assert "InvokeFunction" in operations
        assert LocalStack(local.home).airflow().api("GET", "/api/v2/dags/virtual_disk_import/dagRuns")["total_entries"] == runs_before
        statuses = {c["name"]: c["status"] for c in report["checks"]}
        assert done.returncode == 0 and report["ok"], done.stdout + done.stderr
        assert statuses == dict.fromkeys(statuses, "ok") and len(statuses) == 14, statuses
        human = local.run("preflight", *args, timeout=120)
        assert human.returncode == 0 and human.stdout.rstrip().endswith("skipped") and "ready for the first upload" in human.stdout

        target = preflight.Target(oci_config=str(emulator.config_path), oci_endpoint=emulator.endpoint, kubeconfig=str(kubeconfig))
        target.cluster_id = made["cluster"]

        def failing() -> dict[str, str]:
            return {r.name: r.detail for r in preflight.preflight(target) if r.status == "fail"}

        # 1. object events off on the bucket: the trigger never fires
        models = oci.object_storage.models
        storage.update_bucket(state["namespace"], state["bucket"], models.UpdateBucketDetails(object_events_enabled=False))
        try:
            assert list(failing()) == ["bucket"] and "object events off" in failing()["bucket"]
        finally:
            storage.update_bucket(state["namespace"], state["bucket"], models.UpdateBucketDetails(object_events_enabled=True))

        # 2. one step-runner statement missing (the PARs of the upload)
        step_runner = made["iam"].policies["oci_identity_policy.step_runner"]
        kept = [s for s in step_runner if not ("PAR_MANAGE" in s and state["bucket"] in s)]
        assert len(kept) == len(step_runner) - 1
        identity.delete_policy(made["policies"]["oci_identity_policy.step_runner"])
        details = oci.identity.models.CreatePolicyDetails(
            compartment_id=emulator.tenancy, name="step-runner-short", statements=kept, description="x"
        )
        short = identity.create_policy(details).data.id
        try:
            found = failing()
            assert list(found) == ["policies-step-runner"] and "PAR_MANAGE" in found["policies-step-runner"], found
        finally:
            identity.delete_policy(short)
            details.statements, details.name = step_runner, "step_runner"
            identity.create_policy(details)

        # 3. the DAG paused: the function reaches Airflow, logs in, and says so
        airflow = LocalStack(local.home).airflow()
        airflow.api("PATCH", "/api/v2/dags/virtual_disk_import", {"is_paused": True})
        try:
            found = failing()
            assert list(found) == ["airflow-from-function"] and "paused" in found["airflow-from-function"], found
        finally:
            airflow.api("PATCH", "/api/v2/dags/virtual_disk_import", {"is_paused": False})

        # 4. the pull secret not created: ErrImagePull on every step pod
        secret = kube.drop("Secret", "vdimport", "vdimport-ocir-pull")
        try:
            found = failing()
            assert list(found) == ["pull-secret"] and "ErrImagePull" in found["pull-secret"], found
        finally:
            kube.put(secret)

        # 5. the chart pins a digest that was never pushed
        settings = kube.objects[("configmaps", "airflow", "vdimport-dag-settings")]
        pinned = settings["data"]["VDIMPORT_POD_IMAGE"]
        settings["data"]["VDIMPORT_POD_IMAGE"] = pinned.split("@")[0] + "@sha256:" + "cd" * 32
        try:
            found = failing()
            assert list(found) == ["image"] and "not in repository" in found["image"], found
        finally:
            settings["data"]["VDIMPORT_POD_IMAGE"] = pinned

        # 6. a basic cluster: no workload identity (the grants that name it are then not checked)
        basic = emulator.admin("POST", "clusters", {"name": "basic", "compartmentId": emulator.tenancy, "type": "BASIC_CLUSTER"})
        target.cluster_id = basic["id"]
        results = {r.name: r for r in preflight.preflight(target)}
        assert results["cluster"].status == "fail" and "enhanced" in results["cluster"].detail
        assert results["policies-step-runner"].status == "skip"
        assert [r.name for r in results.values() if r.status == "fail"] == ["cluster"]


def test_down_leaves_nothing_running(local: Local) -> None:
    """Last in the module: stop the stack and look for any survivor, by PID and by command line."""
    state = json.loads((local.home / "stack.json").read_text())
    stack = LocalStack(local.home)
    recorded = {pid: start for pid, start in state["processes"].values()}
    everything = {**procs.tree(recorded), **stack.airflow().process_tree()}
    assert len(everything) >= 5  # emulator, function host + fdk, api-server, scheduler, dag-processor
    done = local.run("down")
    assert done.returncode == 0, done.stderr
    assert "nothing left running" in done.stdout
    assert [pid for pid, start in everything.items() if procs.alive(pid, start)] == []
    assert stack_processes(local.home) == []
    assert not (local.home / "stack.json").exists()
    status = local.run("status")
    assert status.returncode == 3 and "NOT fully running" in status.stdout
    again = local.run("down")
    assert again.returncode == 0 and "not running" in again.stdout
