"""The worker VM sandbox: attached volumes at /dev/oracleoci, real disk tools, a clean environment."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import oci
import pytest
from emulator_helpers import (
    FAST_WAIT,
    HEARTBEAT,
    assert_stopped,
    backing_file,
    command_details,
    instance_home,
    volume_details,
    wait_for_execution,
)
from oci.core.models import AttachParavirtualizedVolumeDetails

from vdimport_local.emulator.client import EmulatorHandle

MiB = 1 << 20
ALLOWED_ENV = {"PATH", "HOME", "USER", "LANG", "PWD", "SHLVL", "_"}

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices need root")


class VM:
    """One worker VM of the emulator, driven through the SDK the way the step runner does."""

    def __init__(self, emu: EmulatorHandle, instance_id: str, compartment: str, ad: str, compute, storage, agent):  # type: ignore[no-untyped-def]
        self.emu, self.id, self.compartment, self.ad = emu, instance_id, compartment, ad
        self.compute, self.storage, self.agent = compute, storage, agent

    def new_volume(self) -> str:
        vid = str(self.storage.create_volume(volume_details(self.compartment, self.ad, display_name="disk")).data.id)
        oci.wait_until(self.storage, self.storage.get_volume(vid), "lifecycle_state", "AVAILABLE", **FAST_WAIT)
        return vid

    def attach(self, volume_id: str, device: str = "/dev/oracleoci/oraclevdb", read_only: bool = False) -> str:
        details = AttachParavirtualizedVolumeDetails(instance_id=self.id, volume_id=volume_id, device=device, is_read_only=read_only)
        aid = str(self.compute.attach_volume(details).data.id)
        oci.wait_until(self.compute, self.compute.get_volume_attachment(aid), "lifecycle_state", "ATTACHED", **FAST_WAIT)
        return aid

    def detach(self, attachment_id: str) -> None:
        self.compute.detach_volume(attachment_id)
        oci.wait_until(self.compute, self.compute.get_volume_attachment(attachment_id), "lifecycle_state", "DETACHED", **FAST_WAIT)

    def run(self, script: str, timeout: int = 120):  # type: ignore[no-untyped-def]
        details = command_details(self.compartment, self.id, script, timeout, name="worker-vm-test")
        cid = self.agent.create_instance_agent_command(details).data.id
        return wait_for_execution(self.agent, cid, self.id, seconds=timeout + 10)

    def full_output(self, execution) -> str:  # type: ignore[no-untyped-def]
        url = f"{self.emu.endpoint}/_ocisim/instanceAgentCommands/{execution.instance_agent_command_id}/output"
        with urllib.request.urlopen(url) as response:
            return response.read().decode(errors="replace")


@pytest.fixture
def vm(emu, launch, compartment, ads, compute, storage, agent) -> VM:  # type: ignore[no-untyped-def]
    return VM(emu, launch(), compartment, ads[0], compute, storage, agent)


def loops_of(path: Path) -> str:
    return subprocess.run(["losetup", "-j", str(path)], capture_output=True, text=True, check=True).stdout.strip()


def host_device_dir() -> list[str]:
    return sorted(os.listdir("/dev/oracleoci"))


# --- the flagship: partition, format, mount, write; then check the volume from outside ------------
FLAGSHIP = r"""set -euo pipefail
dev=/dev/oracleoci/oraclevdb
test -b "$dev"
echo "device: $(readlink -f "$dev")"
printf 'label: gpt\nstart=2048, size=65536, type=L\n' | sudo sfdisk -q --wipe always "$dev"
sudo partx -u "$dev"
test -b /dev/oracleoci/oraclevdb1
sudo partprobe "$dev"  # as well: both add partitions from user space
test -b /dev/oracleoci/oraclevdb1 && test ! -e /dev/oracleoci/oraclevdb2
echo "partition: $(readlink -f /dev/oracleoci/oraclevdb1)"
sudo mkfs.ext4 -q -F -L vdimport /dev/oracleoci/oraclevdb1
mkdir -p mnt
sudo mount /dev/oracleoci/oraclevdb1 mnt
echo "written inside the worker VM" | sudo tee mnt/hello.txt >/dev/null
sudo umount mnt
sync
echo "sha256: $(sudo head -c 64M "$dev" | sha256sum | cut -d' ' -f1)"
"""


@needs_root
def test_partition_format_and_mount_a_volume_then_check_it_from_outside(emu: EmulatorHandle, vm: VM) -> None:
    volume = vm.new_volume()
    attachment = vm.attach(volume)
    path = backing_file(emu, volume)

    execution = vm.run(FLAGSHIP)
    assert execution.lifecycle_state == "SUCCEEDED", vm.full_output(execution)
    lines = dict(line.split(": ", 1) for line in execution.content.text.splitlines())
    assert lines["device"].startswith("/dev/loop")
    assert lines["partition"] == lines["device"] + "p1"
    assert host_device_dir() == []  # the links live in the VM's own mount namespace
    assert str(instance_home(emu, vm.id) / "mnt") not in Path("/proc/mounts").read_text()

    vm.detach(attachment)
    assert loops_of(path) == ""  # the execution's loop device is gone with it
    assert not Path(lines["partition"]).exists()  # partx -d before losetup -d: no lingering partition node

    with open(path, "rb") as f:
        assert hashlib.sha256(f.read(64 * MiB)).hexdigest() == lines["sha256"]
    table = json.loads(subprocess.run(["sfdisk", "-J", str(path)], capture_output=True, text=True, check=True).stdout)["partitiontable"]
    assert table["label"] == "gpt"
    (part,) = table["partitions"]
    assert (part["start"], part["size"]) == (2048, 65536)
    loop = subprocess.run(
        [
            "losetup",
            "--find",
            "--show",
            "--read-only",
            "--offset",
            str(part["start"] * 512),
            "--sizelimit",
            str(part["size"] * 512),
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        fsck = subprocess.run(["e2fsck", "-fn", loop], capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        content = subprocess.run(["debugfs", "-R", "cat /hello.txt", loop], capture_output=True, text=True, check=True).stdout
        assert content == "written inside the worker VM\n"
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
    assert loops_of(path) == ""


QEMU_WRITE = r"""set -euo pipefail
truncate -s 64M disk.raw
printf 'label: gpt\nstart=2048, size=32768, type=L\nstart=34816, size=32768, type=L\n' | sfdisk -q disk.raw
qemu-img convert -f raw -O qcow2 disk.raw disk.qcow2
sudo qemu-img convert -n -t none -f qcow2 -O raw disk.qcow2 /dev/oracleoci/oraclevdb
sudo partx -u /dev/oracleoci/oraclevdb
for link in /dev/oracleoci/oraclevdb[0-9]*; do if test -b "$link"; then echo "$link"; fi; done
sudo cmp -n $((64 << 20)) disk.raw /dev/oracleoci/oraclevdb && echo same
"""


@needs_root
def test_qemu_img_writes_an_image_onto_the_attached_volume(emu: EmulatorHandle, vm: VM) -> None:
    volume = vm.new_volume()
    vm.attach(volume)
    execution = vm.run(QEMU_WRITE)
    assert execution.lifecycle_state == "SUCCEEDED", vm.full_output(execution)
    assert execution.content.text == "/dev/oracleoci/oraclevdb1\n/dev/oracleoci/oraclevdb2\nsame\n"


# --- the sandbox's environment -----------------------------------------------------------------------
def test_script_environment_is_clean_and_host_device_dir_stays_empty(emu: EmulatorHandle, vm: VM) -> None:
    secret_name = "VDIMPORT_TEST_SHOULD_NOT_LEAK"
    assert os.environ.get(secret_name) is None  # the emulator inherited the test's environment otherwise
    execution = vm.run("env\necho cwd=$(pwd)\nls /dev/oracleoci | wc -l\n")
    assert execution.lifecycle_state == "SUCCEEDED"
    lines = execution.content.text.splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("cwd="))
    assert set(env) <= ALLOWED_ENV, set(env) - ALLOWED_ENV
    assert (env["USER"], env["LANG"], env["HOME"]) == ("ocarun", "C.UTF-8", str(instance_home(emu, vm.id)))
    assert f"cwd={instance_home(emu, vm.id)}" in lines
    assert lines[-1] == "0"  # no volume attached: an empty /dev/oracleoci
    leaked = {k for k in os.environ if k not in ALLOWED_ENV} & set(env)
    assert not leaked
    assert host_device_dir() == []


def test_cloud_init_and_sudo_work_inside(vm: VM) -> None:
    execution = vm.run("cloud-init status --wait\nsudo id -u\nsudo -n true && echo sudo-ok\n")
    assert (execution.lifecycle_state, execution.content.text) == ("SUCCEEDED", "status: done\n0\nsudo-ok\n")


def test_background_processes_die_with_the_script(emu: EmulatorHandle, vm: VM) -> None:
    script = (
        f"({HEARTBEAT.replace('beat', 'beat1')}) &\n"
        f"setsid sh -c '{HEARTBEAT.replace('beat', 'beat2')}' &\n"
        "while [ ! -s beat1 ] || [ ! -s beat2 ]; do sleep 0.01; done\n"
        "echo left behind\n"
    )
    execution = vm.run(script)
    assert (execution.lifecycle_state, execution.content.text) == ("SUCCEEDED", "left behind\n")
    assert_stopped(instance_home(emu, vm.id) / "beat1", instance_home(emu, vm.id) / "beat2")


def test_files_in_home_persist_between_commands(vm: VM) -> None:
    assert vm.run("echo kept > state.txt").lifecycle_state == "SUCCEEDED"
    assert vm.run("cat state.txt").content.text == "kept\n"


def test_var_tmp_is_the_instances_own_and_goes_with_it(emu: EmulatorHandle, vm: VM, compute) -> None:  # type: ignore[no-untyped-def]
    """The worker scripts keep the downloaded image in /var/tmp: on the VM's boot volume, so
    terminating the VM frees it. The host's /var/tmp never sees it."""
    name = f"vdimport-test-{vm.id[-12:]}"
    assert vm.run(f"mkdir -p /var/tmp/{name} && echo image > /var/tmp/{name}/image").lifecycle_state == "SUCCEEDED"
    assert vm.run(f"cat /var/tmp/{name}/image").content.text == "image\n"
    assert not Path("/var/tmp", name).exists()
    own = instance_home(emu, vm.id).parent / "var-tmp" / name / "image"
    assert own.read_text() == "image\n"
    compute.terminate_instance(vm.id)
    assert not own.exists()


