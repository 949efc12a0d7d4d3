"""Fn entry point (``cmd: func.handler``): the logic lives in the ``vdimport_function`` package."""

import io
from typing import Any

from vdimport_function.handler import handler as _handler


def handler(ctx: Any, data: io.BytesIO | None = None) -> Any:
    return _handler(ctx, data)
