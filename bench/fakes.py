"""A fast fake upstream that speaks Chat Completions, Claude Messages and Responses.

A raw ASGI app (no framework) whose answers are precomputed bytes, so that the fake costs as little
as possible and every arm of the benchmark pays the same for it. It reads and parses the request
body (as a real upstream must) to learn ``stream``, and otherwise answers the same payload to every
request.

Profiles are chosen by a path prefix, so one fake serves every scenario and the gateways under test
only need a different ``base_url``:

- ``/v1/...``: the fast profile, ``FAST_CHUNKS`` text deltas sent back to back;
- ``/paced/v1/...``: ``PACED_CHUNKS`` deltas, the first burst (everything up to and including the
  first text delta, as real upstreams send it) at once, then one frame every ``PACED_INTERVAL`` s.

``GET /__stats`` returns how many requests each path received (to see which endpoint a peer used).
Run it with ``python -m bench.fakes --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson

from ccx_asgi.convert.events import ResponseStream, usage_dict
from ccx_asgi.sse import encode_event

MODEL = "bench-model"
FAST_CHUNKS = 20
PACED_CHUNKS = 60
PACED_INTERVAL = 0.05
CREATED = 1_700_000_000
_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def _words(n: int) -> list[str]:
    return [f"tok{i % 97} " for i in range(n)]


@dataclass(frozen=True, slots=True)
class Payload:
    """One endpoint's precomputed answer: the JSON body and the stream split in frames.

    ``burst`` is how many leading frames form the first burst (up to and including the first delta).
    """

    json: bytes
    frames: tuple[bytes, ...]
    burst: int


def chat_payload(n: int) -> Payload:
    """A Chat Completions answer with ``n`` content deltas, a finish chunk, a usage chunk and ``[DONE]``."""
    words = _words(n)
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED, "model": MODEL}
    usage = {"prompt_tokens": 25, "completion_tokens": n, "total_tokens": 25 + n}
    chunks: list[dict[str, Any]] = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    ]
    chunks += [{**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in words]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunks.append({**base, "choices": [], "usage": usage})
    frames = [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]
    answer = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(words)}, "finish_reason": "stop"}],
        "usage": usage,
    }
    return Payload(orjson.dumps(answer), tuple(frames), 2)


def claude_payload(n: int) -> Payload:
    """A Claude Messages answer: ``message_start`` … ``n`` text deltas … ``message_stop``."""
    words = _words(n)
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_bench",
                "type": "message",
                "role": "assistant",
                "model": MODEL,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 25, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
    ]
    events += [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}} for w in words]
    events += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": n},
        },
        {"type": "message_stop"},
    ]
    frames = [b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events]
    answer = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "".join(words)}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": n},
    }
    return Payload(orjson.dumps(answer), tuple(frames), 4)


def responses_payload(n: int) -> Payload:
    """A native Responses answer (built with ccx_asgi's own event builder, so it is valid)."""
    stream = ResponseStream(MODEL, {}, response_id="resp_bench")
    index = stream.open_item("message")
    for word in _words(n):
        stream.delta(index, word)
    stream.complete(usage_dict(25, n))
    events = stream.take()
    # created, in_progress, output_item.added, content_part.added, first delta
    return Payload(orjson.dumps(stream.response()), tuple(encode_event(e) for e in events), 5)


ENDPOINTS = {"/v1/chat/completions": chat_payload, "/v1/messages": claude_payload, "/v1/responses": responses_payload}


class FakeUpstream:
    """The fake as a raw ASGI app; see the module docstring. Counts requests per path."""

    def __init__(self, *, fast_chunks: int = FAST_CHUNKS, paced_chunks: int = PACED_CHUNKS) -> None:
        self.fast = {path: build(fast_chunks) for path, build in ENDPOINTS.items()}
        self.paced = {path: build(paced_chunks) for path, build in ENDPOINTS.items()}
        self.hits: Counter[str] = Counter()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Answer one request."""
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if scope["method"] == "GET" and path == "/__stats":
            await _answer(send, 200, orjson.dumps(dict(self.hits)))
            return
        paced = path.startswith("/paced/")
        payload = (self.paced if paced else self.fast).get(path[6:] if paced else path)
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.hits[path] += 1
        if payload is None or scope["method"] != "POST":
            await _answer(send, 404, b'{"error":{"message":"not found","type":"invalid_request_error"}}')
            return
        try:
            body = orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError:
            await _answer(send, 400, b'{"error":{"message":"invalid JSON","type":"invalid_request_error"}}')
            return
        if not isinstance(body, dict) or not body.get("stream"):
            await _answer(send, 200, payload.json)
            return
        await send({"type": "http.response.start", "status": 200, "headers": _SSE})
        if paced:
            await send(
                {"type": "http.response.body", "body": b"".join(payload.frames[: payload.burst]), "more_body": True}
            )
            for frame in payload.frames[payload.burst :]:
                await asyncio.sleep(PACED_INTERVAL)
                await send({"type": "http.response.body", "body": frame, "more_body": True})
        else:
            for frame in payload.frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [*_JSON, (b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    """Serve the fake on 127.0.0.1 (uvicorn with its fastest loop and parser)."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(FakeUpstream(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False, backlog=4096)


if __name__ == "__main__":
    main()
