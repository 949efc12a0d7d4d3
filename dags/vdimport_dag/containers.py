"""The images under podman, started as OKE and OCI Functions start them (local mode's container runner).

Stdlib only: the DAG's local runner uses ``step_command``, and local mode's function host
(``vdimport_local.fnhost``, which puts ``dags/`` on its path as Airflow does) ``function_command``.

``step_command`` is one step in the step-runner image, exactly as its pod: the image's own
entry point, arguments and non-root user, a read-only root file system with a small ``/tmp``,
no capabilities, and ``/airflow/xcom`` as the one writable mount, where the step writes
``return.json`` as the XCom sidecar reads it. Its environment is what the chart's ConfigMap
gives a step pod: the ``VDIMPORT_*`` and ``OCI_*`` variables, no other variable of the Airflow
worker's. ``function_command`` is the function image with its fdk's socket directory
``/tmp/iofs`` mounted from the host, as the Fn agent mounts it.

Local mode authenticates with an API key file (the emulator's, readable only by its owner), so
each container gets a copy of the config and key its user can read, mounted read-only at
``/etc/vdimport-oci``; on OCI a pod uses workload identity and the function its resource
principal instead, and neither has a key. Values reach podman through its environment
(``--env NAME``), never its command line.
"""

from __future__ import annotations

import configparser
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

XCOM_DIR = "/airflow/xcom"
ARGS_DIR = "/vdimport/args"  # the step's @file arguments (large --request/--state values)
OCI_DIR = "/etc/vdimport-oci"
IOFS = "/tmp/iofs"
ENV_PREFIXES = ("VDIMPORT_", "OCI_")
# crun fails on some kernels' cgroups; runc is Debian's other runtime. Explicit limits: the
# defaults ask for more than a machine's hard limits may allow.
PODMAN = ("podman", "--runtime", "runc")
HARDENING = (
    "--network", "host", "--read-only", "--tmpfs", "/tmp:rw,nosuid,nodev,size=64m", "--cap-drop", "ALL",
    "--security-opt", "no-new-privileges", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", "--pids-limit", "256",
)  # fmt: skip


def available() -> bool:
    return shutil.which(PODMAN[0]) is not None


def _shared_dir(path: Path) -> Path:
    """``path``, made for a container user that is not ours (a per-run directory under a private one)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o777)  # noqa: S103 - only reachable through its private parent and the container's mount
    return path


def oci_config_copy(config_path: str, into: Path) -> str:
    """A copy of an API-key OCI config (and its key) in ``into`` that a container user can read;
    returns the config's path inside the container."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(config_path)
    _shared_dir(into)
    for section in [parser.default_section, *parser.sections()]:
        key = parser.get(section, "key_file", fallback=None)
        if key:
            copy = into / f"key-{section}.pem"
            shutil.copyfile(os.path.expanduser(key), copy)
            os.chmod(copy, 0o644)
            parser.set(section, "key_file", f"{OCI_DIR}/{copy.name}")
    with open(into / "config", "w") as f:
        parser.write(f)
    os.chmod(into / "config", 0o644)
    return f"{OCI_DIR}/config"


def _mount_oci(env: dict[str, str], key: str, workdir: Path) -> list[str]:
    if not env.get(key):
        return []
    env[key] = oci_config_copy(env[key], workdir / "oci")
    return ["--volume", f"{workdir / 'oci'}:{OCI_DIR}:ro"]


def _env_flags(env: Mapping[str, str]) -> list[str]:
    flags: list[str] = []
    for key in sorted(env):
        flags += ["--env", key]
    return flags


def step_command(image: str, name: str, arguments: list[str], env: Mapping[str, str], workdir: Path) -> tuple[list[str], dict[str, str]]:
    """``podman run`` of one step and podman's environment; ``workdir/xcom`` is ``/airflow/xcom``
    and ``@file`` arguments under ``workdir`` are read from ``/vdimport/args``."""
    step_env = {k: v for k, v in env.items() if k.startswith(ENV_PREFIXES) and k != "VDIMPORT_RESULT_PATH"}
    mounts = ["--volume", f"{_shared_dir(workdir / 'xcom')}:{XCOM_DIR}:rw"]
    args_dir = _shared_dir(workdir / "args")
    argv = []
    for value in arguments:
        if value.startswith("@") and Path(value[1:]).parent == workdir:
            shutil.move(value[1:], args_dir / Path(value[1:]).name)
            os.chmod(args_dir / Path(value[1:]).name, 0o644)
            value = f"@{ARGS_DIR}/{Path(value[1:]).name}"
        argv.append(value)
    mounts += ["--volume", f"{args_dir}:{ARGS_DIR}:ro", *_mount_oci(step_env, "VDIMPORT_OCI_CONFIG", workdir)]
    command = [*PODMAN, "run", "--rm", "--name", name, *HARDENING, *mounts, *_env_flags(step_env), image, *argv]
    return command, {**{k: os.environ[k] for k in ("PATH", "HOME", "XDG_RUNTIME_DIR") if k in os.environ}, **step_env}


def function_command(image: str, name: str, env: Mapping[str, str], workdir: Path) -> tuple[list[str], dict[str, str], Path]:
    """``podman run`` of the function image, podman's environment, and the host path of the fdk's socket directory."""
    fn_env = {k: v for k, v in env.items() if k.startswith(("FN_", "VDIMPORT_"))}
    iofs = _shared_dir(workdir / "iofs")
    fn_env["FN_LISTENER"] = f"unix:{IOFS}/{Path(env['FN_LISTENER'].removeprefix('unix:')).name}"
    mounts = ["--volume", f"{iofs}:{IOFS}:rw", *_mount_oci(fn_env, "VDIMPORT_OCI_CONFIG", workdir)]
    command = [*PODMAN, "run", "--rm", "--name", name, *HARDENING, *mounts, *_env_flags(fn_env), image]
    return command, {**{k: os.environ[k] for k in ("PATH", "HOME", "XDG_RUNTIME_DIR") if k in os.environ}, **fn_env}, iofs


def remove(name: str) -> list[str]:
    """The command that stops and removes a container (podman's client going away does not)."""
    return [*PODMAN, "rm", "--force", "--time", "15", name]
