"""HTTP/1.1 over a raw socket: requests built from bytes, sent in pieces, and the first answer read.

A client library sends well-formed requests; this sends whatever it is given (malformed
multipart, a Content-Length that lies, a chunked body that never ends) and stops sending
as soon as the server answers, as a server that refuses a body answers before its end.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

BOUNDARY = b"badinputboundary5b1e"
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY.decode()}"}
PIECE = 64 * 1024  # bytes per send: small enough to notice an early answer between sends


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes


def part(name: bytes | None, data: bytes, filename: bytes | None = b"upload.png") -> bytes:
    """One multipart part; ``filename`` None leaves it out (a plain form field)."""
    disposition = b'Content-Disposition: form-data; name="' + (name or b"") + b'"'
    if filename is not None:
        disposition += b'; filename="' + filename + b'"'
    return b"--" + BOUNDARY + b"\r\n" + disposition + b"\r\nContent-Type: image/png\r\n\r\n" + data + b"\r\n"


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


def head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: localhost", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def request(body: bytes, path: str = "/predict", headers: dict[str, str] | None = None) -> bytes:
    """A POST with a truthful Content-Length; multipart unless ``headers`` say otherwise."""
    fields = {**MULTIPART, **(headers or {}), "Content-Length": str(len(body))}
    return head(path, fields) + body


def chunked(body: Iterable[bytes], path: str = "/predict") -> Iterator[bytes]:
    """A chunked request: no Content-Length; ends only when ``body`` does."""
    yield head(path, {**MULTIPART, "Transfer-Encoding": "chunked"})
    for chunk in body:
        yield f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    yield b"0\r\n\r\n"


def filler(total: int) -> Iterator[bytes]:
    """``total`` bytes of a file's content, in pieces, never all in memory."""
    for start in range(0, total, PIECE):
        yield b"\x00" * min(PIECE, total - start)


def exchange(
    host: str, port: int, pieces: Iterable[bytes], pause_s: float = 0.0, timeout: float = 30.0
) -> Answer | None:
    """Send ``pieces`` (``pause_s`` apart) until they end or the server answers; read the answer.

    None when the connection closed without one, or none came within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # the server hung up mid-send; its answer may be waiting
            _send(sock, pieces, pause_s, deadline)
        try:
            return _read_answer(sock, deadline)
        except OSError:
            return None


def _send(sock: socket.socket, pieces: Iterable[bytes], pause_s: float, deadline: float) -> None:
    for index, piece in enumerate(pieces):
        if index and pause_s:
            time.sleep(pause_s)
        view = memoryview(piece)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            readable, writable, _ = select.select([sock], [sock], [], remaining)
            if readable:
                return  # an answer (or a hang-up) before the body ended
            if writable:
                view = view[sock.send(view[:PIECE]) :]


def _read_answer(sock: socket.socket, deadline: float) -> Answer | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = _recv(sock, deadline)
        if not chunk:
            return None
        data += chunk
    head_bytes, body = data.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = _recv(sock, deadline)
        if not chunk:
            break
        body += chunk
    return Answer(status=int(status_line.split()[1]), headers=headers, body=body[:length])


def _recv(sock: socket.socket, deadline: float) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return b""
    sock.settimeout(remaining)
    try:
        return sock.recv(65536)
    except TimeoutError:
        return b""
