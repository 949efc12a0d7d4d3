"""Object names and metadata values are data, never code.

Names with quotes, ``$(...)``, backticks, ``;``, spaces, a newline, ``../`` and unicode
import like any other name: the volume holds the image, it is named after the object
(sanitised), and the ``touch`` each name carries never ran (its target file does not
exist). Metadata values that try the same in every option fail the import at
inspect_object with one line naming the option and what it allows; a ``volume_name``
full of shell syntax is accepted and sanitised.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
from importkit import Importer, assert_no_volume_made, assert_nothing_leaked, concurrent_imports, new_run_id, selected_params

from vdimport_local.diskimages import convert, raw_bytes
from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.pipeline import ImportOutcome

TOKEN = os.urandom(4).hex()
PWNED = f"/tmp/vdimport-pwned-{TOKEN}"  # the worker VM and the step runner share this /tmp


def executed(prefix: str = PWNED) -> list[str]:
    """Marker files that exist: each one is a name or value that was run as a command."""
    found = sorted(str(p) for p in Path("/tmp").glob(f"{Path(prefix).name}*"))
    for path in found:
        Path(path).unlink()  # so that one failure does not fail every later test
    return found


@pytest.fixture(scope="module")
def small_qcow2(small_disk: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    image = convert(small_disk, "qcow2", tmp_path_factory.mktemp("names") / "small.qcow2")
    return image, raw_bytes(image, "qcow2")


# (id, object name, metadata, the volume name the user must see); {pwned} is the case's own
# marker file (/tmp/vdimport-pwned-TOKEN-id), {base} its file name.
NAMES = [
    ("quotes-spaces", 'it\'s a "quoted"  disk.qcow2', {}, "it-s-a-quoted-disk"),
    ("command-substitution", "disk $(touch {pwned}).qcow2", {}, "{base}"),
    ("backticks-semicolons", "`touch {pwned}`;touch {pwned}-2;x.qcow2", {}, "{base}-2-x"),
    ("newline", "first line\n$(touch {pwned})\nsecond.qcow2", {}, "{base}-second"),
    ("dot-dot", "../../../tmp/../disk.qcow2", {}, "disk"),
    ("unicode", "образы/диск 💾.qcow2", {}, "диск"),
    (
        "volume-name-metadata",
        "plain.qcow2",
        {"volume_name": "$(touch {pwned}); `touch {pwned}-3` | rm -rf / & echo 'x' > \"y\""},
        "touch-tmp-{base}-touch-tmp-{base}-3-rm--rf-echo-x-y",
    ),
]


def marker_of(case: str) -> Path:
    return Path(f"{PWNED}-{case}")


def filled(template: str, case: str) -> str:
    return template.format(pwned=marker_of(case), base=marker_of(case).name)


@pytest.fixture(scope="module")
def name_imports(
    request: pytest.FixtureRequest, emulator: EmulatorHandle, small_qcow2: tuple[Path, bytes]
) -> Iterator[dict[str, Future[ImportOutcome]]]:
    """Every selected name's import, started up front and run a few at a time; each test waits for its own."""
    wanted = selected_params(request, "case")
    for case, *_ in NAMES:
        marker_of(case).unlink(missing_ok=True)
    with concurrent_imports(emulator) as submit:
        yield {
            case: submit(small_qcow2[0], filled(name, case), {k: filled(v, case) for k, v in metadata.items()})
            for case, name, metadata, _ in NAMES
            if case in wanted
        }


@pytest.mark.parametrize(("case", "object_name", "volume_name"), [(n[0], n[1], n[3]) for n in NAMES], ids=[n[0] for n in NAMES])
def test_object_name_is_only_data(
    emulator: EmulatorHandle,
    name_imports: dict[str, Future[ImportOutcome]],
    small_qcow2: tuple[Path, bytes],
    case: str,
    object_name: str,
    volume_name: str,
) -> None:
    """User-visible: the import succeeds, the volume equals the image, it carries the sanitised
    name, the report shows the object's real name, and nothing from the name ran."""
    outcome = name_imports[case].result(timeout=600)

    ran = executed(str(marker_of(case)))
    assert not ran, f"the name was executed: {ran} exist"
    assert outcome.succeeded, f"{outcome.failed_step}: {outcome.error}"
    assert_nothing_leaked(emulator, outcome, small_qcow2[1])
    report = outcome.report or {}
    assert report["source"]["object"] == filled(object_name, case)
    assert report["volume_name"] == filled(volume_name, case)


