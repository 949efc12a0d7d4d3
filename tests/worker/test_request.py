"""Unit tests of the import request: every option's good and bad values.

A bad value must fail with exactly one line that starts with the option's key, says what is
allowed, and shows the bad value quoted (so a value full of shell syntax or control
characters is displayed, never interpreted, and never breaks the log line).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from vdimport_worker.request import MAX_TAGS, OPTION_KEYS, ImportOptions, ImportRequest, RequestError

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


def test_empty_values_mean_default_and_unknown_conf_keys_are_reported() -> None:
    request = parse({"ad_number": "", "fsck": None}, priority="high")
    assert request.options == ImportOptions()
    assert request.unknown_keys == ("priority",)


@pytest.mark.parametrize("via", ["metadata", "conf"])
@pytest.mark.parametrize("zero", ["0", " 0 ", 0])
def test_ad_number_0_means_any_as_in_the_reference(zero: Any, via: str) -> None:
    request = parse({"ad_number": zero}) if via == "metadata" else parse(ad_number=zero)
    assert request.options.ad_number is None
    assert request.options == parse().options


def test_metadata_that_is_no_option_becomes_the_volumes_tags() -> None:
    """As uploads for the reference architecture expect: the key without opc-meta-, its value as it is."""
    request = parse({"opc-meta-Project": "migration", "owner": "ops@example.com", "cost-center": "42", "ad_number": "2", "FSCK": "off"})
    assert request.metadata_tags == {"Project": "migration", "cost-center": "42", "owner": "ops@example.com"}
    assert list(request.metadata_tags) == sorted(request.metadata_tags)  # the same upload, the same tags
    assert (request.options.ad_number, request.options.fsck) == (2, "off")  # options are options, not tags
    assert request.tag_warnings == () and request.unknown_keys == ()
    assert request.volume_tags == request.metadata_tags


def test_the_tags_option_wins_over_metadata_of_the_same_name() -> None:
    request = parse({"project": "from-metadata", "team": "db"}, tags={"Project": "from-tags"})
    assert request.volume_tags == {"team": "db", "Project": "from-tags"}
    [warning] = request.tag_warnings
    assert warning.startswith('metadata "project" is not a tag of the volume: key "project" is a tag of the volume already')


# (metadata key, value, the reason in its warning): none of them fails the import
UNTAGGABLE = [
    ("vdimport-run", "0" * 32, 'key "vdimport-run" is reserved for vdimport\'s own tags'),
    ("VDIMPORT-state", "delivered", 'key "VDIMPORT-state" is reserved for vdimport\'s own tags'),
    ("opc-meta-vdimport-role", "volume", 'key "vdimport-role" is reserved'),
    ("cost.center", "42", "must be 1-100 letters, digits or ASCII punctuation other than '.'"),
    ("two words", "x", "must be 1-100 letters, digits or ASCII punctuation other than '.'"),
    ("k" * 101, "x", "must be 1-100 letters"),
    ("диск", "x", "must be 1-100 letters"),
    ("long", "v" * 257, 'value of "long" must be a string of at most 256 characters'),
    ("nested", {"a": 1}, 'value of "nested" must be a string of at most 256 characters'),
]


@pytest.mark.parametrize(("key", "value", "reason"), UNTAGGABLE, ids=[f"untaggable-{i}" for i in range(len(UNTAGGABLE))])
def test_metadata_that_cannot_be_a_tag_is_a_one_line_warning(key: str, value: Any, reason: str) -> None:
    request = parse({key: value, "kept": "yes"})
    assert request.metadata_tags == {"kept": "yes"}
    [warning] = request.tag_warnings
    assert "\n" not in warning and len(warning) < 300
    assert warning.startswith("metadata ") and reason in warning, warning


def test_a_volume_takes_as_many_user_tags_as_oci_leaves_room_for() -> None:
    """10 free-form tags a resource, up to 5 of them vdimport's own (vdimport-disk on a multi-disk
    OVA's volumes): the tags option's first, then metadata in key order."""
    assert MAX_TAGS == 5
    request = parse({f"m{i}": str(i) for i in range(6)}, tags={"a": "1", "b": "2"})
    assert request.volume_tags == {"m0": "0", "m1": "1", "m2": "2", "a": "1", "b": "2"}
    assert [w.split(":")[0] for w in request.tag_warnings] == [
        'metadata "m3" is not a tag of the volume',
        'metadata "m4" is not a tag of the volume',
        'metadata "m5" is not a tag of the volume',
    ]
    assert all(w.endswith("a volume carries at most 5 tags of the user") for w in request.tag_warnings)


def test_metadata_tags_keep_the_run_conf_round_trip() -> None:
    conf = {**SOURCE, "metadata": {"owner": "ops", "bad key": "x"}}
    request = ImportRequest.parse(json.dumps(conf))
    assert request == ImportRequest.parse(conf)
    assert request.to_json()["metadata_tags"] == {"owner": "ops"} and len(request.to_json()["tag_warnings"]) == 1


INJECTION = "$(touch /tmp/pwned)"
# (key, bad value, the start of the one line the user must see)
BAD_OPTIONS = [
    ("ad_number", "-1", 'ad_number: must be 1, 2 or 3 (got "-1"), or 0 for any availability domain'),
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
    (
        "tags",
        json.dumps({INJECTION: "x"}),
        "tags: key \"$(touch /tmp/pwned)\" must be 1-100 letters, digits or ASCII punctuation other than '.'",
    ),
    (
        "tags",
        json.dumps({"cost.center": "x"}),
        "tags: key \"cost.center\" must be 1-100 letters, digits or ASCII punctuation other than '.'",
    ),
    ("tags", json.dumps({"vdimport-run": "x"}), 'tags: key "vdimport-run" is reserved for vdimport\'s own tags'),
    ("tags", json.dumps({"k": "v" * 257}), 'tags: value of "k" must be a string of at most 256 characters'),
    ("tags", json.dumps({"k": {"nested": 1}}), 'tags: value of "k" must be a string of at most 256 characters'),
    (
        "tags",
        json.dumps({f"k{i}": "v" for i in range(6)}),
        "tags: at most 5 tags (a volume carries 10 free-form tags, up to 5 of them vdimport's own)",
    ),
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
