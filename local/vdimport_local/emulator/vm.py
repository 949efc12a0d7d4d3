"""Worker VMs: the Oracle Cloud Agent of each emulated instance, running Run Command scripts here.

Each instance has one agent thread that takes its commands in order, one at a time. A
command waits (ACCEPTED) until the instance is RUNNING with its "Compute Instance Run
Command" plugin not disabled, then runs (IN_PROGRESS) and ends SUCCEEDED, FAILED,
TIMED_OUT or CANCELED.

The sandbox: the script is written to a file and run with bash (or its own ``#!``
interpreter, as the real agent does) on this machine, as root, in a private mount namespace
and a fresh PID namespace, with the instance's home as cwd and HOME and a clean
environment (PATH, HOME, USER=ocarun, LANG=C.UTF-8). Nothing from a command is ever put
into a shell line: scripts are files, device names are arguments of a fixed wrapper.
Inside, ``/dev/oracleoci`` is a private tmpfs holding ``oraclevdX`` links to each attached
volume, and ``oraclevdX1..16`` links to its partitions as OCI's udev rules make them.
A ``cloud-init`` shim answers ``cloud-init status --wait`` with ``status: done``, and the
files the instance's cloud-config writes under ``/etc`` are there (``cloudinit.py``: an
overlay of the machine's ``/etc``, mounts under it kept), as on a VM that booted with them.

``device_mode``: ``loop`` attaches each volume's sparse file as a loop device for the
length of one command (``losetup`` + ``partx -a``; torn down with ``partx -d`` then
``losetup -d``). ``--partscan`` is used only when this kernel parses GPT itself (probed
once): on a kernel without partition parsers a partition-scanning loop device answers a
re-read (``blockdev --rereadpt``, sfdisk's own re-read) by silently dropping every
partition, while without it the re-read fails loudly and ``partx -u``/``partprobe``
(which add partitions from user space) work either way. ``file`` links straight to the backing files (no
partition links; ``unshare --map-root-user`` when not root); ``auto`` picks loop when
running as root with a working ``/dev/loop-control``.

Differences from a real VM, on purpose:

* Processes a script leaves behind die with it (the PID namespace ends with the script),
  so volumes can be detached cleanly; a step must not rely on background work outliving
  its command. Files in the home directory persist between commands, like a VM's disk.
* The instance terminated while a script runs: the script is killed and, as on OCI where
  the agent is gone with the VM, nobody reports back: the execution stays IN_PROGRESS
  until its timeout, then TIMED_OUT (never, with timeout 0). Callers must watch the
  instance's state.
* The emulator restarted while a script ran: the script is killed (at shutdown, or at the
  next start if the emulator died) and the execution ends FAILED, "agent restarted".
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import ids
from .cloudinit import etc_overlay
from .services.compute import INSTANCE, attached_volumes, instance_home, instance_var_tmp
from .services.instanceagent import COMMAND, EXECUTION, TERMINAL
from .store import Resource

if TYPE_CHECKING:
    from .app import Emulator

log = logging.getLogger("vdimport.emulator.vm")

PLUGIN = "Compute Instance Run Command"
TEXT_OUTPUT_LIMIT = 1024  # OCI keeps the last 1 KB of the output as text
MAX_SOURCE_BYTES = 16 << 20  # a script fetched from Object Storage
POLL_SECONDS = 0.05
PUBLISH_ATTEMPTS = 6  # an output PUT through a PAR, retried on RETRIED_STATUSES
RETRIED_STATUSES = (429, 500, 502, 503, 504)
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_DEVICE_DIR = Path("/dev/oracleoci")
DEVICE_PATH = re.compile(r"^/dev/oracleoci/(oraclevd[a-z]{1,2})$")

# The sandbox's PID 1: prepares /dev/oracleoci, marks itself ready, runs the script and
# exits with its status. Fixed text; everything variable arrives as arguments.
WRAPPER = r"""# vdimport emulator: the worker VM's view of this machine, then the command's script.
# Arguments: READY_FILE STAGE_DIR DEV_MODE VAR_TMP ETC SCRIPT [NAME TARGET WITH_PARTITIONS]...
# VAR_TMP: the instance's own /var/tmp (its boot volume's), gone with the instance.
# ETC: "-", or a directory with upper/ and work/: cloud-init's files over this machine's /etc.
# DEV_MODE tmpfs: a tmpfs over the host's (empty) /dev/oracleoci; rebuild: no /dev/oracleoci
# on this machine and no right to make one, so /dev itself is rebuilt on a tmpfs.
set -eu
ready=$1 stage=$2 dev_mode=$3 var_tmp=$4 etc=$5 script=$6
shift 6
mount --bind -- "$var_tmp" /var/tmp
if [ "$etc" != - ]; then
    mkdir -p -- "$etc/host"
    mount --rbind /etc "$etc/host"
    submounts=$(findmnt -rno TARGET | grep '^/etc/' || true)
    if mount -t overlay vdimport-etc -o "lowerdir=/etc,upperdir=$etc/upper,workdir=$etc/work" /etc; then
        for m in $submounts; do [ ! -e "$m" ] || mount --bind -- "$etc/host$m" "$m"; done
    else
        echo "vdimport emulator: cloud-init's files under /etc are not in this VM (no overlay mount)" >&2
    fi
