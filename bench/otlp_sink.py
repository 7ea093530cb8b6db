"""An OTLP/HTTP endpoint that accepts every export and drops it: what tracing costs the
service, without a collector's own work on the same cores.

    python -m bench.otlp_sink --port 4318
"""

from __future__ import annotations

import argparse
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        server: SinkServer = self.server  # type: ignore[assignment]
        with server.lock:
            server.exports.append((self.path, self.headers.get("content-type", ""), len(body)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per export would be noise


class SinkServer(ThreadingHTTPServer):
    """Records (path, content type, bytes) of each export it drops."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Sink)
        self.lock = threading.Lock()
        self.exports: list[tuple[str, str, int]] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Accept and drop OTLP/HTTP exports")
    parser.add_argument("--port", type=int, default=4318)
    SinkServer(parser.parse_args(argv).port).serve_forever()


if __name__ == "__main__":
    main()