def test_longest_object_name(importer: Importer, small_qcow2: tuple[Path, bytes]) -> None:
    """User-visible: a name of OCI's maximum length (1024 bytes, here mostly Cyrillic) imports.
    Its PAR URL (the name percent-encoded, ~3 KB) is too long to share the download script's
    4 KB Run Command text, so it is handed to the worker in a command of its own."""
    name = "long-" + "д" * 506 + ".qcow2"
    assert len(name.encode()) == 1023

    outcome = importer.run(small_qcow2[0], name)

    assert_nothing_leaked(importer.emu, outcome, small_qcow2[1] if outcome.succeeded else None)
    assert outcome.succeeded, f"{outcome.failed_step}: {outcome.error}"
    assert (outcome.report or {})["volume_name"] == name[:255]  # OCI's display name limit


TRY = f"$(touch {PWNED})"
# (option, a value with shell syntax, what the one-line cause must list as allowed)
BAD_VALUES = [
    ("ad_number", f"1; touch {PWNED}", "must be 1, 2 or 3"),
    ("vpus_per_gb", f"`touch {PWNED}`", "must be one of 0, 10, 20, ... 120"),
    ("backup_policy", TRY, "must be bronze, silver, gold or a volume backup policy OCID"),
    ("compartment_id", f"ocid1.compartment.oc1..a{TRY}", "must be a compartment OCID"),
    ("source_format", f"qcow2 {TRY}", "must be one of qcow2, vmdk, vhd, vhdx, vdi, raw, ova"),
    ("kms_key_id", f"ocid1.key.oc1..a;touch {PWNED}", "must be a Vault key OCID"),
    ("verify", f"true && touch {PWNED}", "must be true or false"),
    ("keep_on_failure", f"false|touch {PWNED}", "must be true or false"),
    ("fsck", f"check'; touch {PWNED}; '", "must be off, check or strict"),
    ("tags", TRY, "must be a JSON object of strings"),
    ("tags", f'{{"{TRY}": "x"}}', "must be 1-100 letters, digits"),
]


@pytest.fixture(scope="module")
def tiny_qcow2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = tmp_path_factory.mktemp("tiny") / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
    return image


@pytest.mark.parametrize(("key", "value", "allowed"), BAD_VALUES, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(BAD_VALUES)])
@pytest.mark.parametrize("via", ["metadata", "conf"])
def test_bad_option_value_names_the_key(importer: Importer, tiny_qcow2: Path, key: str, value: str, allowed: str, via: str) -> None:
    """User-visible: the import fails at inspect_object with one line naming the option and
    the values it allows (the bad value shown quoted), nothing ran, nothing was created.
    ``via``: the value came as object metadata, or as a manual trigger's run conf."""
    run_id = new_run_id(f"bad-{key}")
    metadata, conf = ({key: value}, None) if via == "metadata" else ({}, {key: value})

    outcome = importer.run(tiny_qcow2, f"options/{key}.qcow2", metadata, run_id=run_id, conf=conf)

    ran = executed()
    assert not ran, f"the value was executed: {ran} exist"
    assert outcome.failed_step == "inspect_object", f"{outcome.failed_step}: {outcome.error}"
    assert outcome.error is not None and "\n" not in outcome.error
    assert re.match(f"(bad import option: )?{key}: ", outcome.error), outcome.error
    assert allowed in outcome.error
    assert_nothing_leaked(importer.emu, outcome)
    assert_no_volume_made(importer.emu, run_id)
