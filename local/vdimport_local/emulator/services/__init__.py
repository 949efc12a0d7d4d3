"""One module per emulated OCI service, each with its routes on a :class:`Service`."""

from __future__ import annotations

from ..routing import Service


def all_services() -> list[Service]:
    from . import (
        admin,
        artifacts,
        blockstorage,
        compute,
        containerengine,
        events,
        functions,
        identity,
        instanceagent,
        notifications,
        objectstorage,
        secrets,
    )

    return [
        admin.service,
        objectstorage.service,
        identity.service,
        compute.service,
        blockstorage.service,
        instanceagent.service,
        secrets.service,
        notifications.service,
        functions.service,
        events.service,
        artifacts.service,
        containerengine.service,
    ]
