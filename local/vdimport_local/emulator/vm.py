"""Worker VMs: run Run Command scripts on this machine (to be written)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import Emulator


class WorkerVMs:
    def __init__(self, emulator: Emulator):
        self.emulator = emulator

    def stop(self) -> None:
        pass
