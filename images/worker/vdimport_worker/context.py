"""What a step gets: the request, the state earlier steps produced, config and clients.

**Resume.** A step reads what earlier steps made through :meth:`StepContext.need`, which checks
that the earlier result still describes the world (the worker it names is alive, the image was
downloaded onto *this* worker, the volume exists, the attachment is attached, the write was onto
*this* volume) and, when it does not, runs that earlier step again in this process first. So a
task cleared in the Airflow UI after the cleanup removed the worker and the unfinished volume
re-provisions what it needs and finishes the import, and the refreshed results travel on in
its own result (``refreshed``) for the steps after it.

**Delivered is final.** Once the run's volume is verified and detached, every step of the data
path reports "already delivered" and touches nothing (:meth:`StepContext.delivered_volume`).

**Disks.** A multi-disk OVA's per-disk steps run on one *disk view* of the context per disk
(``disks.py``); results that a disk view ran again flow back into the run's context
(:meth:`StepContext.absorb`), so the next disk sees the worker the previous one relaunched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import oci

from .clients import Clients
from .config import WorkerConfig
from .disks import PER_DISK, disk_entries, project, with_disk
from .naming import DISK_TAG, RunNames, is_run_key
from .remote import WorkerShell
from .request import ImportRequest

log = logging.getLogger("vdimport")

MIN_VOLUME_GB = 50


class StepError(RuntimeError):
    """The step failed for a reason the user can act on; the message is the one-line cause."""


class Rejected(StepError):
    """The request or the image cannot be imported as it is: a retry would fail the same way.

    The CLI exits with ``EXIT_REJECTED`` for it, and the DAG fails the task without retries.
    """


def merged_state(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{step: result}`` with results that later steps re-provisioned (their ``refreshed``) on top."""
    from .steps import STEP_NAMES

    merged = {step: result for step, result in state.items() if isinstance(result, dict)}
    for step in STEP_NAMES:
        refreshed = (merged.get(step) or {}).get("refreshed")
        if isinstance(refreshed, dict):
            merged.update({name: value for name, value in refreshed.items() if isinstance(value, dict)})
    return merged


