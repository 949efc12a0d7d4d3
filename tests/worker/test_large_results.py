"""Results larger than Run Command's 1 KB of text output, through the whole local pipeline.

Two real, good images whose worker results outgrow what Run Command returns as text (issue 15):
a qcow2 with 45 internal snapshots (``qemu-img info`` packed is over 1 KB) and a GPT disk with
26 partitions (fsck reports an entry per partition). With the work bucket configured, as
``step_environment`` does, both import byte for byte and their download and fsck output travels
through Object Storage, leaving no object and no PAR behind. Without it, the step fails and its
cause says what to set. What a killed step leaves in the work bucket, the reaper removes.
"""

from __future__ import annotations

import base64
import gzip
import subprocess
import urllib.request
from pathlib import Path

import oci
import pytest
from importkit import Importer, assert_nothing_leaked, new_run_id
from runkit import run_commands, run_prefixes

from vdimport_local.diskimages import Partition, build_disk, convert, raw_bytes, sample_files
from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.pipeline import STEP_ORDER, WORK_BUCKET, ImportOutcome, step_environment
from vdimport_worker.clients import Clients
from vdimport_worker.config import WorkerConfig
from vdimport_worker.naming import RunNames, new_run_key
from vdimport_worker.output import OutputObject
from vdimport_worker.remote import TEXT_OUTPUT_BYTES, cut_off, truncated_message
from vdimport_worker.steps import CLEANUP_STEP
from vdimport_worker.steps.reaper import reap, reap_scan

SNAPSHOTS = 45
PARTITIONS = 26
MIB = 1 << 20


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def snapshotted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small GPT qcow2 with SNAPSHOTS internal snapshots; data written between some of them and
    after the last, past the last partition (the file system stays clean), so that the active
    layer differs from every snapshot."""
    where = tmp_path_factory.mktemp("snapshots")
    raw = build_disk(where / "disk.raw", [Partition("ext4", 8, sample_files(seed=51, size=1 << 20))], table="gpt")
    image = convert(raw, "qcow2", where / "snapshots.qcow2")
    free = raw.stat().st_size - MIB  # the last MiB holds only the backup GPT, in its last 17 KiB
    for number in range(1, SNAPSHOTS + 1):
        if number % 9 == 0:
            _run("qemu-io", "-f", "qcow2", "-c", f"write -P {number} {free + number * 4096} 4k", str(image))
        _run("qemu-img", "snapshot", "-c", f"snap-{number:02d}", str(image))
    _run("qemu-io", "-f", "qcow2", "-c", f"write -P 255 {free} 4k", str(image))
    return image


@pytest.fixture(scope="module")
def many_partitions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raw GPT disk of PARTITIONS small file systems, ext4 and vfat in turn."""
    where = tmp_path_factory.mktemp("partitions")
    parts = [
        Partition("ext4", 2, {"n.txt": f"partition {n}\n".encode()}) if n % 2 else Partition("vfat", 2, {"N.TXT": f"{n}\r\n".encode()})
        for n in range(1, PARTITIONS + 1)
    ]
    return build_disk(where / "many.raw", parts, table="gpt")


def _whole_output(emu: EmulatorHandle, command_id: str) -> bytes:
    """A command's whole output (the emulator's admin API: OCI gives it only through an Object Storage target)."""
    with urllib.request.urlopen(f"{emu.endpoint}/_ocisim/instanceAgentCommands/{command_id}/output", timeout=30) as reply:
        return bytes(reply.read())


def assert_results_travelled_through_the_work_bucket(emu: EmulatorHandle, outcome: ImportOutcome, script: str) -> None:
    """``script``'s output was over 1 KB, went to an Object Storage target, and nothing of it is left."""
    executions = run_commands(emu, outcome.run_id, script)
    assert executions, f"the run ran no {script} command"
    for execution in executions:
        assert execution["content"]["outputType"] == "OBJECT_STORAGE_URI", execution["content"]["outputType"]
        assert "text" not in execution["content"]
    assert max(len(_whole_output(emu, e["id"])) for e in executions) > TEXT_OUTPUT_BYTES, "test setup: the output fits in 1 KB"
    storage = emu.client(oci.object_storage.ObjectStorageClient)
    namespace = storage.get_namespace().data
    for prefix in run_prefixes(emu, outcome.run_id):
        left = storage.list_objects(namespace, WORK_BUCKET, prefix=prefix).data.objects
        assert not left, f"output objects left in the work bucket: {[o.name for o in left]}"
        pars = storage.list_preauthenticated_requests(namespace, WORK_BUCKET).data
        assert not [p.name for p in pars if p.name.startswith(prefix)], "output PARs left in the work bucket"