@needs_root
def test_two_volumes_and_a_read_only_attachment(emu: EmulatorHandle, vm: VM) -> None:
    first, second = vm.new_volume(), vm.new_volume()
    a1 = vm.attach(first, "/dev/oracleoci/oraclevdb")
    a2 = vm.attach(second, "/dev/oracleoci/oraclevdc", read_only=True)
    script = (
        "set -u\n"
        "printf first | sudo dd of=/dev/oracleoci/oraclevdb bs=512 seek=8 conv=notrunc status=none && echo rw-ok\n"
        "printf second | sudo dd of=/dev/oracleoci/oraclevdc bs=512 seek=8 conv=notrunc status=none 2>/dev/null || echo ro-refused\n"
        "ls /dev/oracleoci | grep -c '^oraclevd[bc][0-9]*$'\n"
    )
    execution = vm.run(script)
    assert execution.content.text == "rw-ok\nro-refused\n34\n"  # 2 disks + 16 partition links each
    for attachment in (a1, a2):
        vm.detach(attachment)
    with open(backing_file(emu, first), "rb") as f:
        f.seek(8 * 512)
        assert f.read(5) == b"first"
    with open(backing_file(emu, second), "rb") as f:
        f.seek(8 * 512)
        assert f.read(6) != b"second"


