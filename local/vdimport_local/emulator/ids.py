"""Identifiers in OCI's shapes: OCIDs, request ids, etags, timestamps."""

from __future__ import annotations

import datetime as _dt
import secrets
import uuid

REGION = "us-ashburn-1"
REGION_KEY = "iad"


def ocid(kind: str, region: str = REGION_KEY) -> str:
    """A fresh OCID, ``ocid1.<kind>.oc1.<region>.<unique>`` like the real ones."""
    return f"ocid1.{kind}.oc1.{region}.a{secrets.token_hex(28)}"


def request_id() -> str:
    return secrets.token_hex(16).upper()


def etag() -> str:
    return str(uuid.uuid4())


def now_iso(ts: float | None = None) -> str:
    """RFC 3339 with milliseconds and a ``Z``, as OCI formats ``timeCreated``."""
    moment = _dt.datetime.fromtimestamp(ts, _dt.UTC) if ts is not None else _dt.datetime.now(_dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def http_date(ts: float) -> str:
    from email.utils import formatdate

    return formatdate(ts, usegmt=True)
