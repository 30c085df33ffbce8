"""Hostile request bodies: size limits while reading, decompression bombs, bad encodings, content
types, and JSON built to exhaust memory or recursion. Every refusal is a clear 4xx, never a 500."""

from __future__ import annotations

import asyncio
import gzip
import sys
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import zstandard

from ccx_asgi import CCXApp
from ccx_asgi.body import MAX_JSON_DEPTH, MAX_JSON_VALUES, decode_body, parse_json
from ccx_asgi.errors import InvalidRequestError, RequestTooLargeError
from ccx_asgi.types import Message
from tests.conftest import PROXY_KEY, AppFactory
from tests.fakes.responses_upstream import FakeResponsesUpstream
from tests.fixture_types import ClientFor
from tests.sdk import validate_response
from tests.servers import serve

MB = 1024 * 1024
BODY = orjson.dumps({"model": "gpt-test", "input": "hello"})


class RawResult:
    """What a raw ASGI call produced, and how much of the body the app pulled."""

    def __init__(self) -> None:
        self.status = 0
        self.body = b""
        self.receive_calls = 0

    @property
    def error(self) -> dict[str, Any]:
        return orjson.loads(self.body)["error"]  # type: ignore[no-any-return]


async def call(app: CCXApp, chunks: Iterator[bytes], headers: list[tuple[bytes, bytes]] | None = None) -> RawResult:
    """POST /responses straight through ASGI, feeding ``chunks`` (possibly endless) as the body."""
    result = RawResult()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/responses",
        "root_path": "",
        "headers": [(b"authorization", f"Bearer {PROXY_KEY}".encode()), *(headers or [])],
    }

    body_done = False

    async def receive() -> dict[str, Any]:
        nonlocal body_done
        if body_done:
            # As an ASGI server does once the body is read: wait until the client goes away.
            await asyncio.Event().wait()
        result.receive_calls += 1
        chunk = next(chunks, None)
        body_done = chunk is None
        return {"type": "http.request", "body": chunk or b"", "more_body": chunk is not None}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            result.status = message["status"]
        else:
            result.body += message.get("body", b"")

    await app(scope, receive, send)
    return result


def endless(chunk: bytes) -> Iterator[bytes]:
    while True:
        yield chunk


@pytest.fixture
def upstream() -> FakeResponsesUpstream:
    return FakeResponsesUpstream()


@pytest.fixture
def gateway(make_app: AppFactory, upstream: FakeResponsesUpstream) -> CCXApp:
    return make_app(transport=httpx.ASGITransport(app=upstream), max_body_mb=1)


async def test_limit_is_enforced_while_reading_an_endless_body(gateway: CCXApp) -> None:
    # No Content-Length and a body that never ends: the app must stop at the limit, not at EOF.
    result = await call(gateway, endless(b"x" * 65536))
    assert result.status == 413
    assert result.error["code"] == "request_too_large"
    assert "CCX_MAX_BODY_MB" in result.error["message"]
    assert result.receive_calls == 17  # 16 chunks fit in 1 MB, the 17th crosses it


async def test_declared_content_length_over_the_limit_is_refused_before_reading(gateway: CCXApp) -> None:
    result = await call(gateway, endless(b"x"), [(b"content-length", str(5 * MB).encode())])
    assert result.status == 413
    assert result.receive_calls == 0


async def test_bad_content_length_is_a_400(gateway: CCXApp) -> None:
    result = await call(gateway, endless(b"x"), [(b"content-length", b"12abc")])
    assert result.status == 400
    assert "Content-Length" in result.error["message"]


def _zlib(data: bytes) -> bytes:
    return zlib.compress(data)


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", _zlib),
        ("deflate", _raw_deflate),
        ("zstd", lambda d: zstandard.ZstdCompressor().compress(d)),
        ("identity", lambda d: d),
        ("gzip, zstd", lambda d: zstandard.ZstdCompressor().compress(gzip.compress(d))),
    ],
)
async def test_compressed_bodies_are_decoded_and_forwarded_plain(
    gateway: CCXApp, upstream: FakeResponsesUpstream, client_for: ClientFor, encoding: str, encode: Any
) -> None:
    client = client_for(gateway)
    response = await client.post(
        "/responses", content=encode(BODY), headers={"content-type": "application/json", "content-encoding": encoding}
    )
    assert response.status_code == 200, response.text
    validate_response(response.json())
    forwarded = upstream.requests[-1]
    assert forwarded.body == {"model": "gpt-test", "input": "hello"}
    assert "content-encoding" not in forwarded.headers


