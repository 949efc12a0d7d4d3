"""``vdimport-local``: run vdimport's local mode on one machine."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

DEFAULT_DATA = Path.home() / ".vdimport-local" / "emulator"


def _emulator(args: argparse.Namespace) -> int:
    from .emulator.app import Settings
    from .emulator.server import serve

    settings = Settings(
        lifecycle_seconds=args.lifecycle_seconds,
        device_mode=args.device_mode,
        duplicate_events_every=args.duplicate_events_every,
    )
    serve(Path(args.data), host=args.host, port=args.port, settings=settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vdimport-local", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    emu = sub.add_parser("emulator", help="run the OCI API emulator in the foreground")
    emu.add_argument("--port", type=int, default=0, help="TCP port (default: a free one, written to DATA/endpoint)")
    emu.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    emu.add_argument("--data", default=str(DEFAULT_DATA), help=f"state directory (default: {DEFAULT_DATA})")
    emu.add_argument("--lifecycle-seconds", type=float, default=0.0, help="base duration of lifecycle transitions")
    emu.add_argument("--device-mode", choices=("auto", "loop", "file"), default="auto", help="how worker VMs see volumes")
    emu.add_argument("--duplicate-events-every", type=int, default=0, help="deliver every Nth event twice (0: never)")
    emu.set_defaults(func=_emulator)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
