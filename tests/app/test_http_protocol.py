"""The bounded request head: a real uvicorn server with ``BoundedHttpToolsProtocol`` in a
thread of the test, on a tiny ASGI app, spoken to over raw sockets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from app import http_protocol
from app.http_protocol import MAX_HEAD_BYTES, BoundedHttpToolsProtocol
from tests.app.live_server import free_port


async def echo_app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    """200 with the size of the body it read."""
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()  # type: ignore[operator]
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )  # type: ignore[operator]
    await send({"type": "http.response.body", "body": body})  # type: ignore[operator]


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    # Short enough for a test; the module reads it when each timer starts.
    monkeypatch.setattr(http_protocol, "HEAD_TIMEOUT_S", 1.0)
    number = free_port()
    config = uvicorn.Config(
        echo_app,
        host="127.0.0.1",
        port=number,
        http=BoundedHttpToolsProtocol,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    yield number
    server.should_exit = True
    thread.join(10)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (or 10 s: then the test fails)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass  # closed while our own bytes were still arriving: what came before still counts
    return b"".join(chunks)


def request(path: str = "/", headers: str = "", body: bytes = b"") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    return head.encode() + body


def test_a_head_over_the_limit_gets_431_and_the_connection_closes(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(request(headers=f"X-Big: {'a' * MAX_HEAD_BYTES}\r\n"))
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert answer.endswith(b"request line and headers larger than 65536 bytes")


def test_a_header_that_never_ends_is_cut_off_at_the_limit(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nX-Endless: ")
        try:
            for _ in range(64):  # 4 MiB offered; the server stops reading long before
                sock.sendall(b"a" * 65536)
        except OSError:
            pass  # closed by the server while we were still sending
        answer = read_all(sock)
    # 431, unless the reset of our unread bytes overtook it: closed either way.
    assert answer.startswith(b"HTTP/1.1 431 ") or answer == b""


def test_many_small_headers_count_together(port: int) -> None:
    headers = "".join(f"X-H{i}: {'b' * 100}\r\n" for i in range(MAX_HEAD_BYTES // 100))
    with connect(port) as sock:
        sock.sendall(request(headers=headers))
        assert read_all(sock).startswith(b"HTTP/1.1 431 ")


def test_a_head_within_the_limit_and_a_large_body_are_served_on_one_connection(port: int) -> None:
    near_limit = f"X-Big: {'a' * (MAX_HEAD_BYTES - 1024)}\r\n"
    body = b"x" * (4 * MAX_HEAD_BYTES)  # body bytes never count as head bytes
    with connect(port) as sock:
        sock.sendall(
            request(headers=near_limit) + request(body=body) + request(headers="Connection: close\r\n")
        )
        answer = read_all(sock)
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    assert answer.endswith(b"0")
    assert f"\r\n\r\n{len(body)}".encode() in answer


def test_a_head_trickling_past_the_deadline_gets_408_and_the_connection_closes(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n")
        sent = 0
        try:
            # One header byte every 0.1 s, for longer than the deadline: the server closes first.
            for _ in range(100):
                sock.sendall(b"X")
                sent += 1
                time.sleep(0.1)
        except OSError:
            pass
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert sent < 100


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(port: int) -> None:
    with connect(port) as sock:
        assert read_all(sock) == b""


def test_the_deadline_is_per_request_not_per_connection(port: int) -> None:
    with connect(port) as sock:
        for _ in range(3):  # three requests over more than one deadline, each head quick
            sock.sendall(request())
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
            time.sleep(0.5)


def test_slow_connections_do_not_keep_others_waiting(port: int) -> None:
    slow = [connect(port) for _ in range(50)]
    try:
        for sock in slow:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        with connect(port) as sock:
            sock.sendall(request(headers="Connection: close\r\n"))
            assert read_all(sock).startswith(b"HTTP/1.1 200 OK")
        for sock in slow:  # and each slow one is closed by the deadline
            assert read_all(sock).startswith(b"HTTP/1.1 408 ")
    finally:
        for sock in slow:
            sock.close()
