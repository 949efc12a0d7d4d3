"""The reaper: the safety net that removes what a finished or vanished run left behind.

The teardown (``terminate_worker``) is the first line: it runs after failures and when a run
is marked failed or successful. What it cannot catch (a run deleted while it ran, a killed
scheduler, cleanup retries running out, a launch killed half-way) the scheduled DAG
``vdimport_reaper`` collects in three tasks:

1. ``reap_scan`` (here, with the step runner's OCI identity): every live worker VM, unfinished
   volume and pre-authenticated request that vdimport made, and every command output object
   left in the work bucket, grouped by run key, with the DAG run id they are tagged with.
2. the DAG asks Airflow which of those runs are still going *as the same run instance*
   (queued or running, and their ``inspect_object`` result carries that key): the live keys.
3. ``reap`` (here): removes the resources of every other key that are older than the grace
   period, logging each. A verified or delivered volume is never touched, nor anything
   without vdimport's tags.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import oci

from ..clients import Clients, list_all
from ..config import WorkerConfig
from ..naming import DAG_RUN_TAG, ROLE_TAG, RUN_TAG, is_run_key
from ..waiting import wait_for_state

log = logging.getLogger("vdimport")

ALIVE_INSTANCE = ("PROVISIONING", "STARTING", "RUNNING", "STOPPING", "STOPPED", "TERMINATING")
GONE_VOLUME = ("TERMINATING", "TERMINATED")
FINAL_VOLUME = ("verified", "delivered")
STATE_TAG = "vdimport-state"
_PAR_NAME = re.compile(r"vdimport-([0-9a-f]{32})-(?:par|output)")  # the read PAR, command output PARs (output.py)
_OUTPUT_OBJECT = re.compile(r"vdimport-([0-9a-f]{32})/.+")


@dataclass
class Leftover:
    kind: str  # worker | volume | par | object (a command's output in the work bucket)
    id: str
    key: str
    dag_run_id: str | None
    created: dt.datetime | None
    name: str
    where: tuple[str, ...]  # (compartment,) or (namespace, bucket)

    def age_seconds(self, now: dt.datetime) -> float:
        return (now - self.created).total_seconds() if self.created else float("inf")


def _compartments(config: WorkerConfig) -> list[str]:
    return list(dict.fromkeys([config.compartment_id, *config.reaper_compartments]))


def leftovers(config: WorkerConfig, clients: Clients) -> Iterator[Leftover]:
    """Everything vdimport made that is still alive and not final."""
    for compartment in _compartments(config):
        for instance in list_all(clients.compute.list_instances, compartment):
            tags = instance.freeform_tags or {}
            if tags.get(ROLE_TAG) == "worker" and is_run_key(tags.get(RUN_TAG)) and instance.lifecycle_state in ALIVE_INSTANCE:
                yield Leftover(
                    "worker",
                    instance.id,
                    tags[RUN_TAG],
                    tags.get(DAG_RUN_TAG),
                    instance.time_created,
                    instance.display_name,
                    (compartment,),
                )
        for volume in list_all(clients.blockstorage.list_volumes, compartment_id=compartment):
            tags = volume.freeform_tags or {}
            if (
                tags.get(ROLE_TAG) == "volume"
                and is_run_key(tags.get(RUN_TAG))
                and volume.lifecycle_state not in GONE_VOLUME
                and tags.get(STATE_TAG) not in FINAL_VOLUME
            ):
                yield Leftover(
                    "volume", volume.id, tags[RUN_TAG], tags.get(DAG_RUN_TAG), volume.time_created, volume.display_name, (compartment,)
                )
    buckets = list(dict.fromkeys([*config.reaper_buckets, *([config.work_bucket] if config.work_bucket else [])]))
    for bucket in buckets:
        for par in list_all(clients.object_storage.list_preauthenticated_requests, clients.namespace, bucket):
            match = _PAR_NAME.fullmatch(par.name or "")
            if match:
                yield Leftover("par", par.id, match.group(1), None, par.time_created, par.name, (clients.namespace, bucket))
    if config.work_bucket:
        yield from _output_objects(clients, config.work_bucket)


def _output_objects(clients: Clients, bucket: str) -> Iterator[Leftover]:
    """Command output objects a step did not get to delete (it was killed, or its cleanup failed)."""
    listing = oci.pagination.list_call_get_all_results(
        clients.object_storage.list_objects, clients.namespace, bucket, prefix="vdimport-", fields="name,timeCreated"
    ).data
    for obj in listing.objects or []:
        match = _OUTPUT_OBJECT.fullmatch(obj.name or "")
        if match:
            yield Leftover("object", obj.name, match.group(1), None, obj.time_created, obj.name, (clients.namespace, bucket))


def reap_scan(config: WorkerConfig, clients: Clients, state: dict[str, Any]) -> dict[str, Any]:
    """Step 1: the runs that own leftovers, ``{key: {"dag_run_id", "resources"}}``."""
    runs: dict[str, dict[str, Any]] = {}
    for item in leftovers(config, clients):
        run = runs.setdefault(item.key, {"dag_run_id": None, "resources": []})
        run["dag_run_id"] = run["dag_run_id"] or item.dag_run_id
        run["resources"].append(f"{item.kind} {item.id}")
    log.info("Found %d run(s) with live vdimport resources in %s", len(runs), ", ".join(_compartments(config)))
    for key, run in sorted(runs.items()):
        log.info("  run %s (DAG run %r): %s", key, run["dag_run_id"], ", ".join(run["resources"]))
    return {"runs": runs}


def reap(config: WorkerConfig, clients: Clients, state: dict[str, Any]) -> dict[str, Any]:
    """Step 3: remove the leftovers of every run key not in ``state["live_keys"]``, past the grace period."""
    live = set(state.get("live_keys") or [])
    now = dt.datetime.now(dt.UTC)
    grace = config.reaper_grace_seconds
    removed: list[str] = []
    kept: list[str] = []
    items = list(leftovers(config, clients))
    doomed = [i for i in items if i.key not in live and i.age_seconds(now) >= grace]
    for item in items:
        if item not in doomed:
            why = "its run is still going" if item.key in live else f"younger than the {grace:.0f} s grace period"
            kept.append(f"{item.kind} {item.id}")
            log.info("Keeping %s %s (%s): %s", item.kind, item.id, item.name, why)
    for item in [i for i in doomed if i.kind == "par"]:
        namespace, bucket = item.where
        log.info("Deleting pre-authenticated request %s in %s/%s (run %s is over)", item.name, namespace, bucket, item.key)
        clients.object_storage.delete_preauthenticated_request(namespace, bucket, item.id)
        removed.append(f"par {item.id}")
    for item in [i for i in doomed if i.kind == "object"]:
        namespace, bucket = item.where
        log.info("Deleting command output %s in %s/%s (run %s is over)", item.name, namespace, bucket, item.key)
        clients.object_storage.delete_object(namespace, bucket, item.id)
        removed.append(f"object {item.id}")
    workers = [i for i in doomed if i.kind == "worker"]
    for item in workers:
        instance = clients.compute.get_instance(item.id).data
        if instance.lifecycle_state != "TERMINATING":
            log.info("Terminating worker %s (%s) of run %s (DAG run %r is over)", item.id, item.name, item.key, item.dag_run_id)
            clients.compute.terminate_instance(item.id, preserve_boot_volume=False)
    for item in workers:
        _wait(config, lambda i=item.id: clients.compute.get_instance(i).data, "TERMINATED", f"terminating worker {item.id}")
        removed.append(f"worker {item.id}")
    for item in [i for i in doomed if i.kind == "volume"]:
        if _delete_volume(config, clients, item):
            removed.append(f"volume {item.id}")
        else:
            kept.append(f"volume {item.id}")
    log.info("Reaper removed %d resource(s), kept %d", len(removed), len(kept))
    return {"removed": removed, "kept": kept}


def _delete_volume(config: WorkerConfig, clients: Clients, item: Leftover) -> bool:
    """Delete an unfinished volume once the attachments to its run's workers are gone."""
    (compartment,) = item.where
    for attachment in list_all(clients.compute.list_volume_attachments, compartment, volume_id=item.id):
        if attachment.lifecycle_state not in ("ATTACHING", "ATTACHED", "DETACHING"):
            continue
        tags = clients.compute.get_instance(attachment.instance_id).data.freeform_tags or {}
        if tags.get(RUN_TAG) != item.key:
            log.warning(
                "Not deleting volume %s: it is attached to instance %s, which its run did not make", item.id, attachment.instance_id
            )
            return False
        _wait(config, lambda a=attachment.id: clients.compute.get_volume_attachment(a).data, "DETACHED", f"detaching volume {item.id}")
    log.info("Deleting unfinished volume %s (%s) of run %s (DAG run %r is over)", item.id, item.name, item.key, item.dag_run_id)
    clients.blockstorage.delete_volume(item.id)
    return True


def _wait(config: WorkerConfig, fetch: Any, state: str, what: str) -> None:
    wait_for_state(fetch, state, what, config.deadlines.terminate, config.poll_max_seconds)
