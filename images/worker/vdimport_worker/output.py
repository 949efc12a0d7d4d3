"""Run Command output too large for its 1 KB of text: one object in the work bucket.

Run Command returns only the last 1 KB of a command's output as text. A script whose result
can be larger (``remote.LARGE_RESULTS``) sends its whole output to one object in the work
bucket (``VDIMPORT_WORK_BUCKET``) instead, through a write-only pre-authenticated request for
that object alone: the worker VM needs no IAM grant and can write nothing else. The step reads
the object with its own identity, then deletes the object and the PAR. The work bucket is
never the import bucket: an object created there would start an import.

Names come from the run and the command, so a retried step finds what an earlier attempt made:
the object ``vdimport-<key>/<command display name>.out``, the PAR ``vdimport-<key>-output``
(the reaper collects both for runs that are over). A PAR URL is a credential: it is never
logged, and never part of a result or an error.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

import oci

from .clients import Clients, list_all
from .naming import RunNames

log = logging.getLogger(__name__)

PAR_ROLE = "output"
OBJECT_SUFFIX = ".out"
MAX_READ_BYTES = 4 << 20  # the result is the last line: of a longer output only the end is read
# The agent writes the object when the command ends: up to its timeout after delivery, and a
# command may wait a while for the one before it on the same worker.
PAR_MARGIN_SECONDS = 3600
_PAR_PATH = re.compile(r"/p/[^/\s]+/")


def redacted(text: str) -> str:
    """``text`` with the token of any PAR URL in it hidden (for messages that quote a URL)."""
    return _PAR_PATH.sub("/p/***/", text)


def object_prefix(names: RunNames) -> str:
    """Where a run's output objects live in the work bucket."""
    return f"{names.prefix}/"


class OutputObject:
    """The object one command's output goes to, and the write-only PAR the worker's agent uses."""

    def __init__(self, clients: Clients, names: RunNames, bucket: str, display_name: str):
        self.clients = clients
        self.bucket = bucket
        self.object_name = f"{object_prefix(names)}{display_name}{OBJECT_SUFFIX}"
        self.par_name = names.name(PAR_ROLE)

    @property
    def _storage(self) -> Any:
        return self.clients.object_storage

    def target(self, timeout_seconds: int) -> Any:
        """The output target of a new command: a fresh PAR for the object. What an earlier attempt
        left goes first, so an old output can never pass for the new command's."""
        self.remove()
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=timeout_seconds + PAR_MARGIN_SECONDS)
        details = oci.object_storage.models.CreatePreauthenticatedRequestDetails(
            name=self.par_name, object_name=self.object_name, access_type="ObjectWrite", time_expires=expires
        )
        par = self._storage.create_preauthenticated_request(self.clients.namespace, self.bucket, details).data
        log.info("The command's output goes to %s in the work bucket %s (write-only PAR)", self.object_name, self.bucket)
        url = par.full_path or self._storage.base_client.endpoint + par.access_uri
        return oci.compute_instance_agent.models.InstanceAgentCommandOutputViaObjectStorageUriDetails(
            output_type="OBJECT_STORAGE_URI", output_uri=url
        )

    def read(self) -> str | None:
        """The command's output (its last MAX_READ_BYTES); None when the object does not exist."""
        try:
            response = self._storage.get_object(self.clients.namespace, self.bucket, self.object_name, range=f"bytes=-{MAX_READ_BYTES}")
        except oci.exceptions.ServiceError as exc:
            if exc.status == 404:
                return None
            if exc.status == 416:  # an empty object has no last bytes
                return ""
            raise
        return bytes(response.data.content).decode("utf-8", errors="replace")

    def remove(self) -> None:
        """Delete the object and every PAR made for it; what is gone already is fine."""
        namespace = self.clients.namespace
        pars = list_all(self._storage.list_preauthenticated_requests, namespace, self.bucket, object_name_prefix=self.object_name)
        for par in pars:
            if par.name == self.par_name and par.object_name == self.object_name:
                _ignore_missing(self._storage.delete_preauthenticated_request, namespace, self.bucket, par.id)
        _ignore_missing(self._storage.delete_object, namespace, self.bucket, self.object_name)


def remove_run_outputs(clients: Clients, names: RunNames, bucket: str) -> int:
    """Delete every output object and output PAR of the run (its worker is gone: nothing writes them)."""
    namespace = clients.namespace
    storage = clients.object_storage
    count = 0
    for par in list_all(storage.list_preauthenticated_requests, namespace, bucket, object_name_prefix=object_prefix(names)):
        if par.name == names.name(PAR_ROLE):
            _ignore_missing(storage.delete_preauthenticated_request, namespace, bucket, par.id)
            count += 1
    listing = oci.pagination.list_call_get_all_results(storage.list_objects, namespace, bucket, prefix=object_prefix(names)).data
    for item in listing.objects or []:
        _ignore_missing(storage.delete_object, namespace, bucket, item.name)
        count += 1
    return count


def _ignore_missing(call: Any, *args: Any) -> None:
    try:
        call(*args)
    except oci.exceptions.ServiceError as exc:
        if exc.status != 404:
            raise
