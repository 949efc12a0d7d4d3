"""Requests, responses and the route table each service module fills in.

Each service module owns a :class:`Service` with its OCI operations, declared the way
OCI's API reference lists them: method, path template, operation name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from .errors import OCIError, invalid

if TYPE_CHECKING:
    from .app import Emulator
    from .faults import FaultRule


class Request:
    """One HTTP request as a handler sees it. The body is read lazily so uploads can stream."""

    def __init__(
        self,
        method: str,
        raw_path: str,
        headers: dict[str, str],
        body_stream: IO[bytes] | None,
        content_length: int | None,
        chunked: bool = False,
    ):
        self.method = method.upper()
        self.raw_path = raw_path
        path, _, query = raw_path.partition("?")
        self.raw_target_path = path
        self.path = unquote(path)
        self.query = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        self.headers = {k.lower(): v for k, v in headers.items()}
        self._stream = body_stream
        self.content_length = content_length
        self._chunked = chunked
        self._body: bytes | None = None
        self.params: dict[str, str] = {}
        self.operation = ""
        self.fault: FaultRule | None = None  # a ``stall`` fault rule this call tripped
        self.emulator: Emulator

    # --- body -------------------------------------------------------------
    def iter_body(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream the body once, whether sent with Content-Length or chunked."""
        if self._body is not None:
            yield self._body
            return
        stream = self._stream
        if stream is None:
            return
        if self._chunked:
            while True:
                size_line = stream.readline().strip().split(b";")[0]
                size = int(size_line or b"0", 16)
                if size == 0:
                    while stream.readline().strip():
                        pass
                    break
                remaining = size
                while remaining:
                    piece = stream.read(min(remaining, chunk_size))
                    if not piece:
                        raise invalid("truncated chunked body")
                    remaining -= len(piece)
                    yield piece
                stream.readline()
        else:
            remaining = self.content_length or 0
            while remaining > 0:
                piece = stream.read(min(remaining, chunk_size))
                if not piece:
                    raise invalid("request body shorter than Content-Length")
                remaining -= len(piece)
                yield piece
        self._stream = None

    @property
    def body(self) -> bytes:
        if self._body is None:
            self._body = b"".join(self.iter_body())
        return self._body

    def json(self) -> dict[str, Any]:
        if not self.body:
            return {}
        try:
            value = json.loads(self.body)
        except ValueError as exc:
            raise invalid(f"request body is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise invalid("request body must be a JSON object")
        return value

    def drain(self) -> None:
        """Consume whatever the handler left unread, so keep-alive connections stay in sync."""
        for _ in self.iter_body():
            pass

    def drain_quietly(self) -> None:
        try:
            self.drain()
        except Exception:  # noqa: BLE001 - the connection is closed after an error anyway
            self._stream = None

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


@dataclass
class Response:
    status: int = 200
    body: bytes | Iterable[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)
    length: int | None = None  # for streamed bodies

    @classmethod
    def json(cls, value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        data = json.dumps(value).encode()
        hdrs = {"content-type": "application/json"}
        hdrs.update(headers or {})
        return cls(status=status, body=data, headers=hdrs)

    @classmethod
    def empty(cls, status: int = 204, headers: dict[str, str] | None = None) -> Response:
        return cls(status=status, body=b"", headers=dict(headers or {}))


Handler = Callable[[Request], Response]


@dataclass
class Route:
    method: str
    template: str
    operation: str
    handler: Handler
    pattern: re.Pattern[str]
    authenticated: bool = True
    streaming: bool = False  # handler streams a body and takes the store lock itself

    @property
    def is_admin(self) -> bool:
        return self.template.startswith("/_ocisim")


def _compile(template: str) -> re.Pattern[str]:
    """``/n/{namespaceName}/b/{bucketName}/o/{objectName+}``: ``+`` params may contain slashes."""
    out = ""
    for part in re.split(r"(\{[^}]+\})", template):
        if part.startswith("{"):
            name = part[1:-1]
            if name.endswith("+"):
                out += f"(?P<{name[:-1]}>.+)"
            else:
                out += f"(?P<{name}>[^/]+)"
        else:
            out += re.escape(part)
    return re.compile(f"^{out}/?$", re.DOTALL)  # object names may contain newlines


class Service:
    """A named group of operations (``compute``, ``objectstorage``, ...)."""

    def __init__(self, name: str):
        self.name = name
        self.routes: list[Route] = []

    def route(
        self, method: str, template: str, operation: str, authenticated: bool = True, streaming: bool = False
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append(Route(method, template, operation, handler, _compile(template), authenticated, streaming))
            return handler

        return register


def match(services: Iterable[Service], method: str, path: str) -> tuple[Route, dict[str, str]]:
    path_matched = False
    for service in services:
        for route in service.routes:
            found = route.pattern.match(path)
            if not found:
                continue
            path_matched = True
            if route.method == method:
                return route, found.groupdict()
    if path_matched:
        raise OCIError(405, "MethodNotAllowed", f"{method} is not allowed on {path}")
    raise OCIError(404, "NotAuthorizedOrNotFound", f"no such API: {method} {path}")


def page(items: list[Any], request: Request, default_limit: int = 100) -> tuple[list[Any], dict[str, str]]:
    """OCI list pagination: ``limit`` and an opaque ``page`` token, next one in ``opc-next-page``."""
    try:
        limit = int(request.query.get("limit") or default_limit)
        start = int(request.query.get("page") or 0)
    except ValueError:
        raise invalid("limit and page must be integers") from None
    if limit < 1 or limit > 1000:
        raise invalid("limit must be between 1 and 1000")
    chunk = items[start : start + limit]
    headers = {}
    if start + limit < len(items):
        headers["opc-next-page"] = str(start + limit)
    return chunk, headers