def test_file_mode_links_straight_to_the_backing_file(emu: EmulatorHandle, vm: VM) -> None:
    volume = vm.new_volume()
    attachment = vm.attach(volume)
    path = backing_file(emu, volume)
    emu.configure(device_mode="file")
    try:
        execution = vm.run(
            "readlink /dev/oracleoci/oraclevdb\n"
            "printf file-mode | dd of=/dev/oracleoci/oraclevdb bs=1 seek=1048576 conv=notrunc status=none\n"
            "test -e /dev/oracleoci/oraclevdb1 || echo no-partition-links\n"
        )
    finally:
        emu.configure(device_mode="auto")
    assert execution.content.text == f"{path}\nno-partition-links\n"
    assert loops_of(path) == ""
    vm.detach(attachment)
    with open(path, "rb") as f:
        f.seek(MiB)
        assert f.read(9) == b"file-mode"


@needs_root
def test_stale_loop_devices_are_detached_at_start(fresh_emulator: EmulatorHandle) -> None:
    fresh_emulator.stop()
    volumes = fresh_emulator.data_dir / "volumes"
    volumes.mkdir(exist_ok=True)
    stale = volumes / "stale.img"
    with open(stale, "wb") as f:
        f.truncate(16 * MiB)
    subprocess.run(["losetup", "--find", "--show", str(stale)], check=True, capture_output=True)
    assert loops_of(stale) != ""
    restarted = EmulatorHandle.start(fresh_emulator.data_dir)
    try:
        assert loops_of(stale) == ""
    finally:
        restarted.stop()


