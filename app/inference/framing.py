"""Frames over a stream socket: a 4-byte big-endian length, then the payload.

Both ends are ours: the event loop reads and writes through an asyncio protocol (never
blocking; each whole frame is handled in the loop's own callback, with no task to wake),
a worker or decoder process through a plain blocking socket.
"""

from __future__ import annotations

import asyncio
import select
import socket
import struct
from collections.abc import Callable

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


def _size(header: bytes | bytearray) -> int:
    """The payload size a frame's header announces; FrameError beyond MAX_FRAME."""
    (size,) = HEADER.unpack_from(header)
    if size > MAX_FRAME:
        raise FrameError(f"a frame of {size} bytes")
    return int(size)


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """The next frame's payload; asyncio.IncompleteReadError when the other end has gone."""
    return await reader.readexactly(_size(await reader.readexactly(HEADER.size)))


def _split(buffer: bytearray) -> bytes | None:
    """The first whole frame's payload, taken out of ``buffer``; None if none is whole yet."""
    if len(buffer) < HEADER.size:
        return None
    end = HEADER.size + _size(buffer)
    if len(buffer) < end:
        return None
    payload = bytes(buffer[HEADER.size : end])
    del buffer[:end]
    return payload


class FrameProtocol(asyncio.Protocol):
    """The event loop's end: ``on_frame`` gets each whole frame as it arrives; ``closed``
    is done once the other end has gone (or sent something that is not a frame)."""

    def __init__(self, on_frame: Callable[[bytes], None]) -> None:
        self.on_frame = on_frame
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            while (payload := _split(self._buffer)) is not None:
                self.on_frame(payload)
        except FrameError:
            assert self.transport is not None
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, payload: bytes) -> None:
        """Queue a frame; the transport writes it without blocking the loop."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(payload))

    @property
    def unsent_bytes(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Channel:
    """The blocking end, in a worker or decoder: send frames, receive them with a timeout."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(True)
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)
        self._buffer = bytearray()

    def send(self, payload: bytes) -> None:
        self.sock.sendall(frame(payload))

    def receive(self, timeout: float | None) -> bytes | None:
        """The next frame, or None if none is complete within ``timeout`` (0: only what is
        here already); EOFError once the other end has closed."""
        wait_ms = None if timeout is None else timeout * 1000
        while (payload := _split(self._buffer)) is None:
            if not self._poll.poll(wait_ms):
                return None
            chunk = self.sock.recv(1 << 16)  # readable: returns at once
            if not chunk:
                raise EOFError("the other end closed the connection")
            self._buffer += chunk
        return payload

    def close(self) -> None:
        self.sock.close()