@dataclass
class StepContext:
    run_id: str
    conf: dict[str, Any]  # the request as given (the DAG run conf)
    request: ImportRequest  # ...and as validated
    state: dict[str, dict[str, Any]]
    config: WorkerConfig
    clients: Clients
    refreshed: dict[str, dict[str, Any]] = field(default_factory=dict)  # earlier steps this one ran again
    disk: int | None = None  # a disk view's disk (disks.py); None: the whole run
    _names: RunNames | None = field(default=None, init=False, repr=False)
    _fresh: set[str] = field(default_factory=set, init=False, repr=False)
    _delivered: tuple[Any, ...] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.state = merged_state(self.state)

    # --- identity -------------------------------------------------------------------------
    @property
    def names(self) -> RunNames:
        """The run instance's names and tags, from the key ``inspect_object`` minted."""
        if self._names is None:
            key = (self.state.get("inspect_object") or {}).get("run_key")
            if not is_run_key(key):
                raise StepError("inspect_object has not completed for this run; run it first")
            self._names = RunNames(str(key), self.run_id)
        return self._names

    @property
    def has_key(self) -> bool:
        return is_run_key((self.state.get("inspect_object") or {}).get("run_key")) or self._names is not None

    def adopt_key(self, key: str) -> None:
        """``inspect_object``: this is the run instance's key from now on."""
        self._names = RunNames(key, self.run_id)

    # --- disks ----------------------------------------------------------------------------
    @property
    def disk_count(self) -> int:
        """How many disks (and so volumes) the run imports: more than one only from an OVA."""
        return len(disk_entries(self.state.get("inspect_object"))) or 1

    def disk_view(self, disk: int) -> StepContext:
        """This context as disk ``disk``'s part of a per-disk step sees it."""
        view = StepContext(self.run_id, self.conf, self.request, project(self.state, disk), self.config, self.clients, disk=disk)
        view._names = self.names.for_disk(disk)
        view._fresh = set(self._fresh)
        return view

    def absorb(self, view: StepContext, disk: int) -> None:
        """Take over what disk ``disk``'s view ran again, for the next disks and this step's result."""
        for step, result in view.refreshed.items():
            combined = with_disk(self.state.get(step), disk, result) if step in PER_DISK else result
            self.state[step] = combined
            self.refreshed[step] = combined
        self._fresh |= {step for step in view._fresh if step not in PER_DISK}

    # --- earlier results ------------------------------------------------------------------
    def result_of(self, step: str) -> dict[str, Any]:
        """An earlier step's result, which this step cannot do without."""
        result = self.state.get(step)
        if not isinstance(result, dict):
            raise StepError(f"{step} has not completed for this run; run it first")
        return result

    def need(self, step: str) -> dict[str, Any]:
        """An earlier step's result that still holds, running that step again first if it does not."""
        from .steps import STEPS, staleness

        result = self.state.get(step)
        if step in self._fresh and result is not None:
            return result
        if not isinstance(result, dict):
            reason: str | None = "it has no result in this run"
        elif result.get("run_key") != self.names.key:
            reason = "its result belongs to another run instance"
        else:
            reason = staleness(self, step, result)
        if reason or result is None:
            log.info("Resuming: running %s again first, because %s", step, reason)
            result = {**STEPS[step](self), "step": step, "run_key": self.names.key}
            self.state[step] = result
            self.refreshed[step] = result
        self._fresh.add(step)
        return result

    def forget(self, step: str) -> None:
        """``step``'s result no longer holds (this step changed what it described)."""
        self._fresh.discard(step)

    @property
    def plan(self) -> dict[str, Any]:
        """The plan, with the limits it must keep checked again: it came back through XCom."""
        plan = dict(self.result_of("inspect_object")["plan"])
        size = plan.get("volume_size_gb")
        if not isinstance(size, int) or not MIN_VOLUME_GB <= size <= self.config.max_volume_gb:
            raise Rejected(f"the plan's volume size {size!r} GB is outside this deployment's limits (50..{self.config.max_volume_gb})")
        vpus = plan.get("vpus_per_gb")
        if not isinstance(vpus, int) or not 0 <= vpus <= 120:
            raise Rejected(f"the plan's performance level {vpus!r} VPUs/GB is not one OCI offers")
        if not str(plan.get("compartment_id", "")).startswith("ocid1."):
            raise Rejected("the plan names no compartment OCID")
        return plan

    @property
    def compartment_id(self) -> str:
        """The compartment the run's resources live in: as planned, else as requested or configured."""
        planned = (self.state.get("inspect_object") or {}).get("plan", {}).get("compartment_id")
        return str(planned or self.request.options.compartment_id or self.config.compartment_id)

    def owned(self, resource_id: str, role: str, step: str) -> Any:
        """The worker or volume ``resource_id``, checked to carry this run's tags before it is acted
        on: results travel through XCom, which whoever can write Airflow's database could point at
        another import's volume or VM in the same compartment. None: it no longer exists."""
        get = self.clients.compute.get_instance if role == "worker" else self.clients.blockstorage.get_volume
        try:
            resource = get(resource_id).data
        except oci.exceptions.ServiceError as exc:
            if exc.status == 404:
                return None
            raise
        if not self.names.owns(resource.freeform_tags, role):
            raise Rejected(f"{step}'s result names {resource_id}, which is not this run's {role}")
        return resource

    def worker_id(self) -> str:
        return str(self.need("launch_worker")["instance_id"])

    def volume_id(self) -> str:
        return str(self.need("create_volume")["volume_id"])

    def shell(self) -> WorkerShell:
        work_bucket = self.config.work_bucket
        if work_bucket and work_bucket == self.request.bucket:
            raise StepError(
                "VDIMPORT_WORK_BUCKET is the import bucket, where every new object starts an import: give it a bucket of its own"
            )
        return WorkerShell(self.clients, self.names, self.worker_id(), self.compartment_id, self.config.poll_max_seconds, work_bucket)

    # --- delivery ---------------------------------------------------------------------------
    def delivered_volume(self) -> Any | None:
        """The run's volume once it is verified and detached (then nothing may touch its bytes).

        For the whole run of a multi-disk import: a volume only once every disk's is delivered."""
        if self._delivered is None:
            from .steps.volume import delivered_volumes

            volumes = delivered_volumes(self)
            if self.disk is None and self.disk_count > 1:
                done = {(v.freeform_tags or {}).get(DISK_TAG) for v in volumes}
                if not all(str(disk) in done for disk in range(1, self.disk_count + 1)):
                    volumes = []
            self._delivered = tuple(volumes)
        return self._delivered[0] if self._delivered else None
