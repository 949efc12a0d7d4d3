"""Unit tests of the import request: every option's good and bad values.

A bad value must fail with exactly one line that starts with the option's key, says what is
allowed, and shows the bad value quoted (so a value full of shell syntax or control
characters is displayed, never interpreted, and never breaks the log line).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from vdimport_worker.request import OPTION_KEYS, ImportOptions, ImportRequest, RequestError

SOURCE = {"namespace": "ns", "bucket": "images", "object": "disks/vm.qcow2"}
POLICY = "ocid1.volumebackuppolicy.oc1..aaaabbbb"
COMPARTMENT = "ocid1.compartment.oc1..aaaacccc"
KEY = "ocid1.key.oc1.iad.abcd.aaaadddd"


def parse(metadata: dict[str, Any] | None = None, **conf: Any) -> ImportRequest:
    return ImportRequest.parse({**SOURCE, "metadata": metadata or {}, **conf})


def options(**metadata: Any) -> ImportOptions:
    return parse(metadata).options


def error(conf: dict[str, Any] | str) -> str:
    with pytest.raises(RequestError) as caught:
        ImportRequest.parse(conf)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    return message


def test_defaults() -> None:
    request = parse()
    assert (request.namespace, request.bucket, request.object, request.etag, request.size) == ("ns", "images", "disks/vm.qcow2", None, None)
    assert request.options == ImportOptions()
    assert request.options.verify is True and request.options.fsck == "check" and request.options.vpus_per_gb == 10
    assert request.unknown_keys == ()


def test_good_values_are_normalised() -> None:
    opts = options(
        ad_number=" 2 ",
        volume_name="my disk",
        vpus_per_gb="120",
        backup_policy="Gold",
        compartment_id=f" {COMPARTMENT} ",
        source_format="VHD",
        kms_key_id=KEY,
        verify="no",
        fsck="STRICT",
        tags='{"project": "migration", "n": 3}',
        keep_on_failure="yes",
    )
    assert opts == ImportOptions(
        ad_number=2,
        volume_name="my disk",
        vpus_per_gb=120,
        backup_policy="gold",
        compartment_id=COMPARTMENT,
        source_format="vhd",
        kms_key_id=KEY,
        verify=False,
        fsck="strict",
        tags={"project": "migration", "n": "3"},
        keep_on_failure=True,
    )
    assert options(backup_policy=POLICY, fsck="false", vpus_per_gb=0, verify=True, tags={"a": True}).backup_policy == POLICY
    assert options(fsck="off").fsck == "off" and options(fsck="0").fsck == "off"
    assert options(compartment_id="ocid1.tenancy.oc1..aaaa").compartment_id == "ocid1.tenancy.oc1..aaaa"


def test_metadata_keys_in_any_spelling_and_conf_wins() -> None:
    request = parse({"opc-meta-AD-Number": "3", "VPUS-per-GB": "20", "fsck": "off"}, fsck="strict")
    assert (request.options.ad_number, request.options.vpus_per_gb, request.options.fsck) == (3, 20, "strict")


def test_empty_values_mean_default_and_unknown_keys_are_reported() -> None:
    request = parse({"ad_number": "", "colour": "blue", "$(reboot)": "x"}, priority="high")
    assert request.options.ad_number is None
    assert request.unknown_keys == ("$(reboot)", "colour", "priority")


INJECTION = "$(touch /tmp/pwned)"
# (key, bad value, the start of the one line the user must see)
BAD_OPTIONS = [
    ("ad_number", "0", 'ad_number: must be 1, 2 or 3 (got "0")'),
    ("ad_number", "4", 'ad_number: must be 1, 2 or 3 (got "4")'),
    ("ad_number", "two", 'ad_number: must be 1, 2 or 3 (got "two")'),
    ("ad_number", "1.5", 'ad_number: must be 1, 2 or 3 (got "1.5")'),
    ("ad_number", True, "ad_number: must be 1, 2 or 3 (got true)"),
    ("ad_number", "\u0662", 'ad_number: must be 1, 2 or 3 (got "\\u0662")'),  # an Arabic-Indic 2 is not "2"
    ("ad_number", f"1;{INJECTION}", 'ad_number: must be 1, 2 or 3 (got "1;$(touch /tmp/pwned)")'),
    ("volume_name", "   ", "volume_name: must be a non-empty name"),
    ("volume_name", 42, "volume_name: must be a non-empty name"),
    ("vpus_per_gb", "15", 'vpus_per_gb: must be one of 0, 10, 20, ... 120 (got "15")'),
    ("vpus_per_gb", "130", 'vpus_per_gb: must be one of 0, 10, 20, ... 120 (got "130")'),
    ("vpus_per_gb", "-10", 'vpus_per_gb: must be one of 0, 10, 20, ... 120 (got "-10")'),
    ("vpus_per_gb", "fast", 'vpus_per_gb: must be one of 0, 10, 20, ... 120 (got "fast")'),
    ("backup_policy", "platinum", 'backup_policy: must be bronze, silver, gold or a volume backup policy OCID (got "platinum")'),
    ("backup_policy", COMPARTMENT, "backup_policy: must be bronze, silver, gold or a volume backup policy OCID"),
    ("backup_policy", INJECTION, "backup_policy: must be bronze, silver, gold or a volume backup policy OCID"),
    ("compartment_id", "my-compartment", 'compartment_id: must be a compartment OCID (got "my-compartment")'),
    ("compartment_id", KEY, "compartment_id: must be a compartment OCID"),
    ("compartment_id", f"{COMPARTMENT};{INJECTION}", "compartment_id: must be a compartment OCID"),
    ("source_format", "iso", 'source_format: must be one of qcow2, vmdk, vhd, vhdx, vdi, raw, ova (got "iso")'),
    ("source_format", "vpc", "source_format: must be one of qcow2, vmdk, vhd, vhdx, vdi, raw, ova"),
    ("source_format", f"raw {INJECTION}", "source_format: must be one of qcow2, vmdk, vhd, vhdx, vdi, raw, ova"),
    ("kms_key_id", COMPARTMENT, "kms_key_id: must be a Vault key OCID"),
    ("kms_key_id", f"{KEY}\n{INJECTION}", 'kms_key_id: must be a Vault key OCID (got "ocid1.key.oc1.iad.abcd.aaaadddd\\n$(touch'),
    ("verify", "maybe", 'verify: must be true or false (got "maybe")'),
    ("verify", f"true`{INJECTION}`", "verify: must be true or false"),
    ("keep_on_failure", "2", 'keep_on_failure: must be true or false (got "2")'),
    ("fsck", "repair", 'fsck: must be off, check or strict (got "repair")'),
    ("fsck", "true", 'fsck: must be off, check or strict (got "true")'),
    ("fsck", f"check; {INJECTION}", "fsck: must be off, check or strict"),
    ("tags", "project=x", 'tags: must be a JSON object of strings, e.g. {"project": "migration"}'),
    ("tags", "[1, 2]", 'tags: must be a JSON object of strings, e.g. {"project": "migration"}'),
    ("tags", INJECTION, 'tags: must be a JSON object of strings, e.g. {"project": "migration"}'),
    ("tags", json.dumps({INJECTION: "x"}), "tags: key \"$(touch /tmp/pwned)\" must be 1-100 letters, digits, '_', '.', ':' or '-'"),
    ("tags", json.dumps({"vdimport-run": "x"}), 'tags: key "vdimport-run" is reserved for vdimport\'s own tags'),
    ("tags", json.dumps({"k": "v" * 257}), 'tags: value of "k" must be a string of at most 256 characters'),
    ("tags", json.dumps({"k": {"nested": 1}}), 'tags: value of "k" must be a string of at most 256 characters'),
    ("tags", json.dumps({f"k{i}": "v" for i in range(65)}), "tags: at most 64 tags"),
]


@pytest.mark.parametrize(("key", "value", "expected"), BAD_OPTIONS, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(BAD_OPTIONS)])
@pytest.mark.parametrize("via", ["metadata", "conf"])
def test_bad_option_is_one_line_naming_key_and_allowed_values(key: str, value: Any, expected: str, via: str) -> None:
    conf = {**SOURCE, "metadata": {key: value}} if via == "metadata" else {**SOURCE, key: value}
    message = error(conf)
    assert message.startswith(expected), message
    assert message.startswith(f"{key}: ")
    assert len(message) < 300


def test_every_option_has_a_bad_value_case() -> None:
    assert {key for key, _, _ in BAD_OPTIONS} == set(OPTION_KEYS)


def test_long_bad_values_are_cut_short() -> None:
    message = error({**SOURCE, "metadata": {"fsck": "x" * 5000}})
    assert message.startswith('fsck: must be off, check or strict (got "xxx') and message.endswith('...")')
    assert len(message) < 150


@pytest.mark.parametrize(
    ("conf", "expected"),
    [
        ("{not json", "request is not valid JSON: "),
        ("[1, 2]", "request must be a JSON object"),
        ({"bucket": "b", "object": "o"}, "namespace: is required (the source object's namespace)"),
        ({"namespace": "n", "object": "o"}, "bucket: is required (the source object's bucket)"),
        ({"namespace": "n", "bucket": "b", "object": ""}, "object: is required (the source object's object)"),
        ({"namespace": "n", "bucket": "b", "object": 7}, "object: is required"),
        ({"namespace": "n", "bucket": "b", "object": "a\x00b"}, "object: must not contain NUL characters"),
        ({"namespace": "n", "bucket": "b", "object": "д" * 513}, "object: longer than 1024 bytes"),
        ({**SOURCE, "etag": ""}, "etag: must be the object's ETag as a non-empty string"),
        ({**SOURCE, "etag": 5}, "etag: must be the object's ETag as a non-empty string"),
        ({**SOURCE, "size": -1}, "size: must be a byte count of 0 or more (got -1)"),
        ({**SOURCE, "size": "big"}, 'size: must be a whole number (got "big")'),
        ({**SOURCE, "size": False}, "size: must be a whole number (got false)"),
        ({**SOURCE, "metadata": ["ad_number", 1]}, "metadata: must be a JSON object of the object's opc-meta-* values"),
    ],
    ids=[
        *("json", "array", "namespace", "bucket", "object-empty", "object-type", "object-nul", "object-long", "etag", "etag-type"),
        *("size-negative", "size-text", "size-bool", "metadata"),
    ],
)
def test_bad_source_fields(conf: dict[str, Any] | str, expected: str) -> None:
    assert error(conf).startswith(expected)


def test_object_names_are_kept_exactly() -> None:
    """Any name OCI allows is data: kept byte for byte (sanitising is for the volume's name only)."""
    for name in ['it\'s "q".qcow2', "$(touch x)`id`;.vmdk", "a\nb.raw", "../../x.vhd", "диск 💾.qcow2", "sp  ace.img"]:
        assert ImportRequest.parse({**SOURCE, "object": name}).object == name


def test_json_text_and_round_trip() -> None:
    conf = {**SOURCE, "etag": "abc", "size": 10, "metadata": {"ad_number": "1"}}
    request = ImportRequest.parse(json.dumps(conf))
    assert request == ImportRequest.parse(conf)
    assert request.to_json()["options"]["ad_number"] == 1
    assert request.size == 10 and request.etag == "abc"
