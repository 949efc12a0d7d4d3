"""The import DAG's last task, ``outcome``: tell the user how the run ended.

The DAG assembles the outcome from what Airflow knows (the run conf, the report, the failed
step and its one-line cause) and passes it as ``--state {"outcome": {...}}``; this publishes it
to the OCI Notifications topic when one is configured (``notify.py``; a publish error is only
logged), then fails (exit 3, no retry) when the import did not deliver a volume. The task is a
teardown that decides the run's state, so a run whose import failed shows as failed also when
it was marked failed or successful mid-way (Airflow alone would call it a success: its other
leaf, ``report``, is then skipped).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from ..clients import Clients
from ..config import WorkerConfig
from ..context import Rejected
from ..imageformat import MAX_OVA_DISKS
from ..notify import Outcome, publish_outcome

log = logging.getLogger("vdimport")

_TEXT_FIELDS = ("object_name", "bucket", "dag_run_id", "volume_id", "volume_name", "failed_step", "cause")


def tell_outcome(config: WorkerConfig, clients: Clients, state: dict[str, Any]) -> dict[str, Any]:
    raw = state.get("outcome")
    given: dict[str, Any] = raw if isinstance(raw, dict) else {}
    outcome_state: Literal["succeeded", "failed"] = "succeeded" if given.get("state") == "succeeded" else "failed"
    fields = {name: str(given[name]) for name in _TEXT_FIELDS if given.get(name) not in (None, "")}
    raw_volumes = given.get("volumes")
    listed: list[Any] = raw_volumes if isinstance(raw_volumes, list) else []
    volumes = tuple(
        (str(v.get("volume_name") or "(unnamed)"), str(v.get("volume_id")))
        for v in listed[:MAX_OVA_DISKS]
        if isinstance(v, dict) and v.get("volume_id")
    )
    outcome = Outcome(
        state=outcome_state,
        volumes=volumes,
        object_name=fields.pop("object_name", "(unknown object)"),
        bucket=fields.pop("bucket", "(unknown bucket)"),
        dag_run_id=fields.pop("dag_run_id", "(unknown run)"),
        **fields,
    )
    if not config.notification_topic_id:
        published = False
        log.info("Import %s; no notification topic is configured (VDIMPORT_NOTIFICATION_TOPIC_ID)", outcome.state)
    else:
        published = publish_outcome(clients, config, outcome)
        log.info("Import %s; notification %s", outcome.state, "published" if published else "not published (see the warning above)")
    if outcome.state == "failed":
        where = f" at {outcome.failed_step}" if outcome.failed_step else ""
        raise Rejected(f"the import did not deliver a volume{where}: {outcome.cause or 'no cause was recorded'}")
    for name, ocid in volumes or ((str(outcome.volume_name), str(outcome.volume_id)),):
        log.info("Volume %s (%s) delivered", ocid, name)
    return {"published": published, "state": outcome.state}
