"""Request body intake: read (bounded), decompress (bounded), check the type, parse JSON once
(bounded in depth and values), and hand the bytes read to an inner app again (:func:`replay`)."""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from ccx_asgi.asgi import header
from ccx_asgi.errors import InvalidRequestError, RequestTooLargeError
from ccx_asgi.types import Message, Receive, Scope

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_JSON_VALUES",
    "decode_body",
    "parse_json",
    "read_body",
    "read_json",
    "read_request_json",
    "replay",
]

#: Deepest nesting a request body may have. orjson parses up to 1024 levels but cannot serialise
#: more than 254, so anything deeper would fail later, when the body is forwarded.
MAX_JSON_DEPTH = 128
#: Most JSON values (objects, arrays, scalars) a request body may hold. Parsed JSON costs far more
#: memory than its text (``{}`` is 2 bytes on the wire, 64 in Python), so a body of tiny values is
#: bounded by count as well as by size. A recorded Codex turn holds about 400, and each further turn adds a dozen or so.
MAX_JSON_VALUES = 250_000


_JSON_TYPES = frozenset({"application/json", "text/json"})
_JSON_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
_DECODE_CHUNK = 64 * 1024


async def read_body(receive: Receive, scope: Scope, limit: int) -> bytes:
    """Read the whole request body, failing with 413 as soon as it exceeds ``limit`` bytes."""
    declared = header(scope, b"content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise RequestTooLargeError(_too_large(limit))
        except ValueError:
            raise InvalidRequestError("Invalid Content-Length header.") from None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequestError("The client disconnected while sending the body.")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise RequestTooLargeError(_too_large(limit))
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int, *, decompressed: bool = False) -> str:
    what = "Decompressed request body" if decompressed else "Request body"
    return f"{what} exceeds the limit of {limit / (1024 * 1024):g} MB (CCX_MAX_BODY_MB)."


def _unsupported(message: str, *, code: str) -> InvalidRequestError:
    return InvalidRequestError(message, code=code, status=415)


def _inflate(raw: bytes, wbits: int, limit: int) -> bytes:
    """Inflate gzip/zlib/raw-deflate data without ever holding more than ``limit`` + one chunk."""
    out = bytearray()
    data = raw
    while data:
        inflater = zlib.decompressobj(wbits)
        while data:
            out += inflater.decompress(data, _DECODE_CHUNK)
            if len(out) > limit:
                raise RequestTooLargeError(_too_large(limit, decompressed=True))
            data = inflater.unconsumed_tail
        if not inflater.eof:
            # Input used up exactly at a ``max_length`` boundary can leave output inside zlib (at
            # most its 32 KiB window): collect it before deciding the stream is truncated.
            out += inflater.flush()
            if len(out) > limit:
                raise RequestTooLargeError(_too_large(limit, decompressed=True))
        if not inflater.eof:
            raise zlib.error("truncated stream")
        # gzip allows several members back to back (``cat a.gz b.gz``); the rest starts a new one.
        data = inflater.unused_data if wbits > zlib.MAX_WBITS else b""
    return bytes(out)


def _unzstd(raw: bytes, limit: int) -> bytes:
    try:
        import zstandard
    except ImportError:
        raise _unsupported(
            "Content-Encoding: zstd needs the optional 'zstandard' package on the gateway "
            "(pip install 'ccx-asgi[zstd]'); send the body uncompressed, gzip or deflate instead.",
            code="unsupported_content_encoding",
        ) from None
    out = bytearray()
    try:
        with zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as reader:
            while chunk := reader.read(_DECODE_CHUNK):
                out += chunk
                if len(out) > limit:
                    raise RequestTooLargeError(_too_large(limit, decompressed=True))
    except zstandard.ZstdError as exc:
        raise InvalidRequestError(
            f"The request body is not valid zstd data ({exc}).", code="invalid_encoding"
        ) from None
    return bytes(out)