async def test_multi_member_gzip_is_read_to_the_end(gateway: CCXApp, client_for: ClientFor, upstream: Any) -> None:
    half = len(BODY) // 2
    body = gzip.compress(BODY[:half]) + gzip.compress(BODY[half:])
    response = await client_for(gateway).post("/responses", content=body, headers={"content-encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert upstream.requests[-1].body["input"] == "hello"


@pytest.mark.parametrize(
    "bomb",
    [
        pytest.param(lambda d: ("gzip", gzip.compress(d, 9)), id="gzip"),
        pytest.param(lambda d: ("deflate", zlib.compress(d, 9)), id="deflate"),
        pytest.param(lambda d: ("zstd", zstandard.ZstdCompressor(level=19).compress(d)), id="zstd"),
    ],
)
async def test_decompression_bombs_get_413_without_expanding(gateway: CCXApp, bomb: Any) -> None:
    # 200 MB of zeros compresses to a few hundred kB: well under the 1 MB wire limit.
    encoding, payload = bomb(b'{"model":"m","input":"' + b"0" * (200 * MB) + b'"}')
    assert len(payload) < MB
    tracemalloc.start()
    try:
        result = await call(gateway, iter([payload]), [(b"content-encoding", encoding.encode())])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.status == 413
    assert "Decompressed request body exceeds" in result.error["message"]
    assert peak < 8 * MB, f"decompression used {peak / MB:.1f} MB"


@pytest.mark.parametrize(
    ("encoding", "payload", "status", "code"),
    [
        ("gzip", b"not gzip at all", 400, "invalid_encoding"),
        ("gzip", gzip.compress(BODY)[:-12], 400, "invalid_encoding"),  # truncated
        ("deflate", b"\x78\x9c garbage", 400, "invalid_encoding"),
        ("zstd", b"\x28\xb5\x2f\xfd garbage", 400, "invalid_encoding"),
        ("br", BODY, 415, "unsupported_content_encoding"),
        ("compress", BODY, 415, "unsupported_content_encoding"),
    ],
)
async def test_bad_encodings_are_clear_client_errors(
    gateway: CCXApp, encoding: str, payload: bytes, status: int, code: str
) -> None:
    result = await call(gateway, iter([payload]), [(b"content-encoding", encoding.encode())])
    assert (result.status, result.error["code"]) == (status, code), result.error
    assert result.error["type"] == "invalid_request_error"


async def test_zstd_without_the_extra_says_how_to_enable_it(gateway: CCXApp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)  # makes ``import zstandard`` fail
    payload = zstandard.ZstdCompressor().compress(BODY)
    result = await call(gateway, iter([payload]), [(b"content-encoding", b"zstd")])
    assert result.status == 415
    assert "ccx-asgi[zstd]" in result.error["message"]


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json", 200),
        ("application/json; charset=utf-8", 200),
        ('application/json; charset="UTF-8"', 200),
        ("application/vnd.api+json", 200),
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=x", 415),
        ("application/json; charset=utf-16", 415),
    ],
)
async def test_content_types(gateway: CCXApp, client_for: ClientFor, content_type: str, status: int) -> None:
    response = await client_for(gateway).post("/responses", content=BODY, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    if status == 415:
        error = response.json()["error"]
        assert error["code"] == "unsupported_media_type"
        assert "application/json" in error["message"] or "UTF-8" in error["message"]


async def test_missing_content_type_is_accepted_when_the_body_is_json(gateway: CCXApp) -> None:
    result = await call(gateway, iter([BODY]))
    assert result.status == 200


def nested(depth: int) -> bytes:
    return b'{"model":"m","input":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 1024, 1025, 100_000])
async def test_deep_nesting_is_a_400(gateway: CCXApp, depth: int) -> None:
    result = await call(gateway, iter([nested(depth)]))
    assert result.status == 400
    assert result.error["code"] == "json_too_deep"
    assert str(MAX_JSON_DEPTH) in result.error["message"]


def test_nesting_at_the_limit_parses() -> None:
    assert parse_json(nested(MAX_JSON_DEPTH))["model"] == "m"
    with pytest.raises(InvalidRequestError):
        parse_json(nested(MAX_JSON_DEPTH + 1))
    # Depth is counted on objects as well as arrays, and for scalars at the top level.
    assert parse_json(b"3") == 3
    with pytest.raises(InvalidRequestError):
        parse_json(b'{"a":' * 200 + b"1" + b"}" * 200)


@pytest.mark.parametrize("element", [b"0", b"{}", b"[]", b'""'])
async def test_huge_arrays_of_tiny_values_are_refused(make_app: AppFactory, element: bytes) -> None:
    gateway = make_app(max_body_mb=50)
    body = b'{"model":"m","input":[' + b",".join([element] * (MAX_JSON_VALUES + 1)) + b"]}"
    tracemalloc.start()
    try:
        result = await call(gateway, iter([body]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.status == 400
    assert result.error["code"] == "json_too_large"
    # The refusal happens before parsing: nothing near the ~40 MB a parsed list of dicts would take.
    assert peak < len(body) + 8 * MB, f"{peak / MB:.1f} MB"


def test_commas_and_brackets_inside_strings_do_not_count() -> None:
    text = "a, b, [c], {d}, " * (MAX_JSON_VALUES // 2)
    data = parse_json(orjson.dumps({"model": "m", "input": text, "escaped": 'x\\", [' * 10}))
    assert data["input"] == text


def test_invalid_json_names_the_problem() -> None:
    with pytest.raises(InvalidRequestError, match="not valid JSON"):
        parse_json(b'{"model": "m",')


async def test_non_object_bodies_are_a_400(gateway: CCXApp) -> None:
    for body in (b"[]", b"3", b'"model"', b"null"):
        result = await call(gateway, iter([body]))
        assert result.status == 400, body
        assert "JSON object" in result.error["message"]


@pytest.mark.parametrize("size", [65535, 65536, 65537, 131072, 200_003])
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate", "zstd"])
def test_decoding_is_exact_around_chunk_boundaries(size: int, encoding: str) -> None:
    data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    encoders: dict[str, Callable[[bytes], bytes]] = {
        "gzip": gzip.compress,
        "deflate": zlib.compress,
        "raw-deflate": _raw_deflate,
        "zstd": lambda d: zstandard.ZstdCompressor().compress(d),
    }
    encoded = encoders[encoding](data)
    assert decode_body(encoded, encoding.removeprefix("raw-").encode(), size) == data
    with pytest.raises(RequestTooLargeError):
        decode_body(encoded, encoding.removeprefix("raw-").encode(), size - 1)


async def test_endless_upload_to_a_real_server_gets_413_at_the_limit(make_app: AppFactory) -> None:
    """On uvicorn: a chunked upload that never ends is answered 413 once it passes 1 MB."""
    app = make_app(max_body_mb=1)
    with serve(app) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST /responses HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {PROXY_KEY}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
        sent = 0
        answer = asyncio.ensure_future(reader.read(4096))
        try:
            while not answer.done() and sent < 64 * MB:
                writer.write(chunk)
                await writer.drain()
                sent += 65536
                await asyncio.sleep(0)
            head = await asyncio.wait_for(answer, 5)
        except ConnectionError:  # the server may close while we are still writing
            head = await asyncio.wait_for(answer, 5)
        finally:
            writer.transport.abort()
    assert head.startswith(b"HTTP/1.1 413"), head[:100]
    assert sent < 8 * MB  # answered long before the client stopped sending


@pytest.mark.parametrize(
    ("raw", "byte", "cap"),
    [(b"", b"[", 5), (b"a[b[c", b"[", 5), (b"[" * 10, b"[", 3), (b"[" * 10, b"[", 10), (b",x," * 50, b",", 1000)],
)
def test_the_capped_count_is_the_count_up_to_the_cap(raw: bytes, byte: bytes, cap: int) -> None:
    from ccx_asgi.body import _count

    assert _count(raw, byte, cap) == min(raw.count(byte), cap)


def _walk_depth(root: Any) -> int:
    """The container depth of ``root``, by an explicit walk (the reference the check must agree with)."""
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


@pytest.mark.parametrize("depth", [1, 2, MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 200, 254, 255, 600])
@pytest.mark.parametrize("shape", ["lists", "objects", "mixed"])
def test_the_depth_check_agrees_with_a_walk(depth: int, shape: str) -> None:
    from ccx_asgi.body import _depth_exceeds

    value: Any = 1
    for level in range(depth):
        kind = shape if shape != "mixed" else ("lists" if level % 2 else "objects")
        value = [0, value] if kind == "lists" else {"k": value, "z": []}
    expected = _walk_depth(value) > MAX_JSON_DEPTH
    assert _depth_exceeds(value, MAX_JSON_DEPTH) is expected
    # A string orjson cannot serialise (a lone surrogate) takes the walk: the answer is the same.
    assert _depth_exceeds({"bad": "\ud800", "v": value}, MAX_JSON_DEPTH) is (_walk_depth(value) + 1 > MAX_JSON_DEPTH)


def test_orjson_still_refuses_to_serialise_deeper_than_254_levels() -> None:
    # The depth check relies on this documented limit; an orjson that changed it must fail here.
    value: Any = 1
    for _ in range(254):
        value = [value]
    orjson.dumps(value)
    with pytest.raises(orjson.JSONEncodeError, match=r"(?i)recursion"):
        orjson.dumps([value])


@pytest.mark.parametrize("cap", [1, 3, 1000])
def test_the_capped_count_over_windows_is_the_count_up_to_the_cap(cap: int) -> None:
    from ccx_asgi.body import _COUNT_WINDOW, _count

    # Occurrences on both sides of each window boundary, in a body of two and a half windows.
    raw = bytearray(b"x" * (_COUNT_WINDOW * 5 // 2))
    for at in (0, _COUNT_WINDOW - 1, _COUNT_WINDOW, _COUNT_WINDOW + 1, 2 * _COUNT_WINDOW, len(raw) - 1):
        raw[at] = ord("[")
    assert _count(bytes(raw), b"[", cap) == min(6, cap)
    assert _count(bytes(raw), b"{", cap) == 0
