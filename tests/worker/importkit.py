"""Helpers for the step-runner tests (imported by tests/worker/conftest.py and the test modules).

Uploading a file and running an import through all 14 steps, finding what a run made by
its ``vdimport-run`` tag, and the "nothing leaked" check. Everything here works from what a
user (or the emulator's admin API) can see: the object in the bucket, the steps' results
and one-line causes, and the resources that carry the run's tag.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oci
from hostilekit import file_contains  # noqa: F401 - re-exported: the marker scan lives with the hostile images
from runkit import run_pars, run_prefixes, run_resources

from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.pipeline import ImportOutcome, run_import

BUCKET = "vdimport-tests"
LIVE_ATTACHMENT = ("ATTACHING", "ATTACHED", "DETACHING")
GONE_VOLUME = ("TERMINATING", "TERMINATED")
_run_numbers = itertools.count(1)


@dataclass
class Bucket:
    namespace: str
    name: str
    storage: Any  # oci.object_storage.ObjectStorageClient

    def put(self, object_name: str, data: bytes | Path, metadata: dict[str, str] | None = None) -> str:
        """Upload ``data`` (bytes or a file) as ``object_name`` with user metadata; returns the ETag."""
        if isinstance(data, Path):
            manager = oci.object_storage.UploadManager(self.storage, allow_parallel_uploads=False)
            resp = manager.upload_file(self.namespace, self.name, object_name, str(data), metadata=metadata or {})
        else:
            resp = self.storage.put_object(self.namespace, self.name, object_name, data, opc_meta=metadata or {})
        return str(resp.headers.get("etag"))


def ensure_bucket(emu: EmulatorHandle, name: str = BUCKET) -> Bucket:
    """The bucket ``name`` in the emulator (created when missing)."""
    storage = emu.client(oci.object_storage.ObjectStorageClient)
    namespace = storage.get_namespace().data
    details = oci.object_storage.models.CreateBucketDetails(name=name, compartment_id=emu.tenancy)
    try:
        storage.create_bucket(namespace, details)
    except oci.exceptions.ServiceError as exc:
        if exc.status != 409:
            raise
    return Bucket(namespace, name, storage)


def new_run_id(label: str) -> str:
    """A run id unique in the session (the emulator is shared by every test)."""
    return f"test__{label}__{os.getpid()}_{next(_run_numbers)}"


@dataclass
class Importer:
    emu: EmulatorHandle
    bucket: Bucket

    def run(
        self,
        data: bytes | Path,
        object_name: str,
        metadata: dict[str, str] | None = None,
        run_id: str | None = None,
        conf: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> ImportOutcome:
        """Upload ``data`` as ``object_name`` with ``metadata`` and import it like the DAG would.

        ``conf`` adds run-conf keys (manual-trigger params); ``kwargs`` go to ``run_import``.
        """
        etag = self.bucket.put(object_name, data, metadata)
        size = data.stat().st_size if isinstance(data, Path) else len(data)
        request = {"namespace": self.bucket.namespace, "bucket": self.bucket.name, "object": object_name, "etag": etag, "size": size}
        request.update(conf or {})
        return run_import(self.emu, run_id or new_run_id("import"), request, **kwargs)


@contextlib.contextmanager
def concurrent_imports(emu: EmulatorHandle, parallel: int = 3) -> Iterator[Callable[..., Future[ImportOutcome]]]:
    """``submit(data, object_name, metadata, run_id, ...)`` runs ``Importer.run`` in the background,
    ``parallel`` imports at a time (as concurrent DAG runs would); leaving waits for all.

    Most of an import is waiting (step start-up, lifecycle polls), so a module of full
    imports runs about twice as fast on two cores. Faults are cleared first: tests that
    inject faults must not overlap these.
    """
    emu.clear_faults()
    emu.configure(lifecycle_seconds=0.0, duplicate_events_every=0)
    with ThreadPoolExecutor(parallel, thread_name_prefix="import") as pool:

        def submit(data: bytes | Path, object_name: str, *args: Any, **kwargs: Any) -> Future[ImportOutcome]:
            importer = Importer(emu, ensure_bucket(emu))  # an SDK client per import: they are not shared across threads
            return pool.submit(importer.run, data, object_name, *args, **kwargs)

        try:
            yield submit
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def selected_params(request: Any, name: str) -> list[Any]:
    """The values of parameter ``name`` of the tests of ``request``'s module that will run
    (after ``-k`` and the like), in order: a module fixture starts only the imports it needs."""
    return [
        item.callspec.params[name]
        for item in request.session.items
        if item.module is request.module and name in getattr(getattr(item, "callspec", None), "params", {})
    ]


def volume_path(emu: EmulatorHandle, volume_id: str) -> Path:
    """The sparse file behind a volume (admin API)."""
    return Path(emu.admin("GET", f"volumes/{volume_id}")["path"])


def first_difference(path: Path, expected: bytes, chunk: int = 4 << 20) -> int | None:
    """Offset of the first byte where the file's start differs from ``expected`` (None: equal)."""
    view = memoryview(expected)
    with open(path, "rb") as f:
        for at in range(0, len(expected), chunk):
            want = view[at : at + chunk]
            got = f.read(len(want))
            if got != want:
                return at + next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
    return None


