"""The HTTP front: a threaded server on one port for every service and the admin API."""

from __future__ import annotations

import logging
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

from .app import Emulator, Settings
from .routing import Request, Response

log = logging.getLogger("vdimport.emulator")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # otherwise keep-alive calls wait ~40 ms on delayed ACKs
    server_version = "vdimport-ocisim/1"
    emulator: Emulator

    def _serve(self) -> None:
        length_header = self.headers.get("Content-Length")
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        request = Request(
            self.command,
            self.path,
            dict(self.headers.items()),
            self.rfile,  # type: ignore[arg-type]  # a BufferedReader in practice
            int(length_header) if length_header else (None if chunked else 0),
            chunked=chunked,
        )
        response = self.emulator.handle(request)
        try:
            request.drain()
        except Exception:  # noqa: BLE001
            self.close_connection = True
        self._send(response, head=self.command == "HEAD")

    def _send(self, response: Response, head: bool) -> None:
        self.send_response(response.status)
        body = response.body
        headers = dict(response.headers)
        if isinstance(body, bytes):
            headers.setdefault("content-length", str(len(body)))
        elif response.length is not None:
            headers["content-length"] = str(response.length)
        else:
            headers["transfer-encoding"] = "chunked"
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if head or response.status in (204, 304):
            _close(body)
            return
        if isinstance(body, bytes):
            self.wfile.write(body)
            return
        chunked = "transfer-encoding" in headers
        try:
            for piece in body:
                if not piece:
                    continue
                if chunked:
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                else:
                    self.wfile.write(piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            _close(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)


def _close(body: object) -> None:
    close = getattr(body, "close", None)
    if callable(close):
        close()


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's listen backlog is 5: a burst of parallel ranged GETs (download.sh opens
    # STREAMS connections at once) overflowed it, and each dropped SYN cost the client a 1 s retry.
    request_queue_size = 128


def make_server(data_dir: Path, host: str = "127.0.0.1", port: int = 0, settings: Settings | None = None) -> EmulatorServer:
    emulator = Emulator(data_dir, settings)
    handler = type("Handler", (_Handler,), {"emulator": emulator})
    server = EmulatorServer((host, port), handler)
    bound_host, bound_port = server.server_address[:2]
    host_text = bound_host.decode() if isinstance(bound_host, bytes) else str(bound_host)
    emulator.endpoint = f"http://{host_text}:{bound_port}"
    server.emulator = emulator  # type: ignore[attr-defined]
    return server


def serve(data_dir: Path, host: str = "127.0.0.1", port: int = 0, settings: Settings | None = None) -> None:
    """Run in the foreground until SIGTERM/SIGINT; ``DATA/endpoint`` says where once listening."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    endpoint_file = data_dir / "endpoint"
    endpoint_file.unlink(missing_ok=True)
    server = make_server(data_dir, host, port, settings)
    emulator: Emulator = server.emulator  # type: ignore[attr-defined]
    if settings is not None:
        emulator.save_settings()
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    tmp = endpoint_file.with_suffix(".tmp")
    tmp.write_text(emulator.endpoint + "\n")
    tmp.replace(endpoint_file)
    log.info("OCI emulator listening on %s (data in %s, config %s)", emulator.endpoint, data_dir, emulator.credentials.config_path)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        emulator.shutdown()
        server.server_close()
        endpoint_file.unlink(missing_ok=True)
        log.info("OCI emulator stopped")