fi
if [ "$dev_mode" = tmpfs ]; then
    mount -t tmpfs -o mode=0755,size=1m oracleoci /dev/oracleoci
else
    mount --rbind /dev "$stage"
    mount -t tmpfs -o mode=0755 dev /dev
    for entry in "$stage"/* "$stage"/.[!.]*; do
        [ -e "$entry" ] || [ -L "$entry" ] || continue
        name=${entry##*/}
        if [ "$name" = oracleoci ]; then
            continue  # the worker VM gets its own
        elif [ -L "$entry" ]; then
            cp -P -- "$entry" "/dev/$name"
        elif [ -d "$entry" ]; then
            mkdir -- "/dev/$name"
            mount --rbind -- "$entry" "/dev/$name"
        else
            : > "/dev/$name"
            mount --bind -- "$entry" "/dev/$name"
        fi
    done
    umount -l "$stage"
    mkdir -m 0755 /dev/oracleoci
fi
while [ $# -ge 3 ]; do
    ln -s -- "$2" "/dev/oracleoci/$1"
    if [ "$3" = 1 ]; then
        k=1
        while [ $k -le 16 ]; do
            ln -s -- "${2}p$k" "/dev/oracleoci/$1$k"
            k=$((k + 1))
        done
    fi
    shift 3
done
: > "$ready"
set +eu
if [ "$(head -c 2 -- "$script")" = "#!" ]; then
    "$script"
else
    bash -- "$script"
fi
"""

CLOUD_INIT_SHIM = r"""#!/bin/bash
# vdimport emulator: the worker VM has no cloud-init run to wait for; it is always done.
case "${1:-}" in
    status)
        echo "status: done"
        for arg in "$@"; do
            if [ "$arg" = "--long" ] || [ "$arg" = "-l" ]; then
                echo "extended_status: done"
                echo "boot_status_code: enabled-by-generator"
                echo "detail:"
                echo "DataSourceOracle"
                echo "errors: []"
            fi
        done
        exit 0 ;;
    *)
        echo "cloud-init (vdimport emulator shim): only 'cloud-init status' is emulated" >&2
        exit 1 ;;
esac
"""

UDEVADM_SHIM = r"""#!/bin/bash
# vdimport emulator: this machine has no udev; device nodes appear synchronously (devtmpfs)
# and /dev/oracleoci is static, so there is nothing to settle or trigger.
case "${1:-}" in
    settle|trigger|control) exit 0 ;;
    *) echo "udevadm (vdimport emulator shim): only settle and trigger are emulated" >&2; exit 1 ;;
esac
"""

SUDO_SHIM = r"""#!/bin/bash
# vdimport emulator: scripts already run as root here; sudo just runs its command.
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; break ;;
        -u|-g|-C|-D|-h|-p|-r|-t|-U|-T) shift 2 ;;
        -*) shift ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || exit 0
exec env -- "$@"
"""


class AgentError(Exception):
    """A command could not run; the message goes into the execution's ``content.message``."""


@dataclass
class Disk:
    name: str  # oraclevdb
    path: Path  # the volume's backing file
    read_only: bool = False
    target: str = ""  # what the link points at: /dev/loopN or the file
    partitions: bool = False


@dataclass
class RunResult:
    outcome: str  # exited | timeout | canceled | gone (instance terminated) | instance-stopped | stopped (emulator)
    exit_code: int | None
    output: Path


def tail_text(data: bytes, limit: int = TEXT_OUTPUT_LIMIT) -> str:
    """The last ``limit`` bytes as text, without half a UTF-8 character at the cut."""
    tail = data[-limit:]
    if len(data) > limit:
        skip = 0
        while skip < min(3, len(tail)) and tail[skip] & 0xC0 == 0x80:
            skip += 1
        tail = tail[skip:]
    return tail.decode("utf-8", errors="replace")


