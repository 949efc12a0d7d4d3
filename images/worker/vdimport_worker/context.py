"""What a step gets: the request, the state earlier steps produced, config and clients."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from .clients import Clients
from .config import WorkerConfig
from .naming import RunNames
from .remote import WorkerShell
from .request import ImportRequest

log = logging.getLogger("vdimport")


class StepError(RuntimeError):
    """The step failed for a reason the user can act on; the message is the one-line cause."""


class Rejected(StepError):
    """The request or the image cannot be imported as it is: a retry would fail the same way.

    The CLI exits with ``EXIT_REJECTED`` for it, and the DAG fails the task without retries.
    """


@dataclass
class StepContext:
    run_id: str
    conf: dict[str, Any]  # the request as given (the DAG run conf)
    request: ImportRequest  # ...and as validated
    state: dict[str, dict[str, Any]]
    config: WorkerConfig
    clients: Clients
    names: RunNames = field(init=False)

    def __post_init__(self) -> None:
        self.names = RunNames(self.run_id)

    def result_of(self, step: str) -> dict[str, Any]:
        """An earlier step's result, which this step cannot do without."""
        result = self.state.get(step)
        if not isinstance(result, dict):
            raise StepError(f"{step} has not completed for this run; run it first")
        return result

    @property
    def plan(self) -> dict[str, Any]:
        return dict(self.result_of("inspect_object")["plan"])

    @property
    def compartment_id(self) -> str:
        """The compartment the run's resources live in: as planned, else as requested or configured."""
        planned = (self.state.get("inspect_object") or {}).get("plan", {}).get("compartment_id")
        return str(planned or self.request.options.compartment_id or self.config.compartment_id)

    def own(self, step: str, key: str, role: str) -> str:
        """An OCID from an earlier step's result, checked to carry this run's tags before it is
        acted on: results travel through XCom, which whoever can write Airflow's database could
        point at another import's volume or VM in the same compartment."""
        resource_id = str(self.result_of(step)[key])
        get = self.clients.compute.get_instance if role == "worker" else self.clients.blockstorage.get_volume
        if not self.names.owns(get(resource_id).data.freeform_tags, role):
            raise Rejected(f"{step}'s result names {resource_id}, which is not this run's {role}")
        return resource_id

    def worker_id(self) -> str:
        return self.own("launch_worker", "instance_id", "worker")

    def volume_id(self) -> str:
        return self.own("create_volume", "volume_id", "volume")

    def shell(self) -> WorkerShell:
        return WorkerShell(self.clients, self.names, self.worker_id(), self.compartment_id, self.config.poll_max_seconds)