def test_qcow2_with_many_snapshots_imports_its_active_layer(
    importer: Importer, snapshotted: Path, emu: EmulatorHandle, tmp_path: Path
) -> None:
    info = subprocess.run(["qemu-img", "info", "-f", "qcow2", "--output=json", str(snapshotted)], capture_output=True, check=True).stdout
    assert info.count(b'"name": "snap-') == SNAPSHOTS
    assert len(base64.b64encode(gzip.compress(info, 9))) > TEXT_OUTPUT_BYTES, "test setup: qemu-img info fits in 1 KB packed"
    expected = raw_bytes(snapshotted, "qcow2")
    last = tmp_path / "last-snapshot.raw"
    _run("qemu-img", "convert", "-f", "qcow2", "-l", f"snap-{SNAPSHOTS:02d}", "-O", "raw", str(snapshotted), str(last))
    last_snapshot = last.read_bytes()
    assert last_snapshot != expected, "test setup: the active layer equals the last snapshot"

    outcome = importer.run(snapshotted, "large-results/snapshots.qcow2", run_id=new_run_id("snapshots"))

    assert outcome.succeeded, f"{outcome.failed_step}: {outcome.error}"
    assert_nothing_leaked(emu, outcome, expected)
    report = outcome.report or {}
    assert (report["source"]["qemu_format"], report["source"]["virtual_size"]) == ("qcow2", len(expected))
    assert [(p["fs"], p["status"]) for p in report["checks"]["fsck"]] == [("ext4", "clean")]
    assert_results_travelled_through_the_work_bucket(emu, outcome, "download")


def test_gpt_disk_with_many_partitions_imports_and_checks_each(importer: Importer, many_partitions: Path, emu: EmulatorHandle) -> None:
    image = convert(many_partitions, "qcow2", many_partitions.with_suffix(".qcow2"))

    outcome = importer.run(image, "large-results/many-partitions.qcow2", run_id=new_run_id("partitions"))

    assert outcome.succeeded, f"{outcome.failed_step}: {outcome.error}"
    assert_nothing_leaked(emu, outcome, raw_bytes(image, "qcow2"))
    fsck = [(p["number"], p["fs"], p["status"]) for p in (outcome.report or {})["checks"]["fsck"]]
    assert fsck == [(n, "ext4" if n % 2 else "vfat", "clean") for n in range(1, PARTITIONS + 1)]
    assert outcome.state["fsck_volume"]["table"] == "gpt"
    assert_results_travelled_through_the_work_bucket(emu, outcome, "fsck")


def test_without_a_work_bucket_the_cause_names_the_setting(importer: Importer, snapshotted: Path, emu: EmulatorHandle) -> None:
    """Text output only: the download's result is cut at 1 KB, and the step says so and what fixes it."""
    env = step_environment(emu, {"VDIMPORT_WORK_BUCKET": ""})
    steps = (*STEP_ORDER[: STEP_ORDER.index("download_image") + 1], CLEANUP_STEP)
    outcome = importer.run(snapshotted, "large-results/no-work-bucket.qcow2", run_id=new_run_id("no-work-bucket"), steps=steps, env=env)

    assert outcome.failed_step == "download_image", outcome.failed_step
    assert outcome.error == truncated_message("download")
    assert "1 KB text output" in outcome.error and "VDIMPORT_WORK_BUCKET" in outcome.error
    assert [e["content"]["outputType"] for e in run_commands(emu, outcome.run_id, "download")] == ["TEXT"]
    assert_nothing_leaked(emu, outcome)


@pytest.mark.parametrize(
    ("size", "cut"), [(TEXT_OUTPUT_BYTES, True), (TEXT_OUTPUT_BYTES - 3, True), (TEXT_OUTPUT_BYTES - 4, False), (0, False)]
)
def test_a_text_output_is_cut_off_only_at_run_commands_limit(size: int, cut: bool) -> None:
    """Run Command's tail may lose up to 3 bytes of a UTF-8 character at its cut."""
    assert cut_off("x" * size) is cut


def test_the_reaper_removes_the_output_a_dead_run_left_and_keeps_a_live_runs(fresh_emulator: EmulatorHandle) -> None:
    """A step killed while its command ran leaves the output PAR and, once the command ends, the object."""
    config = WorkerConfig.from_env(step_environment(fresh_emulator, {"VDIMPORT_REAPER_GRACE_SECONDS": "0"}))
    clients = Clients(config)
    dead, live = RunNames(new_run_key()), RunNames(new_run_key())
    for names in (dead, live):
        output = OutputObject(clients, names, WORK_BUCKET, f"{names.prefix}-fsck-0123abcd")
        output.target(60)
        clients.object_storage.put_object(clients.namespace, WORK_BUCKET, output.object_name, b"VDIMPORT_RESULT {}\n")

    assert set(reap_scan(config, clients, {})["runs"]) == {dead.key, live.key}
    removed = reap(config, clients, {"live_keys": [live.key]})["removed"]

    assert sorted(item.split()[0] for item in removed) == ["object", "par"]
    objects = clients.object_storage.list_objects(clients.namespace, WORK_BUCKET).data.objects
    assert [o.name.split("/")[0] for o in objects] == [live.prefix]
    pars = clients.object_storage.list_preauthenticated_requests(clients.namespace, WORK_BUCKET).data
    assert [p.name for p in pars] == [live.name("output")]