def decode_body(raw: bytes, encoding: bytes | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (gzip, deflate, zstd; identity), applying ``limit`` to the result.

    Decompression stops as soon as the output passes ``limit`` (413), so a small "zip bomb" never
    expands in memory. Unknown encodings are refused with 415, corrupt data with 400.
    """
    codings = [c.strip().lower() for c in (encoding or b"").decode("latin-1").split(",") if c.strip()]
    # Codings are listed in the order they were applied; undo them last first.
    for coding in reversed(codings):
        if coding == "identity":
            continue
        try:
            if coding in ("gzip", "x-gzip"):
                raw = _inflate(raw, 16 + zlib.MAX_WBITS, limit)
            elif coding == "deflate":
                # RFC 9110 "deflate" is zlib-wrapped, but some clients send raw deflate: accept both.
                zlib_wrapped = len(raw) >= 2 and (raw[0] & 0x0F) == 8 and int.from_bytes(raw[:2]) % 31 == 0
                try:
                    raw = _inflate(raw, zlib.MAX_WBITS if zlib_wrapped else -15, limit)
                except zlib.error:
                    if not zlib_wrapped:
                        raise
                    raw = _inflate(raw, -15, limit)  # raw deflate that merely looked like a zlib header
            elif coding == "zstd":
                raw = _unzstd(raw, limit)
            else:
                raise _unsupported(
                    f"Unsupported Content-Encoding {coding!r}; use gzip, deflate or zstd, or none.",
                    code="unsupported_content_encoding",
                )
        except zlib.error as exc:
            raise InvalidRequestError(
                f"The request body is not valid {coding} data ({exc}).", code="invalid_encoding"
            ) from None
    return raw


def _check_content_type(scope: Scope) -> None:
    value = header(scope, b"content-type")
    if value is None:
        return  # curl without -H and many scripts send none; the body must still parse as JSON
    mime, _, params = value.decode("latin-1").partition(";")
    mime = mime.strip().lower()
    if mime not in _JSON_TYPES and not mime.endswith("+json"):
        raise _unsupported(
            f"Unsupported Content-Type {mime!r}: send the request body as JSON with 'Content-Type: application/json'.",
            code="unsupported_media_type",
        )
    for param in params.split(";"):
        name, _, charset = param.partition("=")
        charset = charset.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in _JSON_CHARSETS:
            raise _unsupported(
                f"Unsupported charset {charset!r}: JSON request bodies must be UTF-8.", code="unsupported_media_type"
            )


def parse_json(raw: bytes, *, max_depth: int = MAX_JSON_DEPTH, max_values: int = MAX_JSON_VALUES) -> Any:
    """Parse a JSON request body, refusing (400) bodies too deep or with too many values.

    Every value but the first follows a comma or an opening bracket, so counting those bytes bounds
    the number of values from above in C speed. Only when that bound is too high (text full of
    commas, or a hostile body) is the text inside string literals left out for an exact count. Depth needs a check
    only when there are more brackets than allowed levels; orjson itself refuses more than 1024.
    ``max_depth`` counts containers, the outermost one included (at least 1).
    """
    # Brackets and commas are distinct bytes, so a body shorter than ``max_values`` cannot reach the
    # values bound: its brackets are counted only as far as the depth check needs.
    small = len(raw) < max_values
    cap = max_depth + 1 if small else max_values
    brackets = _count(raw, b"[", cap) + _count(raw, b"{", cap)
    if not small and brackets + _count(raw, b",", max_values) >= max_values:
        brackets = _exact_count(raw, max_values)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "recursion" in str(exc).lower():
            raise _too_deep(max_depth) from None
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from None
    if brackets > max_depth and _depth_exceeds(data, max_depth):
        raise _too_deep(max_depth)
    return data


#: Bodies are counted in windows of this size, so the copies ``_count`` makes stay small.
_COUNT_WINDOW = 1 << 20


def _count(raw: bytes, byte: bytes, cap: int) -> int:
    """``min(raw.count(byte), cap)``. Deleting at most ``cap`` occurrences jumps between them with
    ``memchr``, where ``bytes.count`` tests every byte: brackets and commas are sparse in real
    bodies (3 µs instead of 20 for both brackets of a Codex turn). The copies are transient and at
    most a window (1 MiB) each, whatever the body's size."""
    if len(raw) <= _COUNT_WINDOW:
        return len(raw) - len(raw.replace(byte, b"", cap))
    found = 0
    for start in range(0, len(raw), _COUNT_WINDOW):
        window = raw[start : start + _COUNT_WINDOW]
        found += len(window) - len(window.replace(byte, b"", cap - found))
        if found >= cap:
            return cap
    return found


def _exact_count(raw: bytes, max_values: int) -> int:
    """Count values outside string literals; raise when there are too many. Returns the brackets.

    Escapes are removed first so that every remaining quote opens or closes a string; splitting on
    quotes then leaves the text outside strings at even positions. Each string literal is itself a
    value or key, so the quote count alone refuses bodies of many tiny strings before the split
    (whose list would cost memory per string).
    """
    clean = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    if clean.count(b'"') // 2 >= max_values:
        raise _too_many(max_values)
    outside = b" ".join(clean.split(b'"')[0::2])
    brackets = outside.count(b"[") + outside.count(b"{")
    if brackets + outside.count(b",") >= max_values:
        raise _too_many(max_values)
    return brackets


def _too_many(max_values: int) -> InvalidRequestError:
    return InvalidRequestError(
        f"The request body holds too many JSON values (more than {max_values:,}).", code="json_too_large"
    )


def _too_deep(max_depth: int) -> InvalidRequestError:
    return InvalidRequestError(
        f"The request body is nested too deeply (more than {max_depth} levels).", code="json_too_deep"
    )


#: orjson.dumps refuses values nested deeper than this (its documented recursion limit).
_DUMPS_DEPTH = 254


def _depth_exceeds(root: Any, max_depth: int) -> bool:
    """Whether ``root`` nests containers more than ``max_depth`` deep.

    Checked by orjson, in C: wrapped in ``254 - max_depth`` lists, a value that nests deeper than
    ``max_depth`` exceeds ``orjson.dumps``' own limit. A walk in Python took longer than parsing the
    body (35 µs for a 38 KB Codex turn, which has enough brackets to need the check); it remains for
    a limit orjson cannot check and for a value orjson cannot serialise for another reason.
    """
    if not isinstance(root, dict | list):
        return False
    if max_depth < _DUMPS_DEPTH:
        wrapped: Any = root
        for _ in range(_DUMPS_DEPTH - max_depth):
            wrapped = [wrapped]
        try:
            orjson.dumps(wrapped)
        except orjson.JSONEncodeError as exc:
            if "recursion" in str(exc).lower():
                return True
        else:
            return False
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                if depth >= max_depth:
                    return True
                stack.append((child, depth + 1))
    return False


async def read_json(
    receive: Receive,
    scope: Scope,
    limit: int,
    *,
    max_depth: int = MAX_JSON_DEPTH,
    max_values: int = MAX_JSON_VALUES,
) -> Any:
    """Read, decompress and parse a JSON request body with every limit applied.

    415 for a non-JSON ``Content-Type`` or unknown ``Content-Encoding``; 413 when the body, or the
    body after decompression, exceeds ``limit`` bytes; 400 for corrupt compressed data, invalid
    JSON, nesting deeper than ``max_depth`` or more than ``max_values`` values.
    """
    _, parsed = await read_request_json(receive, scope, limit, max_depth=max_depth, max_values=max_values)
    return parsed


async def read_request_json(
    receive: Receive,
    scope: Scope,
    limit: int,
    *,
    max_depth: int = MAX_JSON_DEPTH,
    max_values: int = MAX_JSON_VALUES,
) -> tuple[bytes, Any]:
    """:func:`read_json` that also returns the body's bytes as the client sent them (for :func:`replay`)."""
    _check_content_type(scope)
    raw = await read_body(receive, scope, limit)
    decoded = decode_body(raw, header(scope, b"content-encoding"), limit)
    return raw, parse_json(decoded, max_depth=max_depth, max_values=max_values)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands an inner app the body already read (once, as one message), then
    passes on what the server sends next (``http.disconnect``).

    The bytes are let go once handed out: behind the failover layer, its disconnect watcher takes
    them at once, so a large body is not kept alive next to its parsed form for the whole request.
    """
    held: list[bytes] = [body]

    async def replayed() -> Message:
        if held:
            return {"type": "http.request", "body": held.pop(), "more_body": False}
        return await receive()

    return replayed
