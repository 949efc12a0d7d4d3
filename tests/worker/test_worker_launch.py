"""The worker VM as launched: what an operator would check in the console.

The worker parses hostile images; instance metadata answering any process without a header
(IMDS v1) is the classic SSRF path to it, so legacy endpoints are off. The attached data volumes
hold those images: the cloud-init the worker boots with keeps LVM, mdadm and udev off them, and
wait_worker_ready fails, naming what is missing, when it did not.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from importkit import Bucket, new_run_id
from stepkit import small_image, upload_request

from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.pipeline import run_import, run_step_in_process
from vdimport_worker.steps import worker


def test_the_worker_answers_only_imds_v2_and_carries_the_runs_tags(emu: EmulatorHandle, bucket: Bucket, tmp_path: Path) -> None:
    request = upload_request(bucket, small_image(tmp_path).path, "imds.qcow2")
    outcome = run_import(emu, new_run_id("imds"), request, steps=["inspect_object", "launch_worker"], runner=run_step_in_process)
    assert outcome.succeeded, outcome.error
    instance_id = outcome.state["launch_worker"]["instance_id"]
    [instance] = [i for i in emu.resources("instance") if i["id"] == instance_id]
    assert instance["instanceOptions"] == {"areLegacyImdsEndpointsDisabled": True}
    assert instance["freeformTags"]["vdimport-role"] == "worker"
    cleanup = run_import(emu, outcome.run_id, request, steps=["terminate_worker"], state=outcome.state, runner=run_step_in_process)
    assert cleanup.succeeded, cleanup.error


# --- data volumes stay inert: the cloud-init files, parsed as LVM, mdadm and udev read them ---
def _cloud_config(instance: dict[str, Any]) -> dict[str, Any]:
    text = base64.b64decode(instance["metadata"]["user_data"]).decode()
    assert text.startswith("#cloud-config\n")
    config = yaml.safe_load(text)
    assert isinstance(config, dict)
    return config


def _files(config: dict[str, Any]) -> dict[str, str]:
    return {entry["path"]: entry["content"] for entry in config["write_files"]}


def _lvm_config(text: str) -> dict[str, dict[str, Any]]:
    """lvm.conf(5) syntax as far as these files use it: sections of ``key = value`` (values are JSON)."""
    sections: dict[str, dict[str, Any]] = {}
    current = None
    for line in (raw.split("#", 1)[0].strip() for raw in text.splitlines()):
        if not line:
            continue
        if line.endswith("{"):
            current = sections.setdefault(line[:-1].strip(), {})
        elif line == "}":
            current = None
        else:
            key, _, value = line.partition("=")
            assert current is not None and _, f"not inside a section: {line!r}"
            current[key.strip()] = json.loads(value)
    return sections


_UDEV_PAIR = re.compile(r'\s*([A-Z_]+(?:\{[^}]*\})?)\s*(==|!=|\+=|:=|=)\s*"([^"]*)"\s*(?:,|$)')


def _udev_rules(text: str) -> list[list[tuple[str, str, str]]]:
    """udev(7) rules: one list of (key, operator, value) per rule line."""
    rules = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pairs = _UDEV_PAIR.findall(line)
        assert "".join(f'{k}{op}"{v}"' for k, op, v in pairs) == re.sub(r"\s*,\s*|^\s+|\s+$", "", line), f"unparsed: {line!r}"
        rules.append(pairs)
    return rules


def test_the_workers_cloud_init_keeps_data_volumes_inert(emu: EmulatorHandle, bucket: Bucket, tmp_path: Path) -> None:
    request = upload_request(bucket, small_image(tmp_path).path, "inert.qcow2")
    outcome = run_import(emu, new_run_id("inert"), request, steps=["inspect_object", "launch_worker"], runner=run_step_in_process)
    assert outcome.succeeded, outcome.error
    [instance] = [i for i in emu.resources("instance") if i["id"] == outcome.state["launch_worker"]["instance_id"]]
    files = _files(_cloud_config(instance))

    lvm = _lvm_config(files["/etc/lvm/lvmlocal.conf"])  # read after lvm.conf, and wins over it
    assert lvm["global"] == {"event_activation": 0}
    boot, *rest = lvm["devices"]["global_filter"]
    assert rest == ["r|.*|"]  # every device but the boot volume rejected...
    accepted = re.compile(boot[2:-1])
    assert boot.startswith("a|") and all(accepted.search(f"/dev/oracleoci/oraclevda{n}") for n in ("", "1", "3"))  # ...its PVs kept
    assert not any(accepted.search(name) for name in ("/dev/oracleoci/oraclevdb", "/dev/oracleoci/oraclevdab1", "/dev/sdb", "/dev/sda3"))

    mdadm = [line.split() for line in files["/etc/mdadm.conf"].splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert next(words for words in mdadm if words[0] == "AUTO") == ["AUTO", "-all"]  # the first AUTO line is the one mdadm uses

    [(path, text)] = [(p, t) for p, t in files.items() if p.startswith("/etc/udev/rules.d/")]
    assert "60-persistent-storage.rules" < Path(path).name < "63-md-raid-arrays.rules" < "64-md-raid-assembly.rules" < "69-dm-lvm.rules"
    rules = _udev_rules(text)
    assert rules[-1] == [("LABEL", "=", "vdimport_end")]
    skips = [r for r in rules[:-1] if r[-1] == ("GOTO", "=", "vdimport_end")]
    acts = [r for r in rules[:-1] if r not in skips]
    assert [("KERNEL", "!=", "sd*")] in [r[:-1] for r in skips] and [("ENV{ID_PATH}", "==", "*:1")] in [r[:-1] for r in skips]
    assert acts == [[("OPTIONS", "+=", "nowatch")], [("ENV{ID_FS_TYPE}", "=", "")]]
    assert rules.index(acts[0]) > max(rules.index(r) for r in skips)  # acts only on what no skip let through

    cleanup = run_import(emu, outcome.run_id, request, steps=["terminate_worker"], state=outcome.state, runner=run_step_in_process)
    assert cleanup.succeeded, cleanup.error


def _without(path: str, replace: tuple[str, str] | None = None) -> str:
    """The worker's cloud-init without the file ``path``, or with ``replace`` applied to it."""
    config = yaml.safe_load(worker.CLOUD_INIT)
    kept = []
    for entry in config["write_files"]:
        if entry["path"] == path and replace is None:
            continue
        if entry["path"] == path and replace is not None:
            assert replace[0] in entry["content"]
            entry = {**entry, "content": entry["content"].replace(*replace)}
        kept.append(entry)
    return "#cloud-config\n" + yaml.safe_dump({**config, "write_files": kept}, sort_keys=False)


