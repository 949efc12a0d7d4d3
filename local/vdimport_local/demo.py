"""``make demo``: import a realistic sample disk end to end in local mode and print the report.

Builds a partitioned qcow2 (ext4 with files, xfs, vfat), starts the OCI emulator, uploads
the image to a bucket with ``oci os object put``'s SDK equivalent, runs every import step
exactly as the DAG's pods would, then checks what a user would: the volume's bytes equal
the image, the worker VM is terminated, no pre-authenticated request is left.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import oci

from .diskimages import Partition, build_disk, convert, raw_bytes, sample_files
from .emulator.client import EmulatorHandle
from .pipeline import run_import

BUCKET = "vdimport-images"


def build_sample(workdir: Path) -> Path:
    raw = build_disk(
        workdir / "sample.raw",
        [
            Partition("ext4", 256, sample_files()),
            Partition("xfs", 320),
            Partition("vfat", 64, {"README.TXT": b"vdimport sample disk\r\n"}),
        ],
        table="gpt",
    )
    image = convert(raw, "qcow2", workdir / "sample-vm-disk.qcow2")
    raw.unlink()
    return image


def upload(emulator: EmulatorHandle, image: Path, metadata: dict[str, str]) -> tuple[str, str]:
    storage = emulator.client(oci.object_storage.ObjectStorageClient)
    namespace = storage.get_namespace().data
    details = oci.object_storage.models.CreateBucketDetails(name=BUCKET, compartment_id=emulator.tenancy, object_events_enabled=True)
    try:
        storage.create_bucket(namespace, details)
    except oci.exceptions.ServiceError as exc:
        if exc.status != 409:
            raise
    oci.object_storage.UploadManager(storage).upload_file(namespace, BUCKET, image.name, str(image), metadata=metadata)
    return namespace, image.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vdimport-demo", description=__doc__)
    parser.add_argument("--workdir", default=".vdimport-local/demo", help="where the sample and the emulator's state go")
    parser.add_argument("--lifecycle-seconds", type=float, default=1.0, help="how long emulated OCI transitions take")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)

    print(f"==> Building a sample disk (GPT: ext4 with files, xfs, vfat) in {workdir}")
    image = build_sample(workdir)
    print(f"    {image.name}: {image.stat().st_size / 1e6:.1f} MB qcow2")
    print("==> Starting the OCI emulator")
    emulator = EmulatorHandle.start(workdir / "emulator", "--lifecycle-seconds", str(args.lifecycle_seconds))
    try:
        print(f"    {emulator.endpoint} (config {emulator.config_path})")
        namespace, name = upload(emulator, image, {"ad_number": "2", "tags": '{"project": "demo"}'})
        print(f"==> Uploaded oci://{BUCKET}@{namespace}/{name} with metadata ad_number=2")
        run_id = f"demo__{int(time.time())}"
        print(f"==> Importing (run {run_id})")
        request = {"namespace": namespace, "bucket": BUCKET, "object": name}
        outcome = run_import(emulator, run_id, request, on_output=lambda line: print("    " + line))
        if not outcome.succeeded:
            print(f"\nIMPORT FAILED at {outcome.failed_step}: {outcome.error}")
            return 1
        report = outcome.report or {}
        volume_path = Path(emulator.admin("GET", f"volumes/{report['volume_id']}")["path"])
        expected = raw_bytes(image, "qcow2")
        with open(volume_path, "rb") as f:
            identical = f.read(len(expected)) == expected
        leftovers = {
            kind: [r["id"] for r in emulator.resources(kind) if r.get("lifecycleState") not in ("TERMINATED", "DETACHED", None)]
            for kind in ("instance", "volumeattachment")
        }
        pars = emulator.resources("par")
        print("\n==================== vdimport report ====================")
        print(f"volume        {report['volume_name']}  ({report['volume_id']})")
        print(f"size          {report['volume_size_gb']} GB at {report['vpus_per_gb']} VPUs/GB in {report['availability_domain']}")
        src = report["source"]
        print(f"source        {src['format']} {src['object']!r}, {src['virtual_size']} bytes virtual, {src['allocated_size']} allocated")
        print(f"verify        {report['checks']['verify']}")
        for part in report["checks"]["fsck"] if isinstance(report["checks"]["fsck"], list) else []:
            print(f"fsck          partition {part['number']}: {part['fs']} {part['status']}")
        total = sum(s["seconds"] or 0 for s in report["steps"])
        print(f"steps         {len(report['steps'])} in {total:.1f} s")
        print(f"bytes check   volume == qemu-img convert -O raw of the image: {'yes' if identical else 'NO'}")
        alive = sum(len(v) for v in leftovers.values())
        print(f"leftovers     {alive} running instances/attachments, {len(pars)} PARs")
        print("==========================================================")
        return 0 if identical and not alive and not pars else 1
    finally:
        emulator.stop()


if __name__ == "__main__":
    sys.exit(main())
