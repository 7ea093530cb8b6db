"""Bad uploads, and the status the service must answer each with: ``corpus()`` and ``run_case()``.

Every case is a whole HTTP/1.1 request built from bytes and sent over a raw socket
(bench/raw_http.py), so it can be what no client library would send: malformed multipart,
a Content-Length that lies, a chunked body that never ends. Expected statuses follow the
errors table of docs/API.md: 400 for a file that is empty, damaged or too big in pixels,
or a body the multipart parser refuses; 408 for a body that does not all arrive within
FASHION_BODY_TIMEOUT_S; 413 for a body over FASHION_MAX_UPLOAD_BYTES; 415 for a known
non-image; 422 for a missing, doubled or malformed form field; and 200 for an image that
is odd but valid.

Used by tests/app/test_bad_inputs.py and bench/reliability.py. The two cases answered 408
need the server's FASHION_BODY_TIMEOUT_S below ``run_case``'s timeout.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from bench import bad_images as img
from bench.raw_http import BOUNDARY, MULTIPART, Answer, chunked, exchange, filler, form, head, part, request

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # FASHION_MAX_UPLOAD_BYTES's default
DEFAULT_BATCH_FILES = 64  # FASHION_MAX_BATCH_FILES's default
CONTENT_PNG = {"Content-Type": "image/png"}


@dataclass(frozen=True)
class BadInput:
    """One request and the statuses that are a right answer to it."""

    name: str
    expected: frozenset[int]
    why: str  # what the request is, and why that is the answer
    # The request's bytes, head first, made when sent (some are large, one never ends).
    pieces: Callable[[], Iterable[bytes]]
    pause_s: float = 0.0  # between pieces: a client that trickles


FILE_HEAD = part(b"file", b"")[:-2]  # a file part up to its content
CLOSING = b"\r\n--" + BOUNDARY + b"--\r\n"  # the end of the file part and of the body


def upload(data: bytes) -> Callable[[], list[bytes]]:
    """``data`` as the one file of a well-formed /predict request."""
    return lambda: [request(form(part(b"file", data)))]


def oversized(limit: int) -> Iterator[bytes]:
    """A multipart body whose one file has ``limit`` + 1 bytes: over the limit, framing or not."""
    yield FILE_HEAD
    yield from filler(limit + 1)
    yield CLOSING


def oversized_length(limit: int) -> int:
    return len(FILE_HEAD) + limit + 1 + len(CLOSING)


# --- the corpus -------------------------------------------------------------------------


def _images() -> list[BadInput]:
    """The file itself is the problem (or the oddity); the request around it is well formed."""
    ok, bad, not_image = frozenset({200}), frozenset({400}), frozenset({415})
    cases = [
        ("empty-file", bad, "zero bytes: 'the file is empty'", b""),
        ("random-bytes", bad, "4 KiB of noise named .png: not a decodable image", img.random_bytes()),
        ("text-as-png", not_image, "plain text named .png: a known non-image", img.TEXT),
        ("html-as-png", not_image, "an HTML page named .png", img.HTML),
        ("json-as-png", not_image, "a JSON document named .png", img.JSON),
        ("pdf-as-png", not_image, "a PDF named .png", img.PDF),
        ("svg-as-png", not_image, "an SVG named .png: vector graphics are not decoded", img.SVG),
        ("png-cut-in-signature", bad, "the first 4 bytes of a PNG", img.png_cut("in-signature")),
        ("png-cut-after-signature", bad, "a PNG signature and nothing else", img.png_cut("after-signature")),
        ("png-cut-in-header", bad, "a PNG cut inside IHDR", img.png_cut("in-header")),
        ("png-cut-after-header", bad, "a PNG with a header and no pixel data", img.png_cut("after-header")),
        ("png-cut-in-data", bad, "a PNG cut halfway through IDAT: truncated", img.png_cut("in-data")),
        # Every pixel is there; only the end marker is missing, which decoders tolerate.
        ("png-cut-before-end", ok, "a PNG missing only its IEND chunk", img.png_cut("before-end")),
        ("png-bad-header-crc", bad, "a PNG whose IHDR CRC is wrong", img.png_bad_crc(b"IHDR")),
        # Pillow, like browsers' decoders, does not check the data chunks' CRC: the zlib
        # stream inside carries its own checksum, and here it is intact.
        ("png-bad-data-crc", ok, "a PNG whose IDAT CRC is wrong, pixels intact", img.png_bad_crc(b"IDAT")),
        ("jpeg-cut-mid-scan", bad, "a 200x200 JPEG cut halfway through its scan", img.jpeg_cut_mid_scan()),
        ("gif-1000-frames", ok, "an animated GIF of 1,000 frames: the first is classified", img.gif_frames()),
        ("image-1x1", ok, "a single pixel", img.solid(1, 1, 200)),
        ("image-1x100000", ok, "one pixel wide, 100,000 tall", img.solid(1, 100_000, 200)),
        ("image-100000x1", ok, "100,000 pixels wide, one tall", img.solid(100_000, 1, 200)),
        (
            "png-bomb-100000x100000",
            bad,
            "a 2 KB PNG declaring 10^10 pixels: refused from the header",
            img.png_declaring(100_000, 100_000),
        ),
        (
            "png-over-pixel-limit",
            bad,
            "a PNG declaring 5000x5000, over FASHION_MAX_IMAGE_PIXELS but under Pillow's own limit",
            img.png_declaring(5000, 5000),
        ),
        ("png-zero-width", bad, "a PNG header declaring 0x28 pixels", img.png_declaring(0, 28, rows=0)),
        ("png-16-bit", ok, "16-bit grayscale", img.png_16_bit()),
        ("tiff-float", ok, "32-bit float pixels (mode F), 0..1", img.tiff_float()),
        ("tiff-float-nan-inf", ok, "float pixels with NaN and infinities", img.tiff_float(special=True)),
        ("jpeg-cmyk", ok, "a CMYK JPEG", img.jpeg_cmyk()),
        ("png-palette-transparent", ok, "palette, one colour transparent", img.png_palette_transparent()),
        ("png-gray-alpha", ok, "grayscale with alpha (LA)", img.png_gray_alpha()),
        ("image-all-zeros", ok, "100x100 of 0: nothing to trim to", img.solid(100, 100, 0)),
        ("image-all-255", ok, "100x100 of 255: inverted to all 0", img.solid(100, 100, 255)),
        ("jpeg-bogus-exif-orientation", ok, "EXIF orientation 77 (valid: 1-8)", img.jpeg_bogus_orientation()),
        ("tiff-cielab", ok, "a CIELAB TIFF: read by its lightness band", img.tiff_lab()),
        (
            "html-utf8-bom-as-png",
            not_image,
            "an HTML page behind a UTF-8 byte-order mark",
            img.html_with_bom(),
        ),
        (
            "html-utf16-as-png",
            not_image,
            "an HTML page in UTF-16, with its byte-order mark",
            img.html_with_bom("utf-16"),
        ),
    ]
    return [BadInput(name, expected, why, upload(data)) for name, expected, why, data in cases]


def _forms() -> list[BadInput]:
    """A good image in a bad form."""
    good = img.png()
    batch = "/predict/batch"

    def case(
        name: str,
        status: int,
        why: str,
        body: bytes,
        path: str = "/predict",
        headers: dict[str, str] | None = None,
    ) -> BadInput:
        return BadInput(name, frozenset({status}), why, lambda: [request(body, path, headers)])

    too_many = [part(b"files", img.solid(1, 1, 9))] * (DEFAULT_BATCH_FILES + 1)
    return [
        case("field-named-image", 422, "the file under 'image', not 'file'", form(part(b"image", good))),
        case(
            "two-file-fields",
            422,
            "two 'file' parts: which one to classify is the client's call, not the parser's",
            form(part(b"file", good), part(b"file", good)),
        ),
        case(
            "no-filename",
            422,
            "a 'file' part without a filename: a text field, not a file",
            form(part(b"file", good, filename=None)),
        ),
        case(
            "long-filename",
            200,
            "a 1,000-character filename",
            form(part(b"file", good, b"a" * 996 + b".png")),
        ),
        # The multipart parser caps a part's header line at about 4 KiB.
        case(
            "huge-filename",
            400,
            "a 64 KiB filename: the part header is refused as invalid multipart",
            form(part(b"file", good, b"a" * 65_536 + b".png")),
        ),
        case(
            "non-utf8-filename",
            200,
            "a Latin-1 filename that is not UTF-8",
            form(part(b"file", good, b"chemise-\xe9t\xe9-\xff.png")),
        ),
        case(
            "not-multipart", 422, "the PNG as the raw body, Content-Type image/png", good, headers=CONTENT_PNG
        ),
        case(
            "multipart-without-boundary",
            400,
            "multipart/form-data with no boundary",
            form(part(b"file", good)),
            headers={"Content-Type": "multipart/form-data"},
        ),
        # Without its closing boundary a part is never complete, so no 'file' field arrives.
        case("multipart-unterminated", 422, "the closing boundary is missing", part(b"file", good)),
        case("multipart-garbage", 400, "the declared boundary never appears", img.random_bytes(2048)),
        case(
            "batch-field-named-file",
            422,
            "/predict/batch with 'file', not 'files'",
            form(part(b"file", good)),
            batch,
        ),
        case(
            "batch-one-truncated",
            400,
            "a batch of a good PNG and a truncated one",
            form(part(b"files", good), part(b"files", img.png_cut("in-data"))),
            batch,
        ),
        case(
            "batch-pdf",
            400,
            "a batch holding a PDF: in a batch, a bad file is a 400 naming it",
            form(part(b"files", good), part(b"files", img.PDF, b"notes.pdf")),
            batch,
        ),
        case("batch-too-many-files", 400, "one file more than the default limit", form(*too_many), batch),
    ]


def _framing(limit: int) -> list[BadInput]:
    """Bodies over the limit, lengths that lie, and bodies that never end."""
    good = form(part(b"file", img.png()))
    over = oversized_length(limit)

    def with_length(length: int | str, body: Iterable[bytes]) -> Iterator[bytes]:
        yield head("/predict", {**MULTIPART, "Content-Length": str(length)})
        yield from body

    def trickle() -> Iterator[bytes]:
        # A slowloris: a byte at a time, for ever; only a deadline on the whole body ends it.
        yield FILE_HEAD
        yield from itertools.repeat(b"x")

    def bad_chunk() -> list[bytes]:
        return [head("/predict", {**MULTIPART, "Transfer-Encoding": "chunked"}), b"zz\r\nxx\r\n"]

    too_large, too_slow, refused = frozenset({413}), frozenset({408}), frozenset({400})
    return [
        BadInput(
            "over-limit-with-length",
            too_large,
            "a body one byte over the limit, with a truthful Content-Length: refused before reading",
            lambda: with_length(over, oversized(limit)),
        ),
        BadInput(
            "over-limit-chunked",
            too_large,
            "a body over the limit, chunked (no Content-Length): refused at the chunk that passes it",
            lambda: chunked(oversized(limit)),
        ),
        BadInput(
            "batch-over-limit-chunked",
            too_large,
            "the same on /predict/batch",
            lambda: chunked(oversized(limit), "/predict/batch"),
        ),
        # The server reads only the bytes Content-Length announces: the multipart body stops
        # inside the file part's head, so no 'file' field arrives.
        BadInput(
            "over-limit-length-lies-low",
            frozenset({422}),
            "a body over the limit sent with Content-Length: 100",
            lambda: with_length(100, oversized(limit)),
        ),
        BadInput(
            "length-claims-1tb",
            too_large,
            "Content-Length 10^12 and a small body: refused before any byte is read",
            lambda: with_length(10**12, [good]),
        ),
        BadInput(
            "length-claims-more-then-stalls",
            too_slow,
            "Content-Length one byte more than is sent: the server waits for a byte that never comes",
            lambda: with_length(len(good) + 1, [good]),
        ),
        BadInput(
            "chunked-never-ends",
            too_slow,
            "a chunked body that trickles a byte every 50 ms, for ever",
            lambda: chunked(trickle()),
            pause_s=0.05,
        ),
        BadInput(
            "chunked-bad-size", refused, "a chunk size that is not hex: uvicorn's parser refuses", bad_chunk
        ),
        BadInput(
            "length-not-a-number",
            refused,
            "Content-Length: ten: uvicorn's parser refuses",
            lambda: with_length("ten", [good]),
        ),
    ]


def _heads() -> list[BadInput]:
    """Request lines and headers: too big, never ending, and methods and paths to probe."""
    big_header = lambda size: [head("/predict", {**MULTIPART, "X-Filler": "a" * size, "Content-Length": "0"})]  # noqa: E731

    def endless_header() -> Iterator[bytes]:
        yield b"POST /predict HTTP/1.1\r\nHost: localhost\r\nX-Endless: "
        yield from itertools.repeat(b"a" * 4096)

    def trickled_head() -> Iterator[bytes]:
        yield b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
        yield from itertools.repeat(b"a")

    def plain(method: str, path: str, extra: str = "") -> Callable[[], list[bytes]]:
        text = f"{method} {path} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n{extra}\r\n"
        return lambda: [text.encode()]

    too_large = frozenset({431})
    return [
        BadInput(
            "header-100kib",
            too_large,
            "one 100 KiB header: over the 64 KiB head limit",
            lambda: big_header(100 * 1024),
        ),
        BadInput("header-never-ends", too_large, "a header that never ends, 4 KiB at a time", endless_header),
        BadInput(
            "head-trickles",
            frozenset({408}),
            "a request head trickling a byte every 0.5 s: cut off at the 10 s deadline",
            trickled_head,
            pause_s=0.5,
        ),
        BadInput(
            "head-on-a-get-route",
            frozenset({200}),
            "HEAD /classes: the GET's answer without a body",
            plain("HEAD", "/classes"),
        ),
        BadInput(
            "trailing-slash-foreign-host",
            frozenset({404}),
            "POST /predict/ with Host: evil.example: a 404, never a redirect built from the Host",
            plain("POST", "/predict/", "Content-Length: 0\r\n"),
        ),
    ]


def _v2() -> list[BadInput]:
    """The Open Inference Protocol's infer route: malformed JSON and binary bodies."""
    path = "/v2/models/fashion-mnist/infer"

    def infer(body: bytes, header_length: int | None = None) -> Callable[[], list[bytes]]:
        headers = {"Content-Type": "application/octet-stream"}
        if header_length is not None:
            headers["Inference-Header-Content-Length"] = str(header_length)
        return lambda: [request(body, path, headers)]

    def pixels(size: int, tail: bytes) -> Callable[[], list[bytes]]:
        tensor = {
            "name": "pixels",
            "datatype": "UINT8",
            "shape": [1, 28, 28],
            "parameters": {"binary_data_size": size},
        }
        header = json.dumps({"inputs": [tensor]}).encode()
        return infer(header + tail, len(header))

    bad = frozenset({400})
    json_pixels = json.dumps(
        {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 784}]}
    )
    many_values = json.dumps(
        {
            "inputs": [
                {
                    "name": "pixels",
                    "datatype": "UINT8",
                    "shape": [64, 28, 28],
                    "data": [0] * (64 * 784 + 5000),
                }
            ]
        }
    )
    return [
        BadInput(
            "v2-good-json-pixels", frozenset({200}), "784 UINT8 pixels as JSON", infer(json_pixels.encode())
        ),
        BadInput("v2-not-json", bad, "a body that is not JSON", infer(b"{not json")),
        BadInput(
            "v2-deep-nesting",
            bad,
            "data nested 100,000 deep",
            infer(b'{"inputs":[{"data":' + b"[" * 100_000 + b"]}]}"),
        ),
        BadInput(
            "v2-too-many-values", bad, "more JSON values than 64 images need", infer(many_values.encode())
        ),
        BadInput(
            "v2-header-length-past-body",
            bad,
            "Inference-Header-Content-Length beyond the body",
            infer(b"{}", 10**9),
        ),
        BadInput(
            "v2-binary-size-huge", bad, "binary_data_size 2^62 with 784 bytes sent", pixels(2**62, bytes(784))
        ),
        BadInput(
            "v2-binary-size-short",
            bad,
            "binary_data_size 100 for a 1x28x28 UINT8 tensor",
            pixels(100, bytes(100)),
        ),
    ]


def corpus(upload_limit: int = DEFAULT_UPLOAD_LIMIT) -> list[BadInput]:
    """Every case; ``upload_limit`` is the server's FASHION_MAX_UPLOAD_BYTES (the oversized
    bodies are one byte over it, and every other case stays far below the default)."""
    return [*_images(), *_forms(), *_framing(upload_limit), *_heads(), *_v2()]


# --- sending -----------------------------------------------------------------------------


def send_case(host: str, port: int, case: BadInput, timeout: float = 30.0) -> Answer | None:
    """Send ``case`` and read the answer (status, headers, body); None when there was none."""
    return exchange(host, port, case.pieces(), case.pause_s, timeout)


def run_case(host: str, port: int, case: BadInput, timeout: float = 30.0) -> int | None:
    """The HTTP status the server answered ``case`` with; None if it closed without answering
    (or gave no answer within ``timeout`` seconds)."""
    answer = send_case(host, port, case, timeout)
    return None if answer is None else answer.status