def _exit_status(returncode: int) -> int:
    """A shell's view of a child's status: 128+N for death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AgentError(f"{' '.join(argv)} failed: {(result.stderr or result.stdout).strip()}")
    return result


class WorkerVMs:
    def __init__(self, emulator: Emulator):
        self.emulator = emulator
        self.root = emulator.data_dir / "vm"
        self._lock = threading.Lock()
        self._queues: dict[str, collections.deque[str]] = {}
        self._agents: dict[str, threading.Thread] = {}
        self._processes: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}  # command -> (instance, process)
        self._cancel: set[str] = set()
        self._gone: set[str] = set()
        self._stop = threading.Event()
        self._mode_note: tuple[str, str] | None = None
        self._gpt_scan: bool | None = None
        self._probe_lock = threading.Lock()
        self._install()
        emulator.store.on_state(self._on_state)
        try:
            self.device_mode()  # say now how volumes will look; it is decided again for each command
        except AgentError as exc:
            log.warning("%s: Run Command scripts will fail until device_mode is changed", exc)
        self.detach_stale_loops()
        self._recover()

    # --- API side (called by the service under the store lock: never block) --------
    def submit(self, command_id: str, instance_id: str) -> None:
        with self._lock:
            self._queues.setdefault(instance_id, collections.deque()).append(command_id)
            agent = self._agents.get(instance_id)
            if agent is None or not agent.is_alive():
                agent = threading.Thread(target=self._agent, args=(instance_id,), name=f"agent-{instance_id[-8:]}", daemon=True)
                self._agents[instance_id] = agent
                agent.start()

    def cancel(self, command_id: str) -> None:
        """Cancel a command: at once while it waits, by killing its script while it runs."""
        store = self.emulator.store
        with store.lock:
            execution = store.find(EXECUTION, command_id)
            if execution is None or execution.get("_lazyTimeout"):
                return  # unknown, or its agent is gone with its instance: nobody acks the cancel
            if execution["lifecycleState"] == "ACCEPTED":
                ready, _ = self._agent_state(execution["instanceId"])
                self._finish(
                    command_id, "CANCELED", message="Command canceled before it was delivered", delivery="ACKED_CANCELED" if ready else None
                )
                return
        with self._lock:
            self._cancel.add(command_id)

    def instance_terminated(self, instance_id: str) -> None:
        """The instance is going away: kill its running script and drop its /var/tmp, as the
        boot volume goes with a terminated VM (called under the store lock)."""
        with self._lock:
            self._gone.add(instance_id)
            victims = [p for iid, p in self._processes.values() if iid == instance_id]
        for process in victims:
            self._kill(process)
        shutil.rmtree(instance_var_tmp(self.emulator.data_dir, instance_id), ignore_errors=True)

    def output_path(self, instance_id: str, command_id: str) -> Path:
        return self._run_dir(instance_id, command_id) / "output"

    def stop(self) -> None:
        """Emulator shutdown: kill every script, tear down its devices, leave states for the next start."""
        self._stop.set()
        with self._lock:
            processes = [p for _, p in self._processes.values()]
            agents = list(self._agents.values())
        for process in processes:
            self._kill(process)
        for agent in agents:
            agent.join(timeout=15)

    # --- start-up ------------------------------------------------------------------
    def _install(self) -> None:
        for sub in ("bin", "sudo-shim", "fallback"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for path, text in (
            (self.root / "wrapper.sh", WRAPPER),
            (self.root / "bin" / "cloud-init", CLOUD_INIT_SHIM),
            (self.root / "sudo-shim" / "sudo", SUDO_SHIM),
            (self.root / "fallback" / "udevadm", UDEVADM_SHIM),
        ):
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
            path.chmod(0o755)
        if os.geteuid() == 0 and not HOST_DEVICE_DIR.exists():
            try:
                HOST_DEVICE_DIR.mkdir(mode=0o755)
                log.info("created %s (empty; each worker VM mounts its own view over it)", HOST_DEVICE_DIR)
            except OSError as exc:
                log.warning("cannot create %s: %s; worker VMs will rebuild /dev privately", HOST_DEVICE_DIR, exc)

    def detach_stale_loops(self) -> None:
        """Loop devices on this data directory's volumes left by an emulator that died."""
        if os.geteuid() != 0 or not shutil.which("losetup"):
            return
        volumes = (self.emulator.data_dir / "volumes").resolve()
        listing = _run(["losetup", "--list", "--noheadings", "--raw", "--output", "NAME,BACK-FILE"], check=False)
        for line in listing.stdout.splitlines():
            name, _, back = line.partition(" ")
            back = back.strip().removesuffix(" (deleted)").replace("\\x20", " ")
            if back and Path(back).is_relative_to(volumes):
                log.warning("detaching stale loop device %s of %s", name, back)
                self._detach_loop(name)

    def _recover(self) -> None:
        """Executions of a previous emulator process: running ones failed, waiting ones wait again."""
        store = self.emulator.store
        waiting = []
        with store.lock:
            for execution in store.all(EXECUTION):
                if execution.get("_lazyTimeout"):
                    continue
                if execution["lifecycleState"] == "IN_PROGRESS":
                    self._kill_orphan(execution)
                    output = self.output_path(execution["instanceId"], execution["id"])
                    self._finish(
                        execution["id"],
                        "FAILED",
                        message="Oracle Cloud Agent restarted while the command was running; it did not complete",
                        output=output.read_bytes() if output.exists() else b"",
                    )
                elif execution["lifecycleState"] == "ACCEPTED":
                    waiting.append(execution)
            store.save()
        for execution in sorted(waiting, key=lambda e: e["sequenceNumber"]):
            self.submit(execution["id"], execution["instanceId"])

    def _kill_orphan(self, execution: Resource) -> None:
        """The script of an emulator that was killed outright may still run: end it."""
        pid_file = self._run_dir(execution["instanceId"], execution["id"]) / "pid"
        try:
            pid = int(pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if str(self.root / "wrapper.sh").encode() in cmdline:
            log.warning("killing orphaned script of %s (pid %d)", execution["id"], pid)
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)

    # --- the agent: one thread per instance, one command at a time -------------------
    def _agent(self, instance_id: str) -> None:
        while not self._stop.is_set():
            with self._lock:
                queue = self._queues.get(instance_id)
                if not queue:
                    self._queues.pop(instance_id, None)
                    self._agents.pop(instance_id, None)
                    return
                command_id = queue.popleft()
            try:
                self._execute(command_id, instance_id)
            except Exception as exc:
                log.exception("run command %s failed", command_id)
                if not self._stop.is_set():
                    self._finish(command_id, "FAILED", message=f"emulator error: {exc}")
            finally:
                with self._lock:
                    self._cancel.discard(command_id)

    def _execute(self, command_id: str, instance_id: str) -> None:
        store = self.emulator.store
        with store.lock:
            command = store.find(COMMAND, command_id)
            execution = store.find(EXECUTION, command_id)
            if command is None or execution is None or execution["lifecycleState"] != "ACCEPTED":
                return
            timeout = int(command["executionTimeOutInSeconds"])
            created = float(execution["_created"])
            source = dict(command["content"]["source"])
            output = dict(command["content"]["output"])
            fields = {  # what a RunCommand fault rule can match on
                "instanceId": instance_id,
                "instanceAgentCommandId": command_id,
                "displayName": command["displayName"],
                "compartmentId": command["compartmentId"],
            }

        started = self._deliver(command_id, instance_id, created, timeout)
        if started is None:
            return
        deadline = started + timeout if timeout else float("inf")
        if self._injected_fault(command_id, instance_id, fields, deadline, timeout):
            return
        try:
            script = self._fetch_source(source)
        except AgentError as exc:
            self._finish(command_id, "FAILED", message=f"Could not get the script: {exc}")
            return
        try:
            result = self._run_script(instance_id, command_id, script, deadline)
        except AgentError as exc:
            self._finish(command_id, "FAILED", message=f"Could not run the script: {exc}")
            return
        self._report(command_id, instance_id, output, result, timeout, deadline)

    def _deliver(self, command_id: str, instance_id: str, created: float, timeout: int) -> float | None:
        """Wait (ACCEPTED) until the VM runs with the plugin on, then ack (IN_PROGRESS): the time it started.

        None when the command will not run here: canceled while waiting, the instance gone,
        the emulator stopping, or not delivered within its timeout (TIMED_OUT, EXPIRED).
        """
        store = self.emulator.store
        while not self._stop.is_set():
            now = time.time()
            with store.lock:
                execution = store.get(EXECUTION, command_id)
                if execution["lifecycleState"] != "ACCEPTED":
                    return None  # canceled while waiting
                ready, gone = self._agent_state(instance_id)
                if ready:
                    execution["deliveryState"] = "ACKED"
                    execution["timeUpdated"] = ids.now_iso(now)
                    execution["_started"] = now
                    store.set_state(EXECUTION, execution, "IN_PROGRESS", at=now)
                    store.touch()
                    store.save()
                    return now
                if gone:
                    self._expire_later(execution, created + timeout if timeout else None)
                    return None
            if timeout and now >= created + timeout:
                self._finish(
                    command_id,
                    "TIMED_OUT",
                    message=f"The command was not delivered within {timeout} seconds: "
                    f"the instance is not running or its {PLUGIN} plugin is disabled",
                    delivery="EXPIRED",
                )
                return None
            time.sleep(POLL_SECONDS)
        return None

    def _injected_fault(self, command_id: str, instance_id: str, fields: dict[str, Any], deadline: float, timeout: int) -> bool:
        """Apply a ``RunCommand`` fault rule instead of running the script (a hang with ``seconds``:
        before running it); False when the script is to run."""
        rule = self.emulator.faults.take("RunCommand", lambda: fields)
        if rule is None:
            return False
        log.info("fault %s on run command %s: %s", rule.id, command_id, rule.action)
        if rule.action == "timeout":
            self._finish(command_id, "TIMED_OUT", message=f"Command timed out after {timeout} seconds (injected fault)")
        elif rule.action == "hang":
            until = time.time() + rule.seconds if rule.seconds > 0 else None
            return self._hang(command_id, instance_id, deadline, timeout, until)
        else:
            self._finish(command_id, "FAILED", exit_code=rule.exit_code, message=f"{rule.message} (injected fault)", output=b"")
        return True

    def _hang(self, command_id: str, instance_id: str, deadline: float, timeout: int, until: float | None = None) -> bool:
        """An injected hang: IN_PROGRESS until the timeout, a cancel, or the instance going away;
        with ``until``, only until then: False when the script is to run after all."""
        while not self._stop.is_set():
            if self._cancel_requested(command_id):
                self._finish(command_id, "CANCELED", message="Command canceled", delivery="ACKED_CANCELED", output=b"")
                return True
            if self._is_gone(instance_id):
                with self.emulator.store.lock:
                    self._expire_later(self.emulator.store.get(EXECUTION, command_id), deadline if timeout else None)
                return True
            if time.time() >= deadline:
                self._finish(command_id, "TIMED_OUT", message=f"Command timed out after {timeout} seconds", output=b"")
                return True
            if until is not None and time.time() >= until:
                return False
            time.sleep(POLL_SECONDS)
        return True

    def _report(self, command_id: str, instance_id: str, output: dict[str, Any], result: RunResult, timeout: int, deadline: float) -> None:
        if result.outcome == "stopped":
            return  # the next start reports it
        if result.outcome == "gone":
            with self.emulator.store.lock:
                self._expire_later(self.emulator.store.get(EXECUTION, command_id), deadline if timeout else None)
            return
        data = result.output.read_bytes() if result.output.exists() else b""
        if result.outcome == "timeout":
            state, code, message, delivery = "TIMED_OUT", None, f"Command timed out after {timeout} seconds", None
        elif result.outcome == "instance-stopped":
            state, code, message, delivery = "FAILED", None, "The instance stopped or rebooted while the command was running", None
        elif result.outcome == "canceled":
            state, code, message, delivery = "CANCELED", None, "Command canceled", "ACKED_CANCELED"
        elif result.exit_code == 0:
            state, code, message, delivery = "SUCCEEDED", 0, "Command succeeded", None
        else:
            state, code, message, delivery = "FAILED", result.exit_code, f"Command failed with exit code {result.exit_code}", None
        if output["outputType"] != "TEXT":
            try:
                self._publish(output, result.output)
            except AgentError as exc:
                message = f"{message}; the output could not be written: {exc}"
                if state == "SUCCEEDED":
                    state = "FAILED"
        self._finish(command_id, state, exit_code=code, message=message, delivery=delivery, output=data)

    # --- execution state --------------------------------------------------------------
    def _finish(
        self,
        command_id: str,
        state: str,
        exit_code: int | None = None,
        message: str = "",
        delivery: str | None = None,
        output: bytes | None = None,
    ) -> None:
        store = self.emulator.store
        with store.lock:
            execution = store.find(EXECUTION, command_id)
            if execution is None or execution["lifecycleState"] in TERMINAL:
                return
            content = execution["content"]
            content["exitCode"] = exit_code
            content["message"] = message
            if content["outputType"] == "TEXT":
                text = tail_text(output or b"")
                content["text"] = text
                content["textSha256"] = hashlib.sha256(text.encode()).hexdigest()
            if delivery:
                execution["deliveryState"] = delivery
            execution["timeUpdated"] = ids.now_iso()
            store.set_state(EXECUTION, execution, state)
            store.touch()
        store.save()
        log.info("run command %s: %s %s", command_id, state, message)

    def _expire_later(self, execution: Resource, deadline: float | None) -> None:
        """The agent is gone with its instance: TIMED_OUT once the timeout has passed (store lock held)."""
        store = self.emulator.store
        execution["_lazyTimeout"] = True
        execution["_deadline"] = deadline
        if deadline is not None:
            store.schedule(EXECUTION, execution, [(max(0.0, deadline - store.clock()), "TIMED_OUT")])
        store.touch()

    def _on_state(self, kind: str, resource: Resource, state: str) -> None:
        if kind != EXECUTION or state != "TIMED_OUT" or not resource.get("_lazyTimeout"):
            return
        content = resource["content"]
        content["exitCode"] = None
        content["message"] = "Command timed out: Oracle Cloud Agent stopped reporting (the instance is gone)"
        if content["outputType"] == "TEXT":
            content["text"] = ""
            content["textSha256"] = hashlib.sha256(b"").hexdigest()
        if resource.get("deliveryState") == "VISIBLE":
            resource["deliveryState"] = "EXPIRED"
        resource["timeUpdated"] = ids.now_iso(resource.get("_deadline"))

    def _agent_state(self, instance_id: str) -> tuple[bool, bool]:
        """(the agent can take commands, the instance is gone). Store lock held."""
        instance = self.emulator.store.find(INSTANCE, instance_id)
        if instance is None or instance.get("lifecycleState") in ("TERMINATING", "TERMINATED") or instance_id in self._gone:
            return False, True
        return instance.get("lifecycleState") == "RUNNING" and run_command_enabled(instance), False

    def _instance_state(self, instance_id: str) -> str | None:
        with self.emulator.store.lock:
            instance = self.emulator.store.find(INSTANCE, instance_id)
            return None if instance is None else str(instance.get("lifecycleState"))

    def _is_gone(self, instance_id: str) -> bool:
        if instance_id in self._gone:
            return True
        with self.emulator.store.lock:
            return self._agent_state(instance_id)[1]

    def _cancel_requested(self, command_id: str) -> bool:
        with self._lock:
            return command_id in self._cancel

    # --- script source and output targets ---------------------------------------------
    def _fetch_source(self, source: dict[str, Any]) -> bytes:
        kind = source["sourceType"]
        if kind == "TEXT":
            return str(source["text"]).encode()
        if kind == "OBJECT_STORAGE_URI":
            uri = _http_url(str(source["sourceUri"]))
            try:
                with urllib.request.urlopen(uri, timeout=60) as response:  # noqa: S310 - http(s) only, checked above
                    data = bytes(response.read(MAX_SOURCE_BYTES + 1))
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise AgentError(f"GET {_shown(uri)}: {exc}") from None
        else:
            data = self._object_storage_get(source["namespaceName"], source["bucketName"], source["objectName"])
        if len(data) > MAX_SOURCE_BYTES:
            raise AgentError(f"the script is larger than {MAX_SOURCE_BYTES} bytes")
        return data

    def _publish(self, output: dict[str, Any], path: Path) -> None:
        size = path.stat().st_size if path.exists() else 0
        if output["outputType"] == "OBJECT_STORAGE_URI":
            self._put_to_par(_http_url(str(output["outputUri"])), path, size)
        else:
            self._object_storage_put(output["namespaceName"], output["bucketName"], output["objectName"], path, size)

    def _put_to_par(self, uri: str, path: Path, size: int) -> None:
        """PUT the output to a PAR URL; throttling and transient 5xx are retried with back-off, as the
        tuple target's SDK client (DEFAULT_RETRY_STRATEGY) retries them."""
        for attempt in range(PUBLISH_ATTEMPTS):
            with _open_output(path, size) as body:
                request = urllib.request.Request(uri, data=body, method="PUT")  # noqa: S310 - http(s) only
                request.add_header("Content-Length", str(size))
                request.add_header("Content-Type", "text/plain")
                try:
                    with urllib.request.urlopen(request, timeout=300) as response:  # noqa: S310 - the caller's URL
                        response.read()
                    return
                except urllib.error.HTTPError as exc:
                    if exc.code not in RETRIED_STATUSES or attempt == PUBLISH_ATTEMPTS - 1:
                        raise AgentError(f"PUT {_shown(uri)}: HTTP {exc.code} {exc.read()[:300]!r}") from None
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    raise AgentError(f"PUT {_shown(uri)}: {exc}") from None
            time.sleep(min(0.2 * 2**attempt, 5.0))

    def _object_storage(self) -> Any:
        import oci

        config = oci.config.from_file(str(self.emulator.credentials.config_path))
        return oci.object_storage.ObjectStorageClient(
            config, service_endpoint=self.emulator.endpoint, retry_strategy=oci.retry.DEFAULT_RETRY_STRATEGY
        )

    def _object_storage_get(self, namespace: str, bucket: str, name: str) -> bytes:
        with _as_agent_error(f"GetObject {namespace}/{bucket}/{name}"):
            return bytes(self._object_storage().get_object(namespace, bucket, name).data.content)

    def _object_storage_put(self, namespace: str, bucket: str, name: str, path: Path, size: int) -> None:
        with _as_agent_error(f"PutObject {namespace}/{bucket}/{name}"), _open_output(path, size) as body:
            self._object_storage().put_object(namespace, bucket, name, body, content_length=size, content_type="text/plain")

    # --- the sandbox ---------------------------------------------------------------------
    def _run_dir(self, instance_id: str, command_id: str) -> Path:
        return self.emulator.data_dir / "instances" / instance_id / "runcommand" / command_id

    def device_mode(self) -> tuple[str, str]:
        """("loop" | "file", why), from ``settings.device_mode`` and what this machine allows."""
        wanted = self.emulator.settings.device_mode
        loop_ok, why = loop_devices_usable()
        if wanted == "loop":
            if not loop_ok:
                raise AgentError(f"device_mode is loop but loop devices cannot be used: {why}")
            mode = ("loop", "device_mode=loop")
        elif wanted == "file":
            mode = ("file", "device_mode=file")
        elif loop_ok:
            mode = ("loop", f"device_mode=auto: {why}")
        else:
            mode = ("file", f"device_mode=auto: {why}")
        if mode != self._mode_note:
            self._mode_note = mode
            log.info("worker VMs see volumes as %s (%s)", "loop devices" if mode[0] == "loop" else "their backing files", mode[1])
        return mode

    def _attached_disks(self, instance_id: str) -> list[Disk]:
        store = self.emulator.store
        disks: dict[str, Disk] = {}
        with store.lock:
            for volume in attached_volumes(store, instance_id):
                found = DEVICE_PATH.match(volume.get("device") or "")
                if not found:
                    log.warning(
                        "attachment %s has no consistent device path (%r): not visible in the VM",
                        volume["attachmentId"],
                        volume.get("device"),
                    )
                    continue
                name = found.group(1)
                if name in disks:
                    log.warning("attachment %s: device %s is taken by another attachment", volume["attachmentId"], name)
                    continue
                disks[name] = Disk(name=name, path=Path(volume["path"]), read_only=bool(volume.get("isReadOnly")))
        return sorted(disks.values(), key=lambda d: d.name)

    def _run_script(self, instance_id: str, command_id: str, script: bytes, deadline: float) -> RunResult:
        store = self.emulator.store
        with store.lock:
            instance = store.find(INSTANCE, instance_id)
            home = Path(instance["_home"]) if instance and instance.get("_home") else instance_home(self.emulator.data_dir, instance_id)
            user_data = ((instance or {}).get("metadata") or {}).get("user_data")
        etc = etc_overlay(user_data, home.parent / "cloud-init")
        home.mkdir(parents=True, exist_ok=True)
        run_dir = self._run_dir(instance_id, command_id)
        stage = run_dir / "stage"
        stage.mkdir(parents=True, exist_ok=True)
        script_path = run_dir / "script"
        script_path.write_bytes(script)
        script_path.chmod(0o700)
        ready = run_dir / "ready"
        ready.unlink(missing_ok=True)
        output = run_dir / "output"

        mode, _ = self.device_mode()
        root = os.geteuid() == 0
        disks = self._attached_disks(instance_id)
        attached: list[str] = []
        try:
            for disk in disks:
                if mode == "loop":
                    disk.target = self._attach_loop(disk.path, disk.read_only)
                    disk.partitions = True
                    attached.append(disk.target)
                else:
                    disk.target = str(disk.path)
            dev_mode = "tmpfs" if HOST_DEVICE_DIR.is_dir() else "rebuild"
            var_tmp = instance_var_tmp(self.emulator.data_dir, instance_id)
            var_tmp.mkdir(mode=0o1777, parents=True, exist_ok=True)
            argv = sandbox_command(self.root / "wrapper.sh", ready, stage, dev_mode, var_tmp, etc, script_path, disks, map_root=not root)
            path = [str(self.root / "bin")]
            if not root or not shutil.which("sudo", path=SYSTEM_PATH):
                path.append(str(self.root / "sudo-shim"))
            path.append(SYSTEM_PATH)
            path.append(str(self.root / "fallback"))  # after the system's own tools: used only when they are missing
            env = {"PATH": ":".join(path), "HOME": str(home), "USER": "ocarun", "LANG": "C.UTF-8"}
            log.info(
                "run command %s on %s: %s", command_id, instance_id, ", ".join(f"{d.name} -> {d.target}" for d in disks) or "no volumes"
            )
            return self._supervise(instance_id, command_id, argv, env, home, output, ready, deadline)
        finally:
            for device in attached:
                self._detach_loop(device)

    def _supervise(
        self,
        instance_id: str,
        command_id: str,
        argv: list[str],
        env: dict[str, str],
        home: Path,
        output: Path,
        ready: Path,
        deadline: float,
    ) -> RunResult:
        with open(output, "wb") as out:
            process = subprocess.Popen(
                argv, cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        (output.parent / "pid").write_text(str(process.pid))
        with self._lock:
            self._processes[command_id] = (instance_id, process)
            killed_already = instance_id in self._gone or self._stop.is_set()
        if killed_already:
            self._kill(process)
        outcome = ""
        try:
            while True:
                try:
                    returncode = process.wait(timeout=POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if self._stop.is_set():
                    outcome = "stopped"
                elif self._cancel_requested(command_id):
                    outcome = "canceled"
                elif self._is_gone(instance_id):
                    outcome = "gone"
                elif self._instance_state(instance_id) in ("STOPPING", "STOPPED", "STARTING"):
                    outcome = "instance-stopped"
                elif time.time() >= deadline:
                    outcome = "timeout"
                if outcome:
                    self._kill(process)
                    returncode = process.wait()
                    break
        finally:
            with self._lock:
                self._processes.pop(command_id, None)
            if process.poll() is None:
                self._kill(process)
                process.wait()
        if not outcome and returncode < 0 and (self._stop.is_set() or self._is_gone(instance_id)):
            outcome = "stopped" if self._stop.is_set() else "gone"
        if not outcome and not ready.exists():
            raise AgentError(f"the worker VM sandbox did not start: {output.read_bytes()[-2000:].decode(errors='replace').strip()}")
        return RunResult(outcome or "exited", _exit_status(returncode), output)

    @staticmethod
    def _kill(process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)

    # --- loop devices --------------------------------------------------------------------
    def _attach_loop(self, path: Path, read_only: bool = False) -> str:
        if not path.exists():
            raise AgentError(f"the volume's backing file {path} does not exist")
        flags = (["--partscan"] if self._kernel_parses_gpt() else []) + (["--read-only"] if read_only else [])
        device = _run(["losetup", "--find", "--show", *flags, str(path)]).stdout.strip()
        _remove_stale_partition_nodes(device)
        _run(["partx", "-a", device], check=False)  # fails harmlessly when the kernel's scan added them already
        return device

    def _kernel_parses_gpt(self) -> bool:
        """Does a partition-scanning loop device over a GPT disk get its partition? Probed once."""
        with self._probe_lock:
            return self._probe_gpt_scan()

    def _probe_gpt_scan(self) -> bool:
        if self._gpt_scan is None:
            probe = self.root / "gpt-probe.img"
            self._gpt_scan = False
            try:
                with open(probe, "wb") as f:
                    f.truncate(4 << 20)
                subprocess.run(["sfdisk", "-q", str(probe)], input=b"label: gpt\nstart=2048, size=2048\n", capture_output=True, check=True)
                device = _run(["losetup", "--find", "--show", "--partscan", "--read-only", str(probe)]).stdout.strip()
                try:
                    for _ in range(20):
                        if _partitions(device):
                            self._gpt_scan = True
                            break
                        time.sleep(0.01)
                finally:
                    _run(["partx", "-d", device], check=False)
                    _run(["losetup", "-d", device], check=False)
            except (OSError, subprocess.CalledProcessError, AgentError) as exc:
                log.warning("could not probe the kernel's partition scanning: %s", exc)
            finally:
                probe.unlink(missing_ok=True)
            log.info(
                "this kernel %s GPT partition tables: loop devices %s",
                "parses" if self._gpt_scan else "does not parse",
                "scan partitions themselves (--partscan)" if self._gpt_scan else "get their partitions from partx only",
            )
        return self._gpt_scan

    def _detach_loop(self, device: str) -> None:
        """``partx -d`` first (otherwise the /dev/loopNpK nodes linger), then ``losetup -d``."""
        for _ in range(100):
            if not _partitions(device):
                break
            _run(["partx", "-d", device], check=False)
            if not _partitions(device):
                break
            time.sleep(0.05)  # a filesystem of the dying namespace may still be let go of
        else:
            log.warning("partitions of %s are still busy; detaching anyway", device)
        result = _run(["losetup", "-d", device], check=False)
        if result.returncode != 0:
            log.warning("losetup -d %s: %s", device, result.stderr.strip())


def sandbox_command(
    wrapper: Path,
    ready: Path,
    stage: Path,
    dev_mode: str,
    var_tmp: Path,
    etc: Path | None,
    script: Path,
    disks: list[Disk],
    map_root: bool,
) -> list[str]:
    """The command line of one script's sandbox: new mount and PID namespaces around the wrapper."""
    argv = ["unshare", *(["--map-root-user"] if map_root else [])]
    argv += ["--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--mount-proc", "--"]
    argv += ["bash", str(wrapper), str(ready), str(stage), dev_mode, str(var_tmp), str(etc or "-"), str(script)]
    for disk in disks:
        argv += [disk.name, disk.target, "1" if disk.partitions else "0"]
    return argv


@contextlib.contextmanager
def _as_agent_error(what: str) -> Iterator[None]:
    """An Object Storage call of the agent: any failure becomes an AgentError saying ``what`` failed and why."""
    import oci

    try:
        yield
    except oci.exceptions.ServiceError as exc:
        raise AgentError(f"{what}: {exc.status} {exc.code} {exc.message}") from None
    except Exception as exc:  # noqa: BLE001 - connection problems of every kind
        raise AgentError(f"{what}: {exc}") from None


def _open_output(path: Path, size: int) -> IO[bytes]:
    """The script's output for upload; an empty body when it wrote nothing (the file may not exist)."""
    return open(path, "rb") if size else open(os.devnull, "rb")


def _shown(uri: str) -> str:
    """``uri`` for an execution's message: a PAR's token is a credential the caller holds, and
    the message is readable by anyone who may read the execution."""
    return re.sub(r"/p/[^/]+/", "/p/***/", uri)


def _http_url(uri: str) -> str:
    """Object Storage URLs only: never ``file:`` or other schemes that would read this machine."""
    if urllib.parse.urlsplit(uri).scheme not in ("http", "https"):
        raise AgentError(f"{uri!r} is not an http(s) URL")
    return uri


def run_command_enabled(instance: Resource) -> bool:
    agent = instance.get("agentConfig") or {}
    if agent.get("areAllPluginsDisabled") or agent.get("isManagementDisabled"):
        return False
    for plugin in agent.get("pluginsConfig") or []:
        if plugin.get("name") == PLUGIN:
            return plugin.get("desiredState") != "DISABLED"
    return True


def loop_devices_usable() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "not running as root"
    if not shutil.which("losetup"):
        return False, "losetup is not installed"
    try:
        fd = os.open("/dev/loop-control", os.O_RDWR)
    except OSError as exc:
        return False, f"/dev/loop-control: {exc.strerror}"
    os.close(fd)
    return True, "root with a working /dev/loop-control"


def _partitions(device: str) -> list[str]:
    name = os.path.basename(device)
    sysfs = Path("/sys/class/block") / name
    if not sysfs.exists():
        return []
    return sorted(p.name for p in sysfs.iterdir() if p.name.startswith(name + "p"))


def _remove_stale_partition_nodes(device: str) -> None:
    """/dev/loopNpK nodes from an earlier user of loopN that the kernel does not know now."""
    name = os.path.basename(device)
    for node in Path("/dev").glob(f"{name}p*"):
        if not re.fullmatch(rf"{re.escape(name)}p\d+", node.name) or (Path("/sys/class/block") / node.name).exists():
            continue
        try:
            node.unlink()
            log.info("removed stale device node %s", node)
        except OSError:
            pass
