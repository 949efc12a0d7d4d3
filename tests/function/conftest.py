"""Fixtures for the function tests: the session emulator (Object Storage, Vault Secrets, Events),
a fake Airflow 3 API on loopback, and the function configured against both."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fnkit import PASSWORD, USERNAME, FakeAirflow
from oci.object_storage import ObjectStorageClient
from oci.object_storage.models import CreateBucketDetails

from vdimport_function import airflow as airflow_module
from vdimport_function import handler as handler_module
from vdimport_function.config import load
from vdimport_function.handler import Function
from vdimport_local.emulator.client import EmulatorHandle


@pytest.fixture
def fake_airflow() -> Iterator[FakeAirflow]:
    fake = FakeAirflow()
    yield fake
    fake.close()


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    airflow_module.clear_token_cache()
    handler_module.reset()
    yield
    airflow_module.clear_token_cache()
    handler_module.reset()


@pytest.fixture
def osc(emu: EmulatorHandle) -> ObjectStorageClient:
    return emu.client(ObjectStorageClient)


@pytest.fixture
def ns(osc: ObjectStorageClient) -> str:
    return str(osc.get_namespace().data)


@pytest.fixture
def bucket(emu: EmulatorHandle, osc: ObjectStorageClient, ns: str) -> str:
    """A fresh bucket with object events enabled."""
    name = f"uploads-{uuid.uuid4().hex[:8]}"
    osc.create_bucket(ns, CreateBucketDetails(name=name, compartment_id=emu.tenancy, object_events_enabled=True))
    return name


@pytest.fixture
def secret_id(emu: EmulatorHandle) -> str:
    created = emu.admin(
        "POST", "secrets", {"name": f"airflow-{uuid.uuid4().hex[:8]}", "content": json.dumps({"username": USERNAME, "password": PASSWORD})}
    )
    return str(created["id"])


@pytest.fixture
def env(emu: EmulatorHandle, fake_airflow: FakeAirflow, bucket: str, secret_id: str) -> dict[str, str]:
    """The function's configuration in local mode: the emulator's config file and endpoint, the secret, the fake Airflow."""
    return {
        "VDIMPORT_AIRFLOW_URL": fake_airflow.url,
        "VDIMPORT_AIRFLOW_SECRET_ID": secret_id,
        "VDIMPORT_BUCKETS": bucket,
        "VDIMPORT_OCI_AUTH": "config_file",
        "VDIMPORT_OCI_CONFIG": str(emu.config_path),
        "VDIMPORT_OCI_ENDPOINT": emu.endpoint,
        "VDIMPORT_AIRFLOW_RETRIES": "3",
        "VDIMPORT_AIRFLOW_BACKOFF_SECONDS": "0.05",
        "VDIMPORT_AIRFLOW_TIMEOUT_SECONDS": "5",
    }


@pytest.fixture
def function(env: dict[str, str]) -> Function:
    return Function(load(env))


@pytest.fixture
def events(emu: EmulatorHandle) -> Callable[..., list[dict[str, Any]]]:
    """The CloudEvents the emulator emitted for a bucket (optionally one object), exactly as it sends them."""

    def get(bucket: str, name: str | None = None, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = [
                e
                for e in emu.admin("GET", "events")
                if e["data"]["additionalDetails"]["bucketName"] == bucket and (name is None or e["data"]["resourceName"] == name)
            ]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    return get
