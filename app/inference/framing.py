"""Frames over a stream socket: a 4-byte big-endian length, then the payload.

Both ends are ours: the event loop reads and writes with asyncio streams (never blocking),
a worker or decoder process with a plain blocking socket.
"""

from __future__ import annotations

import asyncio
import socket
import struct

HEADER = struct.Struct("!I")
# The largest frame either side accepts: a request of many 10 MiB uploads stays far below.
MAX_FRAME = 1 << 30


class FrameError(ConnectionError):
    """The other end sent something that is not a frame: the connection is unusable."""


# Room in the kernel for a burst of requests (a few hundred small uploads) while the worker
# is busy with a forward pass: it then reads them all at once, into the next pass.
SOCKET_BUFFER_BYTES = 1 << 20


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair of stream sockets with room for bursts: (ours, theirs)."""
    pair = socket.socketpair()
    for sock in pair:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
    return pair


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """The next frame's payload; asyncio.IncompleteReadError when the other end has gone."""
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    if size > MAX_FRAME:
        raise FrameError(f"a frame of {size} bytes")
    return await reader.readexactly(size)


class Channel:
    """The blocking end, in a worker or decoder: send frames, receive them with a timeout."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()

    def send(self, payload: bytes) -> None:
        self.sock.sendall(frame(payload))

    def receive(self, timeout: float | None) -> bytes | None:
        """The next frame, or None if none is complete within ``timeout`` (0: only what is
        here already); EOFError once the other end has closed."""
        while (payload := self._take()) is None:
            self.sock.settimeout(timeout)
            try:
                chunk = self.sock.recv(1 << 16)
            except (TimeoutError, BlockingIOError):
                return None
            if not chunk:
                raise EOFError("the other end closed the connection")
            self._buffer += chunk
        return payload

    def _take(self) -> bytes | None:
        if len(self._buffer) < HEADER.size:
            return None
        (size,) = HEADER.unpack_from(self._buffer)
        if size > MAX_FRAME:
            raise FrameError(f"a frame of {size} bytes")
        end = HEADER.size + size
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[HEADER.size : end])
        del self._buffer[:end]
        return payload

    def close(self) -> None:
        self.sock.close()
