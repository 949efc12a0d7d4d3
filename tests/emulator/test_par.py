"""Pre-authenticated requests: management through the SDK, the data path through the real curl."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import oci
import pytest
from emulator_helpers import make_par
from oci.object_storage import ObjectStorageClient

from vdimport_local.emulator.client import EmulatorHandle

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


def curl(*args: str) -> tuple[int, bytes, dict[str, str]]:
    """Run curl; return the HTTP status, the body and the response headers."""
    result = subprocess.run(["curl", "-sS", "-i", *args], capture_output=True, timeout=30, check=True)
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 100"):
        head, _, body = body.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, body, headers


def test_object_read_par_serves_curl_with_ranges(emu: EmulatorHandle, osc: ObjectStorageClient, ns: str, bucket: str) -> None:
    data = os.urandom(50_000)
    osc.put_object(ns, bucket, "images/disk.qcow2", data, opc_meta={"ad_number": "1"})
    par = make_par(osc, ns, bucket, "ObjectRead", "images/disk.qcow2")
    assert re.fullmatch(rf"/p/[A-Za-z0-9_-]{{20,}}/n/{ns}/b/{bucket}/o/images/disk\.qcow2", par.access_uri)
    assert par.full_path == emu.endpoint + par.access_uri
    assert par.access_type == "ObjectRead" and par.object_name == "images/disk.qcow2"

    status, body, headers = curl(par.full_path)
    assert (status, body) == (200, data)
    assert headers["content-length"] == str(len(data))
    assert headers["opc-meta-ad_number"] == "1"
    for spec, expected in (("0-9", data[:10]), ("49990-", data[49990:]), ("-7", data[-7:]), ("1000-1999", data[1000:2000])):
        status, body, headers = curl("-r", spec, par.full_path)
        assert status == 206, spec
        assert body == expected, spec
        assert headers["content-range"].endswith(f"/{len(data)}")
    status, _, _ = curl("-r", f"{len(data)}-", par.full_path)
    assert status == 416
    status, body, headers = curl("-I", par.full_path)
    assert (status, headers["content-length"], headers["etag"]) == (
        200,
        str(len(data)),
        osc.head_object(ns, bucket, "images/disk.qcow2").headers["etag"],
    )

    # the token is bound to its object and to reading
    other = par.full_path.replace("disk.qcow2", "other.qcow2")
    osc.put_object(ns, bucket, "images/other.qcow2", b"secret")
    assert curl(other)[0] == 404
    status, _, _ = curl("-X", "PUT", "--data-binary", "overwrite", par.full_path)
    assert status == 404
    assert osc.get_object(ns, bucket, "images/disk.qcow2").data.content == data
    assert curl(par.full_path.replace("/p/", "/p/x"))[0] == 404


def test_par_expires(osc: ObjectStorageClient, ns: str, bucket: str) -> None:
    osc.put_object(ns, bucket, "short", b"soon gone")
    with pytest.raises(oci.exceptions.ServiceError) as err:
        make_par(osc, ns, bucket, "ObjectRead", "short", seconds=-5)
    assert err.value.status == 400
    par = make_par(osc, ns, bucket, "ObjectRead", "short", seconds=0.8)
    assert curl(par.full_path)[:2] == (200, b"soon gone")
    deadline = par.time_expires.timestamp() + 0.1
    time.sleep(max(0.0, deadline - time.time()))
    status, body, _ = curl(par.full_path)
    assert status == 404
    assert json.loads(body)["code"] == "NotAuthorizedOrNotFound"


def test_deleted_par_is_a_404(osc: ObjectStorageClient, ns: str, bucket: str) -> None:
    osc.put_object(ns, bucket, "obj", b"data")
    par = make_par(osc, ns, bucket, "ObjectRead", "obj")
    assert osc.get_preauthenticated_request(ns, bucket, par.id).data.name == par.name
    assert curl(par.full_path)[0] == 200
    assert osc.delete_preauthenticated_request(ns, bucket, par.id).status == 204
    assert curl(par.full_path)[0] == 404
    with pytest.raises(oci.exceptions.ServiceError) as err:
        osc.get_preauthenticated_request(ns, bucket, par.id)
    assert err.value.status == 404


def test_write_par_accepts_put_and_refuses_get(osc: ObjectStorageClient, ns: str, bucket: str, tmp_path: Path) -> None:
    par = make_par(osc, ns, bucket, "ObjectWrite", "upload.vhd")
    source = tmp_path / "upload.vhd"
    source.write_bytes(os.urandom(30_000))
    status, _, headers = curl("-T", str(source), "-H", "opc-meta-ad_number: 2", par.full_path)
    assert status == 200
    got = osc.get_object(ns, bucket, "upload.vhd")
    assert got.data.content == source.read_bytes()
    assert got.headers["etag"] == headers["etag"]
    assert got.headers["opc-meta-ad_number"] == "2"
    assert curl(par.full_path)[0] == 404


def test_bucket_par_reads_any_object_and_lists(emu: EmulatorHandle, osc: ObjectStorageClient, ns: str, bucket: str) -> None:
    for name in ("a", "dir/b"):
        osc.put_object(ns, bucket, name, name.encode())
    par = make_par(osc, ns, bucket, "AnyObjectRead", bucket_listing_action="ListObjects")
    assert par.access_uri.endswith(f"/n/{ns}/b/{bucket}/o/")
    assert par.object_name is None
    assert curl(par.full_path + "dir/b")[:2] == (200, b"dir/b")
    status, body, _ = curl(par.full_path)
    assert status == 200
    assert [o["name"] for o in json.loads(body)["objects"]] == ["a", "dir/b"]
    denied = make_par(osc, ns, bucket, "AnyObjectRead")
    assert curl(denied.full_path)[0] == 404
    assert curl(denied.full_path + "a")[:2] == (200, b"a")
    write_only = make_par(osc, ns, bucket, "AnyObjectWrite", bucket_listing_action="ListObjects")
    assert curl(write_only.full_path)[0] == 404  # listing is reading


def test_par_to_an_awkward_object_name(osc: ObjectStorageClient, ns: str, bucket: str) -> None:
    name = 'my "disk" $(id) `x`\n#1 ü.qcow2'
    osc.put_object(ns, bucket, name, b"awkward")
    par = make_par(osc, ns, bucket, "ObjectRead", name)
    assert par.object_name == name
    assert curl(par.full_path)[:2] == (200, b"awkward")


def test_list_pars_pages_and_filters(osc: ObjectStorageClient, ns: str, bucket: str) -> None:
    made = [make_par(osc, ns, bucket, "ObjectRead", f"obj-{i}").id for i in range(3)]
    made.append(make_par(osc, ns, bucket, "ObjectRead", "zzz").id)
    first = osc.list_preauthenticated_requests(ns, bucket, limit=2)
    assert len(first.data) == 2 and first.next_page
    everything = oci.pagination.list_call_get_all_results(osc.list_preauthenticated_requests, ns, bucket, limit=2).data
    assert sorted(p.id for p in everything) == sorted(made)
    assert all(p.time_expires and p.access_type == "ObjectRead" for p in everything)
    filtered = osc.list_preauthenticated_requests(ns, bucket, object_name_prefix="obj-").data
    assert sorted(p.object_name for p in filtered) == ["obj-0", "obj-1", "obj-2"]


def test_par_validation_and_bucket_deletion(osc: ObjectStorageClient, ns: str, bucket: str) -> None:
    with pytest.raises(oci.exceptions.ServiceError) as err:
        make_par(osc, ns, bucket, "ObjectRead")  # an object PAR needs its object
    assert err.value.status == 400
    par = make_par(osc, ns, bucket, "ObjectRead", "x")
    with pytest.raises(oci.exceptions.ServiceError) as err:
        osc.delete_bucket(ns, bucket)
    assert err.value.status == 409
    osc.delete_preauthenticated_request(ns, bucket, par.id)
