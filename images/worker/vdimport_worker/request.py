"""The import request: the one place that defines and validates what a run is asked to do.

A request comes from the DAG run conf: the source object (namespace, bucket, object, etag,
size) as the function saw it, the object's user metadata (``opc-meta-*``), and, for a
manual trigger from the Airflow UI, the same options as top-level params (which win over
metadata). Every bad value fails with one line naming the key and what is allowed.

Options: ``ad_number`` (1..3; 0 or empty: any, as in the reference DAG), ``volume_name``,
``vpus_per_gb``, ``backup_policy``, ``compartment_id``, ``source_format``, ``kms_key_id``,
``verify``, ``fsck``, ``tags`` (a JSON object of free-form tags), ``keep_on_failure``.

Every other ``opc-meta-*`` key becomes a free-form tag of the volume, as uploads made for the
reference architecture expect: its key without the prefix, its value as it is. A key that
cannot be an OCI free-form tag, or one over the number of tags a volume can carry, is left out
with a warning rather than failing the import (the reference passed every key to CreateVolume,
so such an upload never imported there either); ``tags`` wins over a metadata key of the same
name. Unknown top-level keys of the run conf are reported, not fatal.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .naming import MAX_TAG_VALUE

SOURCE_FORMATS = ("qcow2", "vmdk", "vhd", "vhdx", "vdi", "raw", "ova")
FSCK_MODES = ("off", "check", "strict")
BACKUP_POLICIES = ("bronze", "silver", "gold")
VPUS_CHOICES = tuple(range(0, 130, 10))
OPTION_KEYS = (
    "ad_number",
    "volume_name",
    "vpus_per_gb",
    "backup_policy",
    "compartment_id",
    "source_format",
    "kms_key_id",
    "verify",
    "fsck",
    "tags",
    "keep_on_failure",
)
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_OCID = re.compile(r"ocid1\.([a-z0-9]+)\.[a-z0-9-]*\.[a-z0-9-]*\.[A-Za-z0-9._-]+")
MAX_OBJECT_NAME = 1024
MAX_VOLUME_NAME = 255
# OCI free-form tags (Tagging Overview, "Limits on Tags"): keys of 1-100 printable ASCII
# characters without spaces or periods, values of at most 256 characters, at most 10 on one
# resource. The volume carries up to 5 of vdimport's own (vdimport-run, -role, -dag-run, -state,
# and -disk on a multi-disk OVA's volumes), so 5 are the user's; a key starting with vdimport-
# is never the user's.
MAX_TAGS = 10 - 5
RESERVED_TAG_PREFIX = "vdimport-"
_TAG_KEY = re.compile(r"[!-\-/-~]{1,100}")  # 0x21-0x7e but "."


class RequestError(ValueError):
    """A request that cannot be imported; the message is the one-line cause for the user."""


@dataclass(frozen=True)
class ImportOptions:
    ad_number: int | None = None
    volume_name: str | None = None
    vpus_per_gb: int = 10
    backup_policy: str | None = None
    compartment_id: str | None = None
    source_format: str | None = None
    kms_key_id: str | None = None
    verify: bool = True
    fsck: str = "check"
    tags: dict[str, str] = field(default_factory=dict)
    keep_on_failure: bool = False


@dataclass(frozen=True)
class ImportRequest:
    namespace: str
    bucket: str
    object: str
    etag: str | None
    size: int | None
    options: ImportOptions
    unknown_keys: tuple[str, ...] = ()
    metadata_tags: dict[str, str] = field(default_factory=dict)
    tag_warnings: tuple[str, ...] = ()

    @property
    def volume_tags(self) -> dict[str, str]:
        """The user's free-form tags of the volume: the metadata's, then ``tags`` over them."""
        return {**self.metadata_tags, **self.options.tags}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def lenient(cls, conf: Any) -> ImportRequest:
        """Whatever source a malformed request names, with default options: enough to clean up."""
        return cls(
            _lenient_text(conf, "namespace"), _lenient_text(conf, "bucket"), _lenient_text(conf, "object"), None, None, ImportOptions()
        )

    @classmethod
    def parse(cls, conf: dict[str, Any] | str) -> ImportRequest:
        """Validate a run conf (dict or JSON text) into a request, or raise RequestError."""
        if isinstance(conf, str):
            try:
                conf = json.loads(conf)
            except ValueError as exc:
                raise RequestError(f"request is not valid JSON: {exc}") from None
        if not isinstance(conf, dict):
            raise RequestError("request must be a JSON object")
        namespace = _required_text(conf, "namespace", 128)
        bucket = _required_text(conf, "bucket", 256)
        obj = _required_text(conf, "object", MAX_OBJECT_NAME)
        etag = conf.get("etag")
        if etag is not None and (not isinstance(etag, str) or not etag or len(etag) > 256):
            raise RequestError("etag: must be the object's ETag as a non-empty string")
        size = conf.get("size")
        if size is not None:
            size = _integer("size", size)
            if size < 0:
                raise RequestError(f"size: must be a byte count of 0 or more (got {size})")

        metadata = conf.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise RequestError("metadata: must be a JSON object of the object's opc-meta-* values")
        raw: dict[str, Any] = {}
        for key, value in metadata.items():
            if _metadata_key(key) in OPTION_KEYS:
                raw[_metadata_key(key)] = value
        for key in OPTION_KEYS:
            if conf.get(key) is not None:
                raw[key] = conf[key]
        unknown = sorted(set(conf) - {"namespace", "bucket", "object", "etag", "size", "metadata", *OPTION_KEYS})
        options = _parse_options({k: v for k, v in raw.items() if v not in (None, "")})
        extra = {k: v for k, v in metadata.items() if _metadata_key(k) not in OPTION_KEYS}
        tags, warnings = _metadata_tags(extra, options.tags)
        return cls(namespace, bucket, obj, etag, size, options, tuple(unknown), tags, warnings)


def _lenient_text(conf: Any, key: str) -> str:
    value = conf.get(key) if isinstance(conf, dict) else None
    return value if isinstance(value, str) else ""


def _metadata_key(key: str) -> str:
    """``opc-meta-ad_number``, ``AD-Number`` and ``ad_number`` all mean the same option."""
    return _without_prefix(str(key)).lower().replace("-", "_")


def _without_prefix(key: str) -> str:
    return key[len("opc-meta-") :] if key.lower().startswith("opc-meta-") else key


def _metadata_tags(metadata: dict[Any, Any], requested: dict[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """The metadata keys that are no option, as free-form tags, and a warning for each one left out.

    In key order, so the same upload always gets the same tags; ``requested`` (the ``tags``
    option) keeps its keys (compared case-blind: a key may arrive as an HTTP header) and its
    share of the volume's tags.
    """
    taken = {key.lower() for key in requested}
    tags: dict[str, str] = {}
    warnings = []
    for key, value in sorted(((_without_prefix(str(k)), v) for k, v in metadata.items()), key=lambda item: item[0]):
        problem = tag_problem(key, value)
        if problem is None and key.lower() in taken:
            problem = f"key {_show(key)} is a tag of the volume already (the tags option wins)"
        elif problem is None and len(requested) + len(tags) >= MAX_TAGS:
            problem = f"a volume carries at most {MAX_TAGS} tags of the user"
        if problem:
            warnings.append(f"metadata {_show(key)} is not a tag of the volume: {problem}")
            continue
        taken.add(key.lower())
        tags[key] = str(value)
    return tags, tuple(warnings)


def tag_problem(key: Any, value: Any) -> str | None:
    """Why ``key: value`` cannot be one of the user's free-form tags of the volume, or None."""
    if not isinstance(key, str) or not _TAG_KEY.fullmatch(key):
        return f"key {_show(key)} must be 1-100 letters, digits or ASCII punctuation other than '.'"
    if key.lower().startswith(RESERVED_TAG_PREFIX):
        return f"key {_show(key)} is reserved for vdimport's own tags"
    if not isinstance(value, str | int | float | bool) or len(str(value)) > MAX_TAG_VALUE:
        return f"value of {_show(key)} must be a string of at most {MAX_TAG_VALUE} characters"
    return None


