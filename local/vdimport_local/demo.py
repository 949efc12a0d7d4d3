"""``make demo``: the whole pipeline on this machine, as a user runs it.

``vdimport-local up`` (emulator, Airflow, function), a realistic sample disk (GPT: ext4 with
files, xfs, vfat) as qcow2, ``vdimport-local import --wait`` with metadata ``ad_number=2``:
the upload's event reaches the function, the function triggers the DAG, Airflow runs every
step. Then it checks what a user would: the volume's bytes equal the image's, no worker VM,
attachment or PAR is left. The stack stays up for a look at the Airflow UI; ``--down``
stops it at the end (CI).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from .diskimages import Partition, build_disk, convert, raw_bytes, sample_files
from .importer import render_report, run_import
from .stack import LocalStack, StackError, UpOptions


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


def _checks(stack: LocalStack, image: Path, result: dict[str, object]) -> tuple[list[str], bool]:
    """The user's checks: bytes on the volume, nothing left running in the emulator."""
    emulator = stack.emulator()
    expected = raw_bytes(image, "qcow2")
    volume_path = result.get("volume_path")
    identical = False
    if isinstance(volume_path, str):
        with open(volume_path, "rb") as f:
            identical = f.read(len(expected)) == expected
    gone = ("TERMINATED", "DETACHED")
    alive = [r["id"] for kind in ("instance", "volumeattachment") for r in emulator.resources(kind) if r.get("lifecycleState") not in gone]
    pars = emulator.resources("par")
    lines = [
        f"bytes check   volume == qemu-img convert -O raw of the image: {'yes' if identical else 'NO'}",
        f"leftovers     {len(alive)} running worker VMs/attachments, {len(pars)} PARs",
    ]
    return lines, identical and not alive and not pars


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vdimport-demo", description=__doc__)
    parser.add_argument("--home", help="local stack home (default: $VDIMPORT_LOCAL_HOME or ~/.vdimport-local)")
    parser.add_argument("--down", action="store_true", help="stop the local stack at the end")
    args = parser.parse_args(argv)
    stack = LocalStack(Path(args.home) if args.home else None)
    try:
        state, _ = stack.up(UpOptions(runner=os.environ.get("VDIMPORT_LOCAL_RUNNER") or "auto"))
        print(f"==> Local stack up: Airflow UI {state['airflow_url']} (login {state['login']['username']} / {state['login']['password']})")
        runner = state.get("runner") or {"steps": "subprocess"}
        where = f"containers of {runner['image']}" if runner["steps"] == "container" else "subprocesses (make images for containers)"
        print(f"    steps run as {where}")
        with tempfile.TemporaryDirectory(prefix="vdimport-demo-") as tmp:
            print("==> Building a sample disk: GPT with ext4 (files), xfs and vfat partitions, as qcow2")
            image = build_sample(Path(tmp))
            print(f"    {image.name}: {image.stat().st_size / 1e6:.1f} MB")
            name = f"demo/sample-vm-disk-{time.strftime('%Y%m%d-%H%M%S')}.qcow2"
            result = run_import(
                stack, image, name=name, metadata={"ad_number": "2", "tags": '{"project": "demo"}'}, wait=True, log=sys.stdout
            )
            checks: list[str] = []
            ok = False
            if result["state"] == "success":
                checks, ok = _checks(stack, image, result)
            print(render_report(result, lambda: checks))
        if not args.down:
            print("\nThe stack is still up: open the Airflow UI above, try `vdimport-local status`, stop it with `vdimport-local down`.")
        return 0 if ok else 1
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.down:
            stack.down()


if __name__ == "__main__":
    sys.exit(main())
