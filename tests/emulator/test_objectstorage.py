"""Object Storage through the real SDK and CLI: buckets, objects, ranges, checksums, multipart."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import oci
import pytest
from emulator_helpers import error_of
from oci.object_storage import ObjectStorageClient, UploadManager
from oci.object_storage.models import (
    CommitMultipartUploadDetails,
    CommitMultipartUploadPartDetails,
    CreateBucketDetails,
    CreateMultipartUploadDetails,
    UpdateBucketDetails,
)

from vdimport_local.emulator.client import EmulatorHandle


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


# --- namespace and buckets ---------------------------------------------------------------------
def test_namespace_and_its_metadata(emu: EmulatorHandle, osc: ObjectStorageClient) -> None:
    namespace = osc.get_namespace(compartment_id=emu.tenancy).data
    assert namespace == emu.admin("GET", "health")["namespace"]
    meta = osc.get_namespace_metadata(namespace).data
    assert (meta.namespace, meta.default_s3_compartment_id) == (namespace, emu.tenancy)
    err = error_of(osc.get_namespace_metadata, "someoneelse")
    assert (err.status, err.code) == (404, "NamespaceNotFound")
    err = error_of(osc.list_objects, "someoneelse", "any-bucket")
    assert err.status == 404


def test_bucket_create_get_update_list_delete(emu: EmulatorHandle, osc: ObjectStorageClient, ns: str) -> None:
    compartment = f"ocid1.compartment.oc1..test{uuid.uuid4().hex}"
    names = sorted(f"bkt-{uuid.uuid4().hex[:8]}" for _ in range(3))
    for name in names:
        created = osc.create_bucket(ns, CreateBucketDetails(name=name, compartment_id=compartment, freeform_tags={"k": "v"}))
        assert created.status == 200
        assert created.data.name == name and created.data.id.startswith("ocid1.bucket.")
        assert created.data.object_events_enabled is False
        assert created.headers["etag"] == created.data.etag
    got = osc.get_bucket(ns, names[0])
    assert got.data.compartment_id == compartment and got.data.freeform_tags == {"k": "v"}
    assert osc.head_bucket(ns, names[0]).headers["etag"] == got.data.etag

    err = error_of(osc.create_bucket, ns, CreateBucketDetails(name=names[0], compartment_id=compartment))
    assert (err.status, err.code) == (409, "BucketAlreadyExists")
    err = error_of(osc.create_bucket, ns, CreateBucketDetails(name="bad/name", compartment_id=compartment))
    assert err.status == 400

    updated = osc.update_bucket(ns, names[0], UpdateBucketDetails(object_events_enabled=True))
    assert updated.data.object_events_enabled is True
    assert updated.data.etag != got.data.etag
    assert osc.get_bucket(ns, names[0]).data.object_events_enabled is True

    first = osc.list_buckets(ns, compartment, limit=2)
    assert [b.name for b in first.data] == names[:2]
    assert first.next_page
    second = osc.list_buckets(ns, compartment, limit=2, page=first.next_page)
    assert [b.name for b in second.data] == names[2:]
    assert second.next_page is None
    everything = oci.pagination.list_call_get_all_results(osc.list_buckets, ns, compartment, limit=1).data
    assert [b.name for b in everything] == names

    osc.put_object(ns, names[0], "keep", b"x")
    err = error_of(osc.delete_bucket, ns, names[0])
    assert (err.status, err.code) == (409, "BucketNotEmpty")
    osc.delete_object(ns, names[0], "keep")
    for name in names:
        assert osc.delete_bucket(ns, name).status == 204
    err = error_of(osc.get_bucket, ns, names[0])
    assert (err.status, err.code) == (404, "BucketNotFound")
    assert osc.list_buckets(ns, compartment).data == []


def test_bucket_approximate_count_and_size(osc: ObjectStorageClient, ns: str, bucket: str) -> None:
    osc.put_object(ns, bucket, "a", b"12345")
    osc.put_object(ns, bucket, "b", b"678")
    data = osc.get_bucket(ns, bucket, fields=["approximateCount", "approximateSize"]).data
    assert (data.approximate_count, data.approximate_size) == (2, 8)


# --- objects -------------------------------------------------------------------------------------
def test_put_get_head_round_trip_with_metadata(osc: ObjectStorageClient, ns: str, bucket: str) -> None:
    body = os.urandom(70_000)
    put = osc.put_object(
        ns, bucket, "dir/disk.qcow2", body, opc_meta={"ad_number": "2", "tags": '{"a":"b"}'}, content_type="application/x-qemu"
    )
    assert put.status == 200
    assert put.headers["opc-content-md5"] == md5_b64(body)
    uuid.UUID(put.headers["etag"])  # OCI object etags are UUIDs
    assert put.headers["last-modified"]

    head = osc.head_object(ns, bucket, "dir/disk.qcow2")
    assert head.status == 200
    assert int(head.headers["content-length"]) == len(body)
    assert head.headers["etag"] == put.headers["etag"]
    assert head.headers["content-md5"] == md5_b64(body)
    assert head.headers["content-type"] == "application/x-qemu"
    assert head.headers["opc-meta-ad_number"] == "2"
    assert head.headers["opc-meta-tags"] == '{"a":"b"}'
    assert head.headers["last-modified"] == put.headers["last-modified"]
    assert "opc-multipart-md5" not in head.headers

    got = osc.get_object(ns, bucket, "dir/disk.qcow2")
    assert got.status == 200
    assert got.data.content == body
    assert got.headers["content-md5"] == md5_b64(body)
    assert got.headers["opc-meta-ad_number"] == "2"

    again = osc.put_object(ns, bucket, "dir/disk.qcow2", b"new content")
    assert again.headers["etag"] != put.headers["etag"]
    assert osc.get_object(ns, bucket, "dir/disk.qcow2").data.content == b"new content"
    assert "opc-meta-ad_number" not in osc.head_object(ns, bucket, "dir/disk.qcow2").headers

    err = error_of(osc.get_object, ns, bucket, "missing")
    assert (err.status, err.code) == (404, "ObjectNotFound")
    assert error_of(osc.head_object, ns, bucket, "missing").status == 404


def test_range_reads_and_unsatisfiable_range(osc: ObjectStorageClient, ns: str, bucket: str) -> None:
    body = bytes(range(256)) * 40  # 10240 bytes
    osc.put_object(ns, bucket, "r", body)
    cases = {
        "bytes=0-9": body[:10],
        "bytes=100-199": body[100:200],
        "bytes=10000-": body[10000:],
        "bytes=-16": body[-16:],
        "bytes=10230-99999": body[10230:],
    }
    for spec, expected in cases.items():
        got = osc.get_object(ns, bucket, "r", range=spec)
        assert got.status == 206, spec
        assert got.data.content == expected, spec
        first = len(body) - len(expected) if spec.startswith("bytes=-") else int(spec[6:].split("-")[0])
        assert got.headers["content-range"] == f"bytes {first}-{first + len(expected) - 1}/{len(body)}"
        assert int(got.headers["content-length"]) == len(expected)
        assert "content-md5" not in got.headers  # no whole-object checksum on a part
    err = error_of(osc.get_object, ns, bucket, "r", range=f"bytes={len(body)}-")
    assert (err.status, err.code) == (416, "InvalidRange")
    assert err.headers["content-range"] == f"bytes */{len(body)}"
    osc.put_object(ns, bucket, "empty", b"")
    assert error_of(osc.get_object, ns, bucket, "empty", range="bytes=0-").status == 416
    assert osc.get_object(ns, bucket, "empty").data.content == b""


def test_content_md5_mismatch_is_rejected_and_stores_nothing(osc: ObjectStorageClient, ns: str, bucket: str) -> None:
    err = error_of(osc.put_object, ns, bucket, "bad", b"payload", content_md5=md5_b64(b"other"))
    assert (err.status, err.code) == (400, "UnmatchedContentMD5")
    assert md5_b64(b"payload") in err.message
    assert error_of(osc.head_object, ns, bucket, "bad").status == 404
    ok = osc.put_object(ns, bucket, "good", b"payload", content_md5=md5_b64(b"payload"))
    assert ok.headers["opc-content-md5"] == md5_b64(b"payload")


def test_conditional_writes_and_reads(osc: ObjectStorageClient, ns: str, bucket: str) -> None:
    first = osc.put_object(ns, bucket, "c", b"one", if_none_match="*")
    err = error_of(osc.put_object, ns, bucket, "c", b"two", if_none_match="*")
    assert (err.status, err.code) == (412, "IfNoneMatchFailed")
    err = error_of(osc.put_object, ns, bucket, "c", b"two", if_match=str(uuid.uuid4()))
    assert (err.status, err.code) == (412, "IfMatchFailed")
    second = osc.put_object(ns, bucket, "c", b"two", if_match=first.headers["etag"])
    assert osc.get_object(ns, bucket, "c").data.content == b"two"
    assert error_of(osc.get_object, ns, bucket, "c", if_none_match=second.headers["etag"]).status == 304  # the SDK raises on 304
    err = error_of(osc.delete_object, ns, bucket, "c", if_match=first.headers["etag"])
    assert err.status == 412
    assert osc.delete_object(ns, bucket, "c", if_match=second.headers["etag"]).status == 204


def test_list_objects_pages_prefixes_and_fields(osc: ObjectStorageClient, ns: str, bucket: str) -> None:
    names = ["a.txt", "b/1", "b/2", "b/3", "c/x/y", "d.txt", "e.txt"]
    for name in reversed(names):
        osc.put_object(ns, bucket, name, name.encode())
    listed = osc.list_objects(ns, bucket).data
    assert [o.name for o in listed.objects] == names
    assert listed.objects[0].size is None  # only the name unless fields asks for more
    assert listed.next_start_with is None

    detailed = osc.list_objects(ns, bucket, fields="name,size,md5,etag,timeCreated").data.objects
    assert [(o.size, o.md5) for o in detailed] == [(len(n), md5_b64(n.encode())) for n in names]
    assert all(o.etag and o.time_created for o in detailed)

    seen, start, pages = [], None, 0
    while True:
        chunk = osc.list_objects(ns, bucket, limit=3, start=start).data
        seen += [o.name for o in chunk.objects]
        pages += 1
        if not chunk.next_start_with:
            break
        start = chunk.next_start_with
    assert seen == names and pages == 3
    assert [o.name for o in oci.pagination.list_call_get_all_results(osc.list_objects, ns, bucket, limit=2).data.objects] == names

    assert [o.name for o in osc.list_objects(ns, bucket, prefix="b/").data.objects] == ["b/1", "b/2", "b/3"]
    assert [o.name for o in osc.list_objects(ns, bucket, start="b/2", end="d.txt").data.objects] == ["b/2", "b/3", "c/x/y"]
    assert [o.name for o in osc.list_objects(ns, bucket, start_after="d.txt").data.objects] == ["e.txt"]
    grouped = osc.list_objects(ns, bucket, delimiter="/").data
    assert [o.name for o in grouped.objects] == ["a.txt", "d.txt", "e.txt"]
    assert grouped.prefixes == ["b/", "c/"]
    first = osc.list_objects(ns, bucket, delimiter="/", limit=2).data
    assert ([o.name for o in first.objects], first.prefixes, first.next_start_with) == (["a.txt"], ["b/"], "c/x/y")
    assert error_of(osc.list_objects, ns, bucket, limit=5000).status == 400


def test_delete_object(osc: ObjectStorageClient, ns: str, bucket: str) -> None:
    osc.put_object(ns, bucket, "gone", b"x")
    assert osc.delete_object(ns, bucket, "gone").status == 204
    assert error_of(osc.get_object, ns, bucket, "gone").code == "ObjectNotFound"
    assert error_of(osc.delete_object, ns, bucket, "gone").status == 404
    assert osc.list_objects(ns, bucket).data.objects == []


def test_hostile_object_names_round_trip_and_nothing_runs(osc: ObjectStorageClient, ns: str, bucket: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    names = [
        'it\'s "quoted" and spaced',
        f"$(touch {marker}1)",
        f"`touch {marker}2`",
        f"semi; touch {marker}3 && echo",
        "line\nbreak",
        "unicodé/日本語/🙂.qcow2",
        "percent%20and?query#hash&amp=1",
        "back\\slash/trailing/",
        "/leading slash",
    ]
    for i, name in enumerate(names):
        assert osc.put_object(ns, bucket, name, f"body {i}".encode()).status == 200
    listed = [o.name for o in oci.pagination.list_call_get_all_results(osc.list_objects, ns, bucket).data.objects]
    assert sorted(listed) == sorted(names)
    for i, name in enumerate(names):
        assert osc.get_object(ns, bucket, name).data.content == f"body {i}".encode(), name
        assert int(osc.head_object(ns, bucket, name).headers["content-length"]) == len(f"body {i}")
    for name in names:
        assert osc.delete_object(ns, bucket, name).status == 204
    assert not list(tmp_path.glob("pwned*"))


# --- multipart -------------------------------------------------------------------------------------
def test_upload_manager_multipart_byte_exact(emu: EmulatorHandle, osc: ObjectStorageClient, ns: str, bucket: str, tmp_path: Path) -> None:
    part_size = 1024 * 1024
    data = os.urandom(3 * part_size + 12345)
    source = tmp_path / "disk.raw"
    source.write_bytes(data)
    before = len(emu.calls("UploadPart"))
    manager = UploadManager(osc, allow_parallel_uploads=True, parallel_process_count=3)
    response = manager.upload_file(ns, bucket, "disk.raw", str(source), part_size=part_size, metadata={"ad_number": "3"})
    assert response.status == 200
    assert len(emu.calls("UploadPart")) - before == 4

    parts = [data[i : i + part_size] for i in range(0, len(data), part_size)]
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).digest()
    expected = f"{base64.b64encode(digest).decode()}-{len(parts)}"
    assert response.headers["opc-multipart-md5"] == expected

    head = osc.head_object(ns, bucket, "disk.raw")
    assert int(head.headers["content-length"]) == len(data)
    assert head.headers["opc-multipart-md5"] == expected
    assert "content-md5" not in head.headers
    assert head.headers["opc-meta-ad_number"] == "3"
    assert head.headers["etag"] == response.headers["etag"]
    assert osc.get_object(ns, bucket, "disk.raw").data.content == data
    assert (
        osc.get_object(ns, bucket, "disk.raw", range=f"bytes={part_size - 5}-{part_size + 4}").data.content
        == data[part_size - 5 : part_size + 5]
    )
    assert osc.list_multipart_uploads(ns, bucket).data == []


def test_multipart_low_level_checks_and_abort(osc: ObjectStorageClient, ns: str, bucket: str) -> None:
    upload = osc.create_multipart_upload(ns, bucket, CreateMultipartUploadDetails(object="parts.bin", metadata={"opc-meta-x": "1"})).data
    assert (upload.bucket, upload.object, upload.namespace) == (bucket, "parts.bin", ns)
    uid = upload.upload_id
    second = osc.upload_part(ns, bucket, "parts.bin", uid, 2, b"BBBB")
    first = osc.upload_part(ns, bucket, "parts.bin", uid, 1, b"AAA", content_md5=md5_b64(b"AAA"))
    assert first.headers["opc-content-md5"] == md5_b64(b"AAA")
    assert error_of(osc.upload_part, ns, bucket, "parts.bin", uid, 0, b"x").status == 400
    assert error_of(osc.upload_part, ns, bucket, "parts.bin", uid, 10001, b"x").status == 400
    assert error_of(osc.upload_part, ns, bucket, "parts.bin", uid, 3, b"x", content_md5=md5_b64(b"y")).code == "UnmatchedContentMD5"
    assert error_of(osc.upload_part, ns, bucket, "other-name", uid, 1, b"x").status == 404

    parts = osc.list_multipart_upload_parts(ns, bucket, "parts.bin", uid).data
    assert [(p.part_number, p.size, p.etag) for p in parts] == [(1, 3, first.headers["etag"]), (2, 4, second.headers["etag"])]
    assert [u.upload_id for u in osc.list_multipart_uploads(ns, bucket).data] == [uid]

    bad = CommitMultipartUploadDetails(parts_to_commit=[CommitMultipartUploadPartDetails(part_num=1, etag=str(uuid.uuid4()))])
    assert error_of(osc.commit_multipart_upload, ns, bucket, "parts.bin", uid, bad).status == 400
    missing = CommitMultipartUploadDetails(parts_to_commit=[CommitMultipartUploadPartDetails(part_num=5, etag=first.headers["etag"])])
    assert error_of(osc.commit_multipart_upload, ns, bucket, "parts.bin", uid, missing).status == 400
    assert error_of(osc.delete_bucket, ns, bucket).code == "BucketNotEmpty"

    assert osc.abort_multipart_upload(ns, bucket, "parts.bin", uid).status == 204
    assert osc.list_multipart_uploads(ns, bucket).data == []
    assert error_of(osc.list_multipart_upload_parts, ns, bucket, "parts.bin", uid).status == 404
    assert error_of(osc.upload_part, ns, bucket, "parts.bin", uid, 1, b"x").status == 404
    assert error_of(osc.head_object, ns, bucket, "parts.bin").status == 404

    again = osc.create_multipart_upload(ns, bucket, CreateMultipartUploadDetails(object="parts.bin", metadata={"opc-meta-x": "1"})).data
    tags = [
        osc.upload_part(ns, bucket, "parts.bin", again.upload_id, n, body).headers["etag"]
        for n, body in ((1, b"AAA"), (2, b"BBBB"), (3, b"CC"))
    ]
    commit = CommitMultipartUploadDetails(
        parts_to_commit=[CommitMultipartUploadPartDetails(part_num=n, etag=tags[n - 1]) for n in (3, 1)], parts_to_exclude=[2]
    )
    done = osc.commit_multipart_upload(ns, bucket, "parts.bin", again.upload_id, commit)
    assert done.status == 200 and done.headers["opc-multipart-md5"].endswith("-2")
    got = osc.get_object(ns, bucket, "parts.bin")
    assert got.data.content == b"AAACC"
    assert got.headers["opc-meta-x"] == "1"


# --- the CLI ------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("oci") is None, reason="oci CLI not installed")  # tests/conftest.py puts .venv-cli on PATH
def test_cli_object_put_and_get(emu: EmulatorHandle, osc: ObjectStorageClient, ns: str, bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "in.vmdk"
    source.write_bytes(os.urandom(200_000))
    base = ["oci", "--config-file", str(emu.config_path), "--endpoint", emu.endpoint, "os", "object"]
    env = dict(os.environ, SUPPRESS_LABEL_WARNING="True", OCI_CLI_SUPPRESS_FILE_PERMISSIONS_WARNING="True")
    put = subprocess.run(
        [*base, "put", "-bn", bucket, "--name", "my disk.vmdk", "--file", str(source), "--metadata", '{"ad_number":"2"}'],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert put.returncode == 0, put.stderr
    head = osc.head_object(ns, bucket, "my disk.vmdk")
    assert head.headers["opc-meta-ad_number"] == "2"
    assert head.headers["content-md5"] == md5_b64(source.read_bytes())
    target = tmp_path / "out.vmdk"
    get = subprocess.run(
        [*base, "get", "-ns", ns, "-bn", bucket, "--name", "my disk.vmdk", "--file", str(target)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert get.returncode == 0, get.stderr
    assert target.read_bytes() == source.read_bytes()