# --- without root: a user namespace, and /dev rebuilt when /dev/oracleoci cannot be made ----------
def _unprivileged_userns_works() -> bool:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return False
    probe = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "unshare", "--map-root-user", "--mount", "true"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _unprivileged_userns_works(), reason="needs root to become nobody, and unprivileged user namespaces")
@pytest.mark.parametrize("dev_mode", ["tmpfs", "rebuild"])
def test_sandbox_wrapper_as_an_unprivileged_user(dev_mode: str) -> None:
    """What the emulator runs when it is not root (device_mode file): ``unshare --map-root-user``."""
    from vdimport_local.emulator.vm import SUDO_SHIM, SYSTEM_PATH, WRAPPER, Disk, sandbox_command

    work = Path(tempfile.mkdtemp(prefix="vdimport-userns-", dir="/tmp"))
    try:
        (work / "wrapper.sh").write_text(WRAPPER)
        (work / "shim").mkdir()
        (work / "shim" / "sudo").write_text(SUDO_SHIM)
        (work / "shim" / "sudo").chmod(0o755)
        (work / "stage").mkdir()
        (work / "script").write_text(
            "id -u\nsudo id -u\nreadlink /dev/oracleoci/oraclevdb\n"
            "printf userns | dd of=/dev/oracleoci/oraclevdb bs=1 seek=512 conv=notrunc status=none\n"
            "echo x > /dev/null && head -c 1 /dev/zero | wc -c\nls /dev/oracleoci\n"
            "cat /etc/vdimport-probe.conf\n"
        )
        (work / "etc" / "upper").mkdir(parents=True)  # cloud-init's files over /etc, as an unprivileged user too
        (work / "etc" / "work").mkdir()
        (work / "etc" / "upper" / "vdimport-probe.conf").write_text("from cloud-init\n")
        disk = work / "disk.img"
        with open(disk, "wb") as f:
            f.truncate(MiB)
        for path in work.rglob("*"):
            os.chown(path, 65534, 65534)
        os.chown(work, 65534, 65534)
        disks = [Disk(name="oraclevdb", path=disk, target=str(disk))]
        (work / "var-tmp").mkdir()
        argv = sandbox_command(
            work / "wrapper.sh",
            work / "ready",
            work / "stage",
            dev_mode,
            work / "var-tmp",
            work / "etc",
            work / "script",
            disks,
            map_root=True,
        )
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
            env={"PATH": f"{work / 'shim'}:{SYSTEM_PATH}", "HOME": str(work), "USER": "ocarun", "LANG": "C.UTF-8"},
            cwd=work,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout == f"0\n0\n{disk}\n1\noraclevdb\nfrom cloud-init\n"
        assert not Path("/etc/vdimport-probe.conf").exists()
        assert (work / "ready").exists()
        with open(disk, "rb") as f:
            f.seek(512)
            assert f.read(6) == b"userns"
        assert host_device_dir() == []
    finally:
        shutil.rmtree(work)
