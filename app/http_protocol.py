"""uvicorn's C-parser (httptools) HTTP protocol, with bounds on the request head.

uvicorn's httptools protocol buffers a request line and headers of any size for as long as
they take, and starts no timer on a new connection: one client could hold gigabytes, or
thousands of connections that trickle a header byte a second. Here the head (request line
and headers) of each request must fit in ``MAX_HEAD_BYTES`` (else 431, and the connection
closes) and arrive within ``HEAD_TIMEOUT_S`` of the connection opening or of its first byte
(else 408, and the connection closes). Bodies keep their own limits (``app.upload_limit``).

``fashion-serve`` runs uvicorn with this protocol; with plain uvicorn, pass
``--http app.http_protocol:BoundedHttpToolsProtocol``.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

logger = logging.getLogger("app")

# Request line and headers together: browsers send a few KiB; nginx's default allows 32 KiB.
MAX_HEAD_BYTES = 64 * 1024
# Long enough for any real client on a slow link; short enough that a trickling one goes.
HEAD_TIMEOUT_S = 10.0


TOO_LARGE = f"request line and headers larger than {MAX_HEAD_BYTES} bytes"


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop the parse (httptools reports it as a parse error)."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that refuses a request head over ``MAX_HEAD_BYTES`` or slower
    than ``HEAD_TIMEOUT_S``."""

    _in_head = True  # bytes arriving now belong to a request line or headers
    _head_bytes = 0  # received while the head is incomplete
    _parsed_bytes = 0  # of the current head, as parsed
    _too_large = False
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Two counts: the bytes of a head still incomplete (one that never ends), and the
        # parsed parts of each head (a whole one can arrive in a single read, body and all).
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._refuse(431, TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._parsed_bytes = True, 0
        if self._head_timer is None:
            self._start_head_timer()

    # The parser's callbacks: raising here stops the parse, and the error reaches data_received.
    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._parsed_bytes += size
        if self._parsed_bytes > MAX_HEAD_BYTES:
            self._too_large = True
            raise _HeadTooLarge

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers 400 to any parse error, ours (a callback that raised) included.
        if self._too_large:
            self._refuse(431, TOO_LARGE)
        else:
            super().send_400_response(msg)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # What comes next on this connection is the next request's head; until its first
        # byte, uvicorn's keep-alive timeout covers the idle connection.
        self._in_head = True

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._head_bytes == 0:
            self.transport.close()  # nothing sent at all: nothing to answer (as nginx does)
            return
        self._refuse(408, f"request head not received within {HEAD_TIMEOUT_S:g} s")

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with ``message`` and close: the connection is in an unknown state."""
        self._stop_head_timer()
        logger.info("closed a connection from %s: %s", _peer(self.client), message)
        body = message.encode()
        self.transport.write(
            STATUS_LINE[status]
            + b"content-type: text/plain; charset=utf-8\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\nconnection: close\r\n\r\n"
            + body
        )
        self.transport.close()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown peer"
