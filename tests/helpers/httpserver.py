"""A small HTTP server on 127.0.0.1 for the download tests: serves files from memory, honours ``Range``, and can
cut a transfer short or answer with a web page. It runs in a thread of the test process and never leaves the
loopback interface."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Served:
    files: dict[str, bytes] = field(default_factory=dict)  # URL path -> body
    content_types: dict[str, str] = field(default_factory=dict)  # URL path -> Content-Type (default octet-stream)
    cuts: dict[str, int] = field(default_factory=dict)  # URL path -> bytes sent before the next response is cut off
    ranges: bool = True  # False: ignore Range and always send the whole file (status 200)
    trickle: dict[str, float] = field(default_factory=dict)  # URL path -> seconds of pause after each 64 KiB sent
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header) of every request
    base: str = ""

    def url(self, path: str) -> str:
        return self.base + path


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        served: Served = self.server.served  # type: ignore[attr-defined]
        path = self.path.split("?")[0]
        asked = self.headers.get("Range")
        served.requests.append((path, asked))
        data = served.files.get(path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", asked or "")
        if m and served.ranges:
            start = int(m.group(1))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", served.content_types.get(path, "application/octet-stream"))
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        cut = served.cuts.pop(path, None)
        body = body if cut is None else body[:cut]
        pause = served.trickle.get(path)
        try:
            for at in range(0, len(body), 1 << 16) if pause else [0]:
                self.wfile.write(body[at:at + (1 << 16)] if pause else body)
                self.wfile.flush()
                if pause:
                    time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):  # the client went away (killed, in the signal tests)
            pass
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve(files: dict[str, bytes]) -> Iterator[Served]:
    """Serve ``files`` (``{"w.bin": data}`` is served at ``/w.bin``) on 127.0.0.1 until the block ends."""
    served = Served({f"/{name}": data for name, data in files.items()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.served = served  # type: ignore[attr-defined]
    served.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def closed_port_url(path: str = "/w.bin") -> str:
    """A URL on 127.0.0.1 where nothing listens: what an offline machine sees (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