def _parse_options(raw: dict[str, Any]) -> ImportOptions:
    values: dict[str, Any] = {}
    if "ad_number" in raw:
        bad = RequestError(f"ad_number: must be 1, 2 or 3 (got {_show(raw['ad_number'])}), or 0 for any availability domain")
        try:
            ad = _integer("ad_number", raw["ad_number"])
        except RequestError:
            raise bad from None
        if ad not in (0, 1, 2, 3):
            raise bad
        values["ad_number"] = ad or None  # 0: any, as in the reference DAG
    if "volume_name" in raw:
        name = raw["volume_name"]
        if not isinstance(name, str) or not name.strip():
            raise RequestError("volume_name: must be a non-empty name")
        values["volume_name"] = name
    if "vpus_per_gb" in raw:
        vpus = _integer("vpus_per_gb", raw["vpus_per_gb"], allowed="one of 0, 10, 20, ... 120")
        if vpus not in VPUS_CHOICES:
            raise RequestError(f"vpus_per_gb: must be one of 0, 10, 20, ... 120 (got {_show(raw['vpus_per_gb'])})")
        values["vpus_per_gb"] = vpus
    if "backup_policy" in raw:
        policy = str(raw["backup_policy"]).strip()
        if policy.lower() in BACKUP_POLICIES:
            policy = policy.lower()
        elif not _is_ocid(policy, "volumebackuppolicy"):
            raise RequestError(f"backup_policy: must be bronze, silver, gold or a volume backup policy OCID (got {_show(policy)})")
        values["backup_policy"] = policy
    if "compartment_id" in raw:
        compartment = str(raw["compartment_id"]).strip()
        if not (_is_ocid(compartment, "compartment") or _is_ocid(compartment, "tenancy")):
            raise RequestError(f"compartment_id: must be a compartment OCID (got {_show(compartment)})")
        values["compartment_id"] = compartment
    if "source_format" in raw:
        fmt = str(raw["source_format"]).strip().lower()
        if fmt not in SOURCE_FORMATS:
            raise RequestError(f"source_format: must be one of {', '.join(SOURCE_FORMATS)} (got {_show(raw['source_format'])})")
        values["source_format"] = fmt
    if "kms_key_id" in raw:
        key = str(raw["kms_key_id"]).strip()
        if not _is_ocid(key, "key"):
            raise RequestError(f"kms_key_id: must be a Vault key OCID (got {_show(key)})")
        values["kms_key_id"] = key
    for flag in ("verify", "keep_on_failure"):
        if flag in raw:
            values[flag] = _boolean(flag, raw[flag])
    if "fsck" in raw:
        mode = str(raw["fsck"]).strip().lower()
        if mode in _FALSE:
            mode = "off"
        if mode not in FSCK_MODES:
            raise RequestError(f"fsck: must be off, check or strict (got {_show(raw['fsck'])})")
        values["fsck"] = mode
    if "tags" in raw:
        values["tags"] = _tags(raw["tags"])
    return ImportOptions(**values)


