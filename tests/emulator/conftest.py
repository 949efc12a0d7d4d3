"""Fixtures of the emulator tests: SDK clients, a compartment, instances, buckets.

Every test here starts as the ``emu`` fixture promises: no faults, instant lifecycles.
SDK clients are built once per session (loading the key is the costly part) and all talk to
the session emulator; tests of a private emulator (``fresh_emulator``) build their own.
"""

from __future__ import annotations

import time
import types
import uuid
from collections.abc import Callable, Iterator

import oci
import pytest
from emulator_helpers import NO_RETRY, launch_details, launch_instance, new_compartment
from oci.object_storage import ObjectStorageClient
from oci.object_storage.models import CreateBucketDetails

from vdimport_local.emulator.client import EmulatorHandle


@pytest.fixture(autouse=True)
def _reset(emu: EmulatorHandle) -> None:
    """No faults and instant lifecycles for every test (the ``emu`` fixture does it)."""


@pytest.fixture(autouse=True)
def _quick_waiters(monkeypatch: pytest.MonkeyPatch) -> None:
    """``oci.wait_until`` sleeps a whole second before its first re-check whatever ``max_interval_seconds``
    says; here it re-checks every 50 ms at most. It still has to poll: states still change in the emulator's
    own time, so a waiter that would not see them fails here as it would against OCI."""
    real = time.sleep
    monkeypatch.setattr(oci.waiter, "time", types.SimpleNamespace(time=time.time, sleep=lambda seconds: real(min(seconds, 0.05))))


# --- clients --------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def compute(emulator: EmulatorHandle) -> oci.core.ComputeClient:
    return emulator.client(oci.core.ComputeClient, retry_strategy=NO_RETRY)


@pytest.fixture(scope="session")
def storage(emulator: EmulatorHandle) -> oci.core.BlockstorageClient:
    return emulator.client(oci.core.BlockstorageClient, retry_strategy=NO_RETRY)


@pytest.fixture(scope="session")
def agent(emulator: EmulatorHandle) -> oci.compute_instance_agent.ComputeInstanceAgentClient:
    return emulator.client(oci.compute_instance_agent.ComputeInstanceAgentClient, retry_strategy=NO_RETRY)


@pytest.fixture(scope="session")
def osc(emulator: EmulatorHandle) -> ObjectStorageClient:
    return emulator.client(ObjectStorageClient, retry_strategy=NO_RETRY)


# --- what the session emulator offers -------------------------------------------------------------
@pytest.fixture(scope="session")
def ads(emulator: EmulatorHandle) -> list[str]:
    """The three availability domain names (the same in every emulator)."""
    return [ad.name for ad in emulator.client(oci.identity.IdentityClient).list_availability_domains(emulator.tenancy).data]


@pytest.fixture(scope="session")
def image_id(compute: oci.core.ComputeClient, emulator: EmulatorHandle) -> str:
    """Oracle Linux 9 for the E4 shape (platform image OCIDs are the same in every emulator)."""
    images = compute.list_images(
        emulator.tenancy, operating_system="Oracle Linux", operating_system_version="9", shape="VM.Standard.E4.Flex"
    ).data
    assert images and all(i.operating_system == "Oracle Linux" for i in images)
    return str(images[0].id)


@pytest.fixture(scope="session")
def ns(osc: ObjectStorageClient) -> str:
    return str(osc.get_namespace().data)


# --- per test ---------------------------------------------------------------------------------------
@pytest.fixture
def compartment() -> str:
    """A compartment of the test's own, so listings only see what the test made."""
    return new_compartment()


@pytest.fixture
def launch(compute: oci.core.ComputeClient, ads: list[str], image_id: str, compartment: str) -> Iterator[Callable[..., str]]:
    """``launch(ad=None, wait=True, **overrides)``: an instance in the test's compartment (first AD by default),
    RUNNING when returned unless ``wait=False``; whatever is still up is terminated after the test."""
    launched: list[str] = []

    def start(ad: str | None = None, wait: bool = True, **overrides: object) -> str:
        iid = launch_instance(compute, launch_details(compartment, ad or ads[0], image_id, **overrides), wait)
        launched.append(iid)
        return iid

    yield start
    for iid in launched:
        if compute.get_instance(iid).data.lifecycle_state not in ("TERMINATING", "TERMINATED"):
            compute.terminate_instance(iid)


@pytest.fixture
def bucket_factory(emulator: EmulatorHandle, osc: ObjectStorageClient, ns: str) -> Iterator[Callable[..., str]]:
    """``make(events=False)``: a fresh bucket, emptied and deleted after the test."""
    made: list[str] = []

    def make(events: bool = False) -> str:
        name = f"test-{uuid.uuid4().hex[:10]}"
        osc.create_bucket(ns, CreateBucketDetails(name=name, compartment_id=emulator.tenancy, object_events_enabled=events))
        made.append(name)
        return name

    yield make
    for name in made:
        for upload in oci.pagination.list_call_get_all_results(osc.list_multipart_uploads, ns, name).data:
            osc.abort_multipart_upload(ns, name, upload.object, upload.upload_id)
        for obj in oci.pagination.list_call_get_all_results_generator(osc.list_objects, "record", ns, name):
            osc.delete_object(ns, name, obj.name)
        for par in oci.pagination.list_call_get_all_results(osc.list_preauthenticated_requests, ns, name).data:
            osc.delete_preauthenticated_request(ns, name, par.id)
        osc.delete_bucket(ns, name)


@pytest.fixture
def bucket(bucket_factory: Callable[..., str]) -> str:
    return bucket_factory()
