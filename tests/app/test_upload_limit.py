"""The upload limit at the ASGI level: it stops reading as soon as the limit is passed."""

import asyncio

from starlette.types import Message, Receive, Scope, Send

from app.upload_limit import UploadLimitMiddleware


async def read_everything(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that reads the whole body, as a multipart parser does, then answers 200."""
    while True:
        message = await receive()
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def run(limit: int, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> tuple[int, list[Message]]:
    """Send ``chunks`` through the middleware; returns how many were read and what was sent."""
    sent: list[Message] = []
    read = 0

    async def receive() -> Message:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": headers}
    asyncio.run(UploadLimitMiddleware(read_everything, max_bytes=lambda: limit)(scope, receive, send))
    return read, sent


def test_a_body_within_the_limit_passes() -> None:
    read, sent = run(1000, [b"x" * 400, b"x" * 400], [(b"content-length", b"800")])
    assert read == 2
    assert sent[0]["status"] == 200


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    read, sent = run(1000, [b"x" * 600, b"x" * 600], [(b"content-length", b"1200")])
    assert read == 0
    assert sent[0]["status"] == 413
    assert sent[1]["body"] == b'{"detail":"the upload is larger than 1000 bytes"}'


def test_without_a_length_reading_stops_at_the_chunk_that_passes_the_limit() -> None:
    read, sent = run(1000, [b"x" * 400] * 10, [(b"transfer-encoding", b"chunked")])
    assert read == 3  # 1200 bytes: over; the other 7 chunks are never read
    assert sent[0]["status"] == 413


def test_a_lying_length_does_not_help() -> None:
    read, sent = run(1000, [b"x" * 400] * 10, [(b"content-length", b"10")])
    assert read == 3
    assert sent[0]["status"] == 413