@pytest.mark.parametrize(
    ("cloud_init", "cause"),
    [
        (("/etc/lvm/lvmlocal.conf", None), "/etc/lvm/lvmlocal.conf does not turn LVM autoactivation off"),
        (
            ("/etc/lvm/lvmlocal.conf", ("event_activation = 0", "event_activation = 1")),
            "/etc/lvm/lvmlocal.conf does not turn LVM autoactivation off",
        ),
        (("/etc/mdadm.conf", None), "/etc/mdadm.conf does not say AUTO -all"),
        (("/etc/mdadm.conf", ("AUTO -all", "AUTO +all")), "/etc/mdadm.conf does not say AUTO -all"),
        (("/etc/udev/rules.d/61-vdimport-data-disks.rules", None), "the udev rule 61-vdimport-data-disks.rules is missing"),
    ],
    ids=["no-lvmlocal", "lvm-event-activation-on", "no-mdadm-conf", "mdadm-auto-all", "no-udev-rule"],
)
def test_ready_fails_with_one_line_when_data_volumes_are_not_inert(
    emu: EmulatorHandle, bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cloud_init: tuple[str, Any], cause: str
) -> None:
    monkeypatch.setattr(worker, "CLOUD_INIT", _without(*cloud_init))
    request = upload_request(bucket, small_image(tmp_path).path, "not-inert.qcow2")
    steps = ["inspect_object", "launch_worker", "wait_worker_ready"]
    outcome = run_import(emu, new_run_id("not-inert"), request, steps=steps, runner=run_step_in_process)
    assert outcome.failed_step == "wait_worker_ready", outcome.error
    assert outcome.error is not None and "\n" not in outcome.error
    assert outcome.error.endswith(f"data volumes are not inert on the worker: {cause}"), outcome.error
    cleanup = run_import(emu, outcome.run_id, request, steps=["terminate_worker"], state=outcome.state, runner=run_step_in_process)
    assert cleanup.succeeded, cleanup.error


def test_ready_fails_with_one_line_when_the_download_would_not_fit(
    emu: EmulatorHandle, bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The boot volume is sized for the download, the image's root file system is not: ready.sh
    grows it (oci-growfs, where the image has it) and then checks the room, so a worker whose
    file system cannot hold the download fails at wait_worker_ready, before any volume exists,
    instead of "no space" half-way through the download."""
    request = upload_request(bucket, small_image(tmp_path).path, "no-room.qcow2")
    run_id = new_run_id("no-room")
    launched = run_import(emu, run_id, request, steps=["inspect_object", "launch_worker"], runner=run_step_in_process)
    assert launched.succeeded, launched.error
    monkeypatch.setattr(worker, "_staged_bytes", lambda ctx: 1 << 60)  # more than any file system here
    outcome = run_import(emu, run_id, request, steps=["wait_worker_ready"], state=launched.state, runner=run_step_in_process)
    assert outcome.failed_step == "wait_worker_ready", outcome.error
    assert outcome.error is not None and "\n" not in outcome.error
    assert re.search(
        r"the worker has \d+ bytes free for the download, which needs 1152921504606846976: its root file system", outcome.error
    )
    monkeypatch.undo()
    cleanup = run_import(emu, run_id, request, steps=["terminate_worker"], state=launched.state, runner=run_step_in_process)
    assert cleanup.succeeded, cleanup.error


def test_the_ready_check_asks_for_room_for_every_disk() -> None:
    """NEED is what the worker will stage: the image, or all of an OVA's disks at once."""
    one = {"inspect_object": {"source": {"length": 5}}}
    many = {"inspect_object": {"source": {"length": 5}, "disks": [{"source": {"length": 5}}, {"source": {"length": 7}}]}}
    assert worker._staged_bytes(_Ctx(one)) == 5
    assert worker._staged_bytes(_Ctx(many)) == 12
    assert worker._boot_volume_gb(_Ctx(many)) == 50


class _Ctx:
    def __init__(self, state: dict[str, Any]):
        self.state = state

    def result_of(self, step: str) -> dict[str, Any]:
        return self.state[step]
