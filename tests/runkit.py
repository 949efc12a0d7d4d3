"""Finding what one DAG run made, as a user would: by the ``vdimport-dag-run`` tag.

A run's identity is the random key ``inspect_object`` mints (the ``vdimport-run`` tag and the
``vdimport-<key>-*`` names), so tests go from the run id to its keys through the tag every
resource also carries, then to what carries no tags (PARs, Run Command executions, retry
tokens) through the names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from vdimport_local.emulator.client import EmulatorHandle
from vdimport_worker.naming import DAG_RUN_TAG, RUN_TAG

TAGGED_KINDS = ("instance", "volume")


def of_run(resources: Iterable[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    """Those of ``resources`` tagged with the DAG run ``run_id``."""
    return [r for r in resources if (r.get("freeformTags") or {}).get(DAG_RUN_TAG) == run_id]


def run_keys(emu: EmulatorHandle, run_id: str) -> set[str]:
    """The run keys (run instances) that made something for ``run_id``."""
    return {str(r["freeformTags"][RUN_TAG]) for kind in TAGGED_KINDS for r in of_run(emu.resources(kind), run_id)}


def run_prefixes(emu: EmulatorHandle, run_id: str) -> tuple[str, ...]:
    """``vdimport-<key>`` for each of the run's keys: how its untagged things are named."""
    return tuple(f"vdimport-{key}" for key in sorted(run_keys(emu, run_id)))


def run_resources(emu: EmulatorHandle, run_id: str, kind: str) -> list[dict[str, Any]]:
    """The resources of ``kind`` that carry this run's tags."""
    return of_run(emu.resources(kind), run_id)


def run_pars(emu: EmulatorHandle, run_id: str) -> list[dict[str, Any]]:
    """PARs the run made (PARs carry no tags: they are named after the run's key)."""
    prefixes = run_prefixes(emu, run_id)
    return [p for p in emu.resources("par") if prefixes and str(p.get("name", "")).startswith(prefixes)]


def run_commands(emu: EmulatorHandle, run_id: str, script: str) -> list[dict[str, Any]]:
    """The run's Run Command executions of ``script`` (named ``vdimport-<key>-<script>...``)."""
    prefixes = tuple(f"{p}-{script}" for p in run_prefixes(emu, run_id))
    executions = emu.resources("instanceAgentCommandExecution")
    return [e for e in executions if prefixes and str(e.get("displayName", "")).startswith(prefixes)]
