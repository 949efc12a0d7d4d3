"""A run's state (XCom) pointing at another import's volume or worker is refused, not acted on.

Step results travel through Airflow's database. Whoever can write it could swap in the OCID of
another import's volume (in the same compartment) so that this run attaches and overwrites it,
or another run's worker VM so that this run's scripts run there. Every step that acts on an
OCID from a result first checks the resource carries this run's tags: the step exits 3
(rejected, no retry) with one line naming the OCID, and the other import is untouched.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from importkit import Bucket, assert_disks_delivered, assert_nothing_leaked, new_run_id
from stepkit import small_image, upload_request

from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.pipeline import STEP_ORDER, ImportOutcome, run_import, run_step_in_process, step_environment
from vdimport_worker.cli import EXIT_REJECTED

UNTIL_VOLUME = STEP_ORDER[: STEP_ORDER.index("create_volume") + 1]


def _start(emu: EmulatorHandle, request: dict, label: str) -> ImportOutcome:
    outcome = run_import(emu, new_run_id(label), request, steps=UNTIL_VOLUME, runner=run_step_in_process)
    assert outcome.succeeded, outcome.error
    return outcome


def _finish(emu: EmulatorHandle, request: dict, outcome: ImportOutcome) -> ImportOutcome:
    rest = STEP_ORDER[len(UNTIL_VOLUME) :]
    return run_import(emu, outcome.run_id, request, steps=rest, state=outcome.state, runner=run_step_in_process)


@pytest.mark.parametrize(
    ("step", "swapped", "key", "role"),
    [
        ("attach_volume", "create_volume", "volume_id", "volume"),
        ("attach_volume", "launch_worker", "instance_id", "worker"),
        ("wait_worker_ready", "launch_worker", "instance_id", "worker"),
    ],
)
def test_a_result_naming_another_runs_resource_is_refused(
    emu: EmulatorHandle, bucket: Bucket, tmp_path: Path, step: str, swapped: str, key: str, role: str
) -> None:
    image = small_image(tmp_path)
    request = upload_request(bucket, image.path, f"tamper-{step}-{role}.qcow2")
    victim, attacker = _start(emu, request, "victim"), _start(emu, request, "attacker")
    tampered = {name: dict(result) for name, result in attacker.state.items()}
    tampered[swapped][key] = victim.state[swapped][key]

    run = run_step_in_process(step, attacker.run_id, request, tampered, step_environment(emu))

    assert run.exit_code == EXIT_REJECTED, run.output
    assert run.cause == f"{swapped}'s result names {victim.state[swapped][key]}, which is not this run's {role}"
    attachments = [a for a in emu.resources("volumeattachment") if a.get("lifecycleState") in ("ATTACHING", "ATTACHED")]
    assert not [a for a in attachments if a["volumeId"] == victim.state["create_volume"]["volume_id"]]
    # both imports still finish, each with its own volume holding the image
    for outcome in (victim, attacker):
        finished = _finish(emu, request, outcome)
        assert finished.succeeded, finished.error
        finished.state = {**outcome.state, **finished.state}
        assert_nothing_leaked(emu, finished, image.expected)


def test_one_disks_result_naming_another_disks_volume_is_refused(emu: EmulatorHandle, bucket: Bucket, tmp_path: Path) -> None:
    """A multi-disk OVA: disk 2's create_volume result swapped for disk 1's volume (the same run's,
    so the run tags alone would pass it) is refused before anything is attached; disk 1's volume
    is written only with disk 1's image."""
    from vdimport_local.diskimages import Partition, build_disk, make_producer_ova

    first = tmp_path / "first.raw"
    first.write_bytes(small_image(tmp_path).expected)
    other = build_disk(tmp_path / "data.raw", [Partition("vfat", 16, {"DATA.TXT": b"disk two\r\n"})], table="dos")
    ova = make_producer_ova([first, other], tmp_path / "vm.ova", "ovftool")
    request = upload_request(bucket, ova, "tamper-disks.ova")
    outcome = _start(emu, request, "disks")
    volumes = outcome.state["create_volume"]["disks"]
    tampered = {name: dict(result) for name, result in outcome.state.items()}
    tampered["create_volume"]["disks"] = {"1": volumes["1"], "2": {**volumes["2"], "volume_id": volumes["1"]["volume_id"]}}

    run = run_step_in_process("attach_volume", outcome.run_id, request, tampered, step_environment(emu))

    assert run.exit_code == EXIT_REJECTED, run.output
    assert run.cause == f"create_volume's result names {volumes['1']['volume_id']}, which is not this run's volume"
    finished = _finish(emu, request, outcome)
    assert finished.succeeded, finished.error
    finished.state = {**outcome.state, **finished.state}
    assert_disks_delivered(emu, finished, [first.read_bytes(), other.read_bytes()])
