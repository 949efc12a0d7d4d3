"""Deterministic names, tags and retry tokens for everything a run creates.

A run is known by a short hash of its DAG run id. Every resource carries the freeform
tags ``vdimport-run`` and ``vdimport-role`` and a display name derived from the run, so a
retried step finds what an earlier attempt made, and cleanup finds what to remove.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

RUN_TAG = "vdimport-run"
ROLE_TAG = "vdimport-role"
MAX_DISPLAY_NAME = 255


def run_key(run_id: str) -> str:
    return hashlib.sha256(run_id.encode()).hexdigest()[:12]


def volume_display_name(requested: str | None, object_name: str) -> str:
    """The volume is named after the image: the requested name, else the object's base name.

    OCI display names allow most characters, but a name that shows cleanly in the console
    and survives shells is kinder: letters and digits (of any script, so ``диск.qcow2``
    stays ``диск``), ``._-``, at most 255 characters; every other run of characters
    (spaces, quotes, ``$``, control characters, emoji) becomes one ``-``. A requested name
    with nothing usable left falls back to the object's name.
    """
    if requested and (name := _sanitised(requested)):
        return name
    base = object_name.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".gz", ".qcow2", ".vmdk", ".vhdx", ".vhd", ".vdi", ".raw", ".img", ".ova"):
        if base.lower().endswith(suffix) and len(base) > len(suffix):
            base = base[: -len(suffix)]
    return _sanitised(base) or "disk"


def _sanitised(name: str) -> str:
    text = re.sub(r"[^\w.-]+", "-", unicodedata.normalize("NFKC", name))
    return text.strip("-.")[:MAX_DISPLAY_NAME].strip("-.")


@dataclass(frozen=True)
class RunNames:
    run_id: str

    @property
    def key(self) -> str:
        return run_key(self.run_id)

    @property
    def prefix(self) -> str:
        return f"vdimport-{self.key}"

    def name(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def tags(self, role: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        tags = dict(extra or {})
        tags.update({RUN_TAG: self.key, ROLE_TAG: role})
        return tags

    def retry_token(self, operation: str) -> str:
        """``opc-retry-token`` for one create of this run (OCI allows 64 characters)."""
        return f"{self.prefix}-{operation}"[:64]

    def owns(self, freeform_tags: dict[str, str] | None, role: str | None = None) -> bool:
        tags = freeform_tags or {}
        return tags.get(RUN_TAG) == self.key and (role is None or tags.get(ROLE_TAG) == role)
