"""Events: deliver OCI CloudEvents to subscribed endpoints (to be written)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Emulator


class EventBus:
    def __init__(self, emulator: Emulator):
        self.emulator = emulator

    def emit(self, event: dict[str, Any]) -> None:
        pass

    def stop(self) -> None:
        pass
