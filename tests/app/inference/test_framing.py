"""Frames between the server and its worker or decoders: whole, in order, and bounded."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

import pytest

from app.inference.framing import MAX_FRAME, Channel, FrameError, frame, read_frame


def test_frames_cross_whole_and_in_order_whatever_the_chunks() -> None:
    ours, theirs = socket.socketpair()
    channel = Channel(theirs)
    payloads = [b"", b"a", bytes(range(256)) * 1000]
    stream = b"".join(frame(p) for p in payloads)
    assert channel.receive(0) is None  # nothing yet: no wait

    def send() -> None:
        for start in range(0, len(stream), 7000):  # chunks that cut headers and payloads
            ours.sendall(stream[start : start + 7000])

    sender = threading.Thread(target=send)
    sender.start()
    assert [channel.receive(10.0) for _ in payloads] == payloads
    sender.join()
    ours.close()
    with pytest.raises(EOFError):
        channel.receive(1.0)


def test_an_oversized_frame_is_refused_on_both_ends() -> None:
    ours, theirs = socket.socketpair()
    ours.sendall(struct.pack("!I", MAX_FRAME + 1))
    with pytest.raises(FrameError):
        Channel(theirs).receive(1.0)

    async def read() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(struct.pack("!I", MAX_FRAME + 1))
        await read_frame(reader)

    with pytest.raises(FrameError):
        asyncio.run(read())
