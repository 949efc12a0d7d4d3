"""Worker configuration from the environment, validated once at start.

The pod gets these from the vdimport ConfigMap (Helm) or, in local mode, from
``vdimport-local``. Each missing or bad value is named in one line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

AUTH_MODES = ("workload_identity", "instance_principal", "resource_principal", "config_file")
_OCID = re.compile(r"^ocid1\.[a-z0-9]+\.[a-z0-9-]*\.[a-z0-9-]*\.[A-Za-z0-9._-]+$")


class ConfigError(ValueError):
    """The environment does not describe a usable deployment; the message says which variable."""


@dataclass(frozen=True)
class Deadlines:
    """Upper bounds, in seconds, for the waits of each kind of work."""

    launch: float = 900.0
    ready: float = 1200.0
    attach: float = 600.0
    detach: float = 600.0
    terminate: float = 900.0
    volume: float = 900.0
    command: float = 6 * 3600.0  # one Run Command script (download, write, verify, fsck)


# Each deadline is overridable as VDIMPORT_<NAME>_TIMEOUT_SECONDS (1..86400, Run Command's limit).
DEADLINE_NAMES = ("launch", "ready", "attach", "detach", "terminate", "volume", "command")


@dataclass(frozen=True)
class WorkerConfig:
    compartment_id: str
    subnet_id: str
    region: str | None = None
    auth: str = "workload_identity"
    oci_config_file: str | None = None
    oci_profile: str = "DEFAULT"
    endpoint: str | None = None  # one service endpoint for every client (local mode)
    worker_image_id: str | None = None  # None: newest Oracle Linux image for the shape
    worker_shape: str = "VM.Standard.E4.Flex"
    worker_ocpus: float = 2.0
    worker_memory_gb: float = 16.0
    write_vpus_per_gb: int = 30  # performance level while writing; tuned to the request after
    download_streams: int = 8
    max_volume_gb: int = 32768  # the operator's cap on one import's volume (cost); OCI's own limit by default
    poll_max_seconds: float = 10.0
    retry_base_seconds: float = 1.0  # first back-off of the SDK's retries (throttling, 5xx)
    deadlines: Deadlines = field(default_factory=Deadlines)
    notification_topic_id: str | None = None  # OCI Notifications topic told each import's outcome; None: off
    airflow_ui_url: str | None = None  # base URL of the Airflow UI for run links in notifications (no trailing /)
    reaper_grace_seconds: float = 300.0  # the reaper leaves what is younger alone (a run being cleared may adopt it)
    reaper_buckets: tuple[str, ...] = ()  # buckets whose vdimport PARs the reaper looks at
    reaper_compartments: tuple[str, ...] = ()  # compartments the reaper scans besides compartment_id
    # Bucket for Run Command output larger than its 1 KB of text (remote.LARGE_RESULTS); never the
    # import bucket, where each new object starts an import. None: text output only.
    work_bucket: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> WorkerConfig:
        env = dict(os.environ if env is None else env)
        problems: list[str] = []

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(f"VDIMPORT_{name}", "").strip()
            return value or default

        def ocid(name: str, required: bool = True) -> str:
            value = get(name)
            if not value:
                if required:
                    problems.append(f"VDIMPORT_{name} is not set (an OCID)")
                return ""
            if not _OCID.match(value):
                problems.append(f"VDIMPORT_{name} is not an OCID: {value[:60]!r}")
            return value

        def number(name: str, default: float, low: float, high: float) -> float:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                problems.append(f"VDIMPORT_{name} must be a number (got {raw[:30]!r})")
                return default
            if not low <= value <= high:
                problems.append(f"VDIMPORT_{name} must be between {low:g} and {high:g} (got {raw})")
            return value

        auth = (get("AUTH") or "workload_identity").lower()
        if auth not in AUTH_MODES:
            problems.append(f"VDIMPORT_AUTH must be one of {', '.join(AUTH_MODES)} (got {auth!r})")
        config_file = get("OCI_CONFIG")
        if auth == "config_file" and not config_file:
            problems.append("VDIMPORT_OCI_CONFIG must name an OCI config file when VDIMPORT_AUTH=config_file")
        if config_file and not os.path.isfile(config_file):
            problems.append(f"VDIMPORT_OCI_CONFIG file does not exist: {config_file}")
        endpoint = get("OCI_ENDPOINT")
        if endpoint and not re.match(r"^https?://", endpoint):
            problems.append(f"VDIMPORT_OCI_ENDPOINT must be an http(s) URL (got {endpoint[:60]!r})")
        vpus = number("WRITE_VPUS_PER_GB", 30, 0, 120)
        ui_url = get("AIRFLOW_UI_URL")
        # Run links go into notifications: no credentials (user:password@), no query, no fragment.
        if ui_url and not re.match(r"^https?://[^\s/?#@]+(/[^\s?#]*)?$", ui_url):
            shown = re.sub(r"//[^/]*@", "//***@", ui_url)[:60]
            problems.append(f"VDIMPORT_AIRFLOW_UI_URL must be an http(s) base URL without credentials, query or fragment (got {shown!r})")
        topic = ocid("NOTIFICATION_TOPIC_ID", required=False)
        if topic and _OCID.match(topic) and not topic.startswith("ocid1.onstopic."):
            problems.append(f"VDIMPORT_NOTIFICATION_TOPIC_ID is not a Notifications topic OCID (ocid1.onstopic...): {topic[:60]!r}")
        work_bucket = get("WORK_BUCKET")
        if work_bucket and not re.fullmatch(r"[A-Za-z0-9._-]{1,256}", work_bucket):
            problems.append(f"VDIMPORT_WORK_BUCKET is not a bucket name: {work_bucket[:60]!r}")
        reaper_compartments = tuple(c.strip() for c in (get("REAPER_COMPARTMENTS") or "").split(",") if c.strip())
        problems += [f"VDIMPORT_REAPER_COMPARTMENTS: not an OCID: {c[:60]!r}" for c in reaper_compartments if not _OCID.match(c)]
        values: dict[str, Any] = {
            "compartment_id": ocid("COMPARTMENT_ID"),
            "subnet_id": ocid("SUBNET_ID"),
            "region": get("REGION"),
            "auth": auth,
            "oci_config_file": config_file,
            "oci_profile": get("OCI_PROFILE", "DEFAULT"),
            "endpoint": endpoint,
            "worker_image_id": ocid("WORKER_IMAGE_ID", required=False) or None,
            "worker_shape": get("WORKER_SHAPE", "VM.Standard.E4.Flex"),
            "worker_ocpus": number("WORKER_OCPUS", 2, 1, 64),
            "worker_memory_gb": number("WORKER_MEMORY_GB", 16, 1, 1024),
            "write_vpus_per_gb": int(vpus) // 10 * 10,
            "download_streams": int(number("DOWNLOAD_STREAMS", 8, 1, 64)),
            "max_volume_gb": int(number("MAX_VOLUME_GB", 32768, 50, 32768)),
            "poll_max_seconds": number("POLL_MAX_SECONDS", 10, 0.05, 120),
            "retry_base_seconds": number("RETRY_BASE_SECONDS", 1, 0.001, 30),
            "notification_topic_id": topic or None,
            "airflow_ui_url": ui_url.rstrip("/") if ui_url else None,
            "reaper_grace_seconds": number("REAPER_GRACE_SECONDS", 300, 0, 7 * 86400),
            "reaper_buckets": tuple(b.strip() for b in (get("REAPER_BUCKETS") or get("BUCKET") or "").split(",") if b.strip()),
            "reaper_compartments": reaper_compartments,
            "work_bucket": work_bucket,
        }
        defaults = Deadlines()
        values["deadlines"] = Deadlines(
            **{name: number(f"{name.upper()}_TIMEOUT_SECONDS", getattr(defaults, name), 1, 86400) for name in DEADLINE_NAMES}
        )
        if problems:
            raise ConfigError("; ".join(problems))
        return cls(**values)