def assert_nothing_leaked(emu: EmulatorHandle, outcome: ImportOutcome, expected: bytes | None = None) -> dict[str, Any] | None:
    """What a user must find after an import, success or failure.

    Every worker instance of the run TERMINATED, no PAR of the run, no live attachment;
    on success exactly one AVAILABLE volume (the one the report names) whose first bytes
    are ``expected`` when given; on failure no volume of the run left. Returns the volume.
    """
    volumes = assert_disks_delivered(emu, outcome, [expected])
    return volumes[0] if volumes else None


def assert_disks_delivered(emu: EmulatorHandle, outcome: ImportOutcome, expected: list[bytes | None]) -> list[dict[str, Any]]:
    """:func:`assert_nothing_leaked` for an import of ``len(expected)`` disks: on success exactly
    that many AVAILABLE volumes, the ones the report lists in disk order, disk N's volume
    starting with ``expected[N-1]``. Returns the volumes in disk order (none on failure)."""
    run_id = outcome.run_id
    instances = run_resources(emu, run_id, "instance")
    alive = [(i["id"], i["lifecycleState"]) for i in instances if i["lifecycleState"] != "TERMINATED"]
    assert not alive, f"worker instances not terminated: {alive}"
    if launched(outcome):
        assert instances, "the run launched a worker but no instance carries its tag"
    pars = run_pars(emu, run_id)
    assert not pars, f"pre-authenticated requests left: {[p.get('name') for p in pars]}"
    all_volumes = run_resources(emu, run_id, "volume")
    mine = {i["id"] for i in instances} | {v["id"] for v in all_volumes}
    attachments = [
        (a["id"], a["lifecycleState"])
        for a in emu.resources("volumeattachment")
        if (a.get("instanceId") in mine or a.get("volumeId") in mine) and a.get("lifecycleState") in LIVE_ATTACHMENT
    ]
    assert not attachments, f"live volume attachments left: {attachments}"
    volumes = [v for v in all_volumes if v["lifecycleState"] not in GONE_VOLUME]
    if not outcome.succeeded:
        assert not volumes, f"failed import ({outcome.failed_step}: {outcome.error}) left volumes: {[v['id'] for v in volumes]}"
        return []
    wanted = "exactly one volume" if len(expected) == 1 else f"exactly {len(expected)} volumes"
    assert len(volumes) == len(expected), f"expected {wanted}, found {[(v['id'], v['lifecycleState']) for v in volumes]}"
    report = outcome.report or {}
    assert report.get("volume_id") in {v["id"] for v in volumes}, "the report names another volume than the one the run made"
    listed = [v["volume_id"] for v in report.get("volumes") or [{"volume_id": report.get("volume_id")}]]
    assert sorted(listed) == sorted(v["id"] for v in volumes), "the report lists other volumes than the run made"
    by_id = {v["id"]: v for v in volumes}
    ordered = [by_id[volume_id] for volume_id in listed]
    for disk, (volume, content) in enumerate(zip(ordered, expected, strict=True), 1):
        assert volume["lifecycleState"] == "AVAILABLE", volume["lifecycleState"]
        if content is not None:
            path = volume_path(emu, volume["id"])
            assert path.stat().st_size >= len(content), f"disk {disk}: the volume ({path.stat().st_size} bytes) is smaller than the image"
            differs = first_difference(path, content)
            assert differs is None, f"disk {disk}: the volume differs from the image's raw content at byte {differs} (of {len(content)})"
    return ordered


def assert_no_volume_made(emu: EmulatorHandle, run_id: str) -> None:
    """The run never created a volume: none carries its tag, no CreateVolume used its retry token."""
    volumes = run_resources(emu, run_id, "volume")
    assert not volumes, f"the run created volumes: {[(v['id'], v['lifecycleState']) for v in volumes]}"
    prefixes = run_prefixes(emu, run_id)
    creates = [c for c in emu.calls("CreateVolume") if prefixes and str(c.get("retryToken") or "").startswith(prefixes)]
    assert not creates, f"the run called CreateVolume {len(creates)} time(s)"


def launched(outcome: ImportOutcome) -> bool:
    """Did the run get as far as launching a worker?"""
    return any(r.name == "launch_worker" and r.exit_code == 0 for r in outcome.runs)


def volume_files(emu: EmulatorHandle) -> list[Path]:
    """Every volume backing file the emulator holds (any run, any state)."""
    paths = set((emu.data_dir / "volumes").glob("*"))
    for volume in emu.resources("volume"):
        try:
            paths.add(volume_path(emu, volume["id"]))
        except Exception:  # a deleted volume may have no backing file any more
            continue
    return sorted(p for p in paths if p.is_file())