def _required_text(conf: dict[str, Any], key: str, limit: int) -> str:
    value = conf.get(key)
    if not isinstance(value, str) or not value:
        raise RequestError(f"{key}: is required (the source object's {key})")
    if len(value.encode()) > limit:
        raise RequestError(f"{key}: longer than {limit} bytes")
    if "\x00" in value:
        raise RequestError(f"{key}: must not contain NUL characters")
    return value


def _integer(key: str, value: Any, allowed: str = "a whole number") -> int:
    if isinstance(value, bool):
        raise RequestError(f"{key}: must be {allowed} (got {_show(value)})")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]{1,12}\s*", value):
        return int(value)
    raise RequestError(f"{key}: must be {allowed} (got {_show(value)})")


def _boolean(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise RequestError(f"{key}: must be true or false (got {_show(value)})")


def _tags(value: Any) -> dict[str, str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise RequestError('tags: must be a JSON object of strings, e.g. {"project": "migration"}') from None
    if not isinstance(value, dict):
        raise RequestError('tags: must be a JSON object of strings, e.g. {"project": "migration"}')
    if len(value) > MAX_TAGS:
        raise RequestError(f"tags: at most {MAX_TAGS} tags (a volume carries 10 free-form tags, up to 5 of them vdimport's own)")
    tags: dict[str, str] = {}
    for key, item in value.items():
        problem = tag_problem(key, item)
        if problem:
            raise RequestError(f"tags: {problem}")
        tags[key] = str(item)
    return tags


def _is_ocid(value: str, kind: str) -> bool:
    found = _OCID.fullmatch(value)
    return bool(found and found.group(1) == kind)


def _show(value: Any) -> str:
    """A bad value as it may be shown in a log line: quoted, one line, short."""
    text = json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= 80 else text[:77] + '..."'
