"""The upload limit at the ASGI level: it stops reading as soon as the limit is passed."""

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


SCOPE = {
    "type": "http",
    "method": "POST",
    "path": "/predict",
    "headers": [(b"transfer-encoding", b"chunked")],
}


def run_timed(receive: Receive, app: ASGIApp = read_everything, timeout_s: float = 0.05) -> list[Message]:
    """Run the middleware with a body deadline of ``timeout_s``; returns what was sent."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    middleware = UploadLimitMiddleware(app, max_bytes=lambda: 10**6, body_timeout_s=lambda: timeout_s)
    asyncio.run(middleware(SCOPE, receive, send))
    return sent


def assert_timed_out(sent: list[Message]) -> None:
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert sent[1]["body"] == b'{"detail":"the request body did not arrive within 0.05 s"}'


def test_a_body_that_stops_arriving_is_a_408_that_closes_the_connection() -> None:
    reads = 0

    async def stalls() -> Message:
        nonlocal reads
        reads += 1
        if reads == 1:
            return {"type": "http.request", "body": b"x" * 100, "more_body": True}
        await asyncio.Event().wait()  # the rest never comes
        raise AssertionError("unreachable")

    assert_timed_out(run_timed(stalls))


def test_a_body_that_trickles_for_ever_is_a_408_too() -> None:
    # A byte every 10 ms never leaves a long gap: only a deadline on the whole body ends it.
    reads = 0

    async def trickles() -> Message:
        nonlocal reads
        reads += 1
        assert reads < 1000, "the middleware kept reading past its deadline"
        await asyncio.sleep(0.01)
        return {"type": "http.request", "body": b"x", "more_body": True}

    assert_timed_out(run_timed(trickles))


def test_waiting_after_the_whole_body_has_no_deadline() -> None:
    """An app may keep reading after the body to learn of a disconnect; that is not a slow body."""
    reads = 0

    async def body_then_disconnect() -> Message:
        nonlocal reads
        reads += 1
        if reads == 1:
            return {"type": "http.request", "body": b"x", "more_body": False}
        await asyncio.sleep(0.2)  # well past the 0.05 s deadline
        return {"type": "http.disconnect"}

    async def reads_on(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "http.request"
        assert (await receive())["type"] == "http.disconnect"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    assert run_timed(body_then_disconnect, reads_on)[0]["status"] == 200
