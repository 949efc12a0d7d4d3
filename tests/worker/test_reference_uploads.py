"""Uploads made for the reference architecture import unchanged.

There, ``ad_number=0`` meant "any availability domain" and every ``opc-meta-*`` key became a
free-form tag of the volume. Here the same upload gets an unpinned AD chosen as for no
``ad_number``, and its metadata keys that are no option as the volume's tags, next to the
run's own; a key OCI would refuse as a tag is a warning in the report, not a failed import.
"""

from __future__ import annotations

from pathlib import Path

from importkit import Importer, assert_nothing_leaked

from vdimport_local.emulator.client import EmulatorHandle


def test_ad_number_0_and_metadata_tags_as_in_the_reference(emu: EmulatorHandle, importer: Importer, small_disk: Path) -> None:
    metadata = {"ad_number": "0", "project": "migration", "owner": "ops@example.com", "cost.center": "42", "vdimport-run": "forged"}
    outcome = importer.run(small_disk, "reference/web01.raw", metadata, conf={"tags": {"owner": "from-tags"}})
    assert outcome.succeeded, outcome.error
    volume = assert_nothing_leaked(emu, outcome, small_disk.read_bytes())
    assert volume is not None

    plan = outcome.state["inspect_object"]["plan"]
    assert plan["ad_pinned"] is False and plan["availability_domain"] in plan["availability_domains"]
    assert volume["availabilityDomain"] == plan["availability_domain"]

    tags = volume["freeformTags"]
    assert tags["project"] == "migration"
    assert tags["owner"] == "from-tags"  # the tags option wins over the metadata
    assert tags["vdimport-run"] != "forged" and tags["vdimport-role"] == "volume"  # vdimport's own are never the user's
    assert "cost.center" not in tags and "ad_number" not in tags
    warnings = outcome.report["warnings"]
    assert any(w.startswith('metadata "cost.center" is not a tag of the volume') for w in warnings), warnings
    assert any(w.startswith('metadata "vdimport-run" is not a tag of the volume') for w in warnings), warnings
    assert any(w.startswith('metadata "owner" is not a tag of the volume') for w in warnings), warnings
    [inspect] = [r for r in outcome.runs if r.name == "inspect_object"]
    assert 'metadata "cost.center" is not a tag of the volume: key "cost.center" must be' in inspect.output
    assert "Metadata as tags of the volume: project" in inspect.output
