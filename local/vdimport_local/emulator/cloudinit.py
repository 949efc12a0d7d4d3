"""The part of cloud-init a worker VM's scripts can see: ``write_files`` under ``/etc``.

An emulated instance boots nothing, but what its user data writes into ``/etc`` (sudoers,
LVM, mdadm and udev settings) is what its Run Command scripts check and rely on. The files
are written once per instance into an overlay's upper directory; the sandbox mounts it over
the machine's ``/etc`` (``vm.WRAPPER``), so the host's own ``/etc`` is never changed.
Supported: ``path``, ``content``, ``encoding`` (text or base64), ``permissions``, ``append``.
Files outside ``/etc``, and user data that is no ``#cloud-config``, are left out (logged).
"""

from __future__ import annotations

import base64
import binascii
import logging
import posixpath
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger("vdimport.emulator.vm")

ETC = "/etc/"


def etc_overlay(user_data: str | None, where: Path) -> Path | None:
    """``where``, holding ``upper``/``work`` for an overlay of ``/etc`` with the user data's
    files, made the first time; None when the user data writes nothing under ``/etc``."""
    done = where / "applied"
    if not done.exists():
        shutil.rmtree(where, ignore_errors=True)
        files = [f for f in _write_files(user_data) if _in_etc(f)]
        if files:
            (where / "work").mkdir(parents=True)
            for entry in files:
                _write(where / "upper", entry)
        where.mkdir(parents=True, exist_ok=True)
        done.write_text("with files\n" if files else "none\n")
    return where if done.read_text().startswith("with files") else None


def _write_files(user_data: str | None) -> list[dict[str, Any]]:
    import yaml

    if not user_data:
        return []
    try:
        text = base64.b64decode(user_data, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        log.warning("user_data is not base64 text: no cloud-init files")
        return []
    if not text.startswith("#cloud-config"):
        log.info("user_data is no #cloud-config: no cloud-init files")
        return []
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        log.warning("user_data is not valid YAML (%s): no cloud-init files", exc)
        return []
    entries = config.get("write_files") if isinstance(config, dict) else None
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("path"), str)] if isinstance(entries, list) else []


def _in_etc(entry: dict[str, Any]) -> bool:
    path = posixpath.normpath(entry["path"])
    if path.startswith(ETC):
        return True
    log.info("cloud-init write_files %r is outside /etc: not emulated", entry["path"])
    return False


def _write(upper: Path, entry: dict[str, Any]) -> None:
    target = upper / posixpath.normpath(entry["path"])[len(ETC) :]
    content = entry.get("content", "")
    data = content.encode() if isinstance(content, str) else b""
    if str(entry.get("encoding", "")).lower() in ("b64", "base64"):
        data = base64.b64decode(data)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "ab" if entry.get("append") else "wb") as f:
        f.write(data)
    try:
        mode = int(str(entry.get("permissions", "0644")), 8)
    except ValueError:
        mode = 0o644
    target.chmod(mode & 0o7777)
