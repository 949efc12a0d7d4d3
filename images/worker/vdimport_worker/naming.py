"""Names, tags and retry tokens for everything a run creates.

A run *instance* is known by its key: 128 random bits that ``inspect_object`` mints and every
later step reads from the state (its result travels in XCom). It is never derived from the
DAG run id, which a caller chooses and which Airflow lets be re-used after a run is deleted: a
new run with an old id gets a new key and can never adopt the earlier run's resources.

Every resource carries the freeform tags ``vdimport-run`` (the key), ``vdimport-role`` and
``vdimport-dag-run`` (the DAG run id, for people and for the reaper, never for ownership) and a
display name derived from the key, so a retried step finds what an earlier attempt made, and
cleanup finds what to remove. The volumes of a multi-disk OVA also carry ``vdimport-disk`` (the
disk's number in the archive): each disk's steps see only that disk's volume (``for_disk``).
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass

RUN_TAG = "vdimport-run"
ROLE_TAG = "vdimport-role"
DAG_RUN_TAG = "vdimport-dag-run"
DISK_TAG = "vdimport-disk"
MAX_DISPLAY_NAME = 255
MAX_TAG_VALUE = 256  # OCI freeform tag values
KEY_BYTES = 16
_KEY = re.compile(r"[0-9a-f]{32}")


def new_run_key() -> str:
    """A fresh run key: 128 random bits as 32 hex digits."""
    return secrets.token_hex(KEY_BYTES)


def is_run_key(value: object) -> bool:
    return isinstance(value, str) and _KEY.fullmatch(value) is not None


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
    key: str
    dag_run_id: str = ""
    disk: int | None = None  # the disk of a multi-disk OVA these names are for (None: the whole run)

    def __post_init__(self) -> None:
        if not is_run_key(self.key):
            raise ValueError(f"not a run key: {self.key!r}")

    def for_disk(self, disk: int) -> RunNames:
        return RunNames(self.key, self.dag_run_id, disk)

    @property
    def prefix(self) -> str:
        return f"vdimport-{self.key}"

    def name(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def tags(self, role: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        tags = dict(extra or {})
        tags.update({RUN_TAG: self.key, ROLE_TAG: role})
        if self.dag_run_id:
            tags[DAG_RUN_TAG] = self.dag_run_id[:MAX_TAG_VALUE]
        if self.disk is not None and role == "volume":
            tags[DISK_TAG] = str(self.disk)
        return tags

    def retry_token(self, operation: str) -> str:
        """``opc-retry-token`` for one create of this run (OCI allows 64 characters)."""
        return f"{self.prefix}-{operation}"[:64]

    def owns(self, freeform_tags: dict[str, str] | None, role: str | None = None) -> bool:
        """Whether a resource is this run's (``role``'s); for one disk's names, a volume must be that disk's."""
        tags = freeform_tags or {}
        if tags.get(RUN_TAG) != self.key or (role is not None and tags.get(ROLE_TAG) != role):
            return False
        return self.disk is None or role != "volume" or tags.get(DISK_TAG) == str(self.disk)
