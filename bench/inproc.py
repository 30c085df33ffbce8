"""``python -m bench.inproc``: the gateway's own cost per request, in process and without sockets.

The whole ``CCXApp`` (auth, model mapper, request record, failover, conversion, the httpx client,
the stream loop, the request log and metrics) is driven with raw ASGI calls, and the upstream is an
in-process httpx transport answering the bench fake's precomputed payloads. What remains is what
ccx_asgi and httpx's client layers cost; uvicorn, httpcore and the kernel are left out, so small
changes in the gateway show up clearly (the full bench measures them against the whole stack).

    python -m bench.inproc --channel chat --kind codex            # µs per request
    python -m bench.inproc --channel chat --stream --profile      # plus a cProfile summary
    python -m bench.inproc --channel chat --stream --burst        # the stream in one upstream read

Combine with py-spy for a profile without cProfile's overhead:
``py-spy record --format raw -o out.txt -- python -m bench.inproc …``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from bench import fakes
from bench.run import CHANNELS, codex_body, tiny_body
from ccx_asgi import ChannelConfig, create_app, load_settings
from ccx_asgi.app import CCXApp
from ccx_asgi.types import Message


class _Fake(httpx.AsyncBaseTransport):
    """Answers every request with ``payload``: its stream when the body asks for one, else its JSON.

    A stream comes one frame per chunk (a paced upstream: one token per read), or with ``burst``
    all in one chunk (what a fast upstream's burst is to a socket read).
    """

    def __init__(self, payload: fakes.Payload, *, burst: bool = False) -> None:
        self.payload = payload
        self.frames = (b"".join(payload.frames),) if burst else payload.frames

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # ccx sends compact JSON (orjson); a substring test keeps the fake's own cost out of the numbers.
        if b'"stream":true' in await request.aread():
            return httpx.Response(200, headers=[(b"content-type", b"text/event-stream")], stream=_Frames(self.frames))
        return httpx.Response(200, headers=[(b"content-type", b"application/json")], content=self.payload.json)


class _Frames(httpx.AsyncByteStream):
    def __init__(self, frames: tuple[bytes, ...]) -> None:
        self.frames = frames

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for frame in self.frames:
            yield frame


def build(channel: str, *, burst: bool = False) -> CCXApp:
    """The app with one channel of type ``channel`` at the in-process fake (``burst``: see :class:`_Fake`)."""
    payload = {
        "chat": fakes.chat_payload,
        "claude": fakes.claude_payload,
        "responses": fakes.responses_payload,
    }[channel](fakes.FAST_CHUNKS)
    config = ChannelConfig.model_validate(
        {
            "name": channel,
            "service_type": channel,
            "base_url": "http://fake.test/v1",
            "api_keys": ["sk-bench-upstream"],
            "models": [f"bench-{channel}"],
            "model_map": {f"bench-{channel}": "bench-model"},
        }
    )
    return create_app(
        load_settings(channels=[config], proxy_access_key="sk-ccx-bench"), transport=_Fake(payload, burst=burst)
    )


async def drive(app: CCXApp, body: bytes, stream: bool, count: int) -> float:
    """Serve ``count`` requests one after the other; returns the seconds taken."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/responses",
        "raw_path": b"/v1/responses",
        "root_path": "/v1",
        "query_string": b"",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5555),
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"accept", b"text/event-stream" if stream else b"application/json"),
            (b"authorization", b"Bearer sk-ccx-bench"),
            (b"content-length", str(len(body)).encode()),
            (b"user-agent", b"bench"),
        ],
    }

    async def one() -> None:
        delivered = False
        never = asyncio.Event()

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await never.wait()  # the client stays connected
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] != 200:
                raise RuntimeError(f"HTTP {message['status']}")

        await app(dict(scope), receive, send)

    started = time.perf_counter()
    for _ in range(count):
        await one()
        # A server's loop runs between requests (the next one arrives on a socket): without this,
        # nothing here ever suspends, and tasks a request leaves to the loop (its cancelled
        # disconnect watcher) would pile up for the whole run.
        await asyncio.sleep(0)
    return time.perf_counter() - started


def main() -> None:
    """Measure (and optionally profile) one scenario."""
    parser = argparse.ArgumentParser(prog="python -m bench.inproc", description=__doc__.splitlines()[0])
    parser.add_argument("--channel", choices=CHANNELS, default="chat")
    parser.add_argument("--kind", choices=("tiny", "codex"), default="tiny")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--burst", action="store_true", help="a stream's frames in one chunk (default: one per chunk)")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3, help="report the best of this many runs")
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary of one more run")
    args = parser.parse_args()
    app = build(args.channel, burst=args.burst)
    model = f"bench-{args.channel}"
    data = (
        codex_body(model, args.stream)
        if args.kind == "codex"
        else tiny_body(args.channel, model, args.stream, native=False)
    )
    body = orjson.dumps(data)

    async def run() -> None:
        await drive(app, body, args.stream, 200)  # warm up
        best = min([await drive(app, body, args.stream, args.requests) for _ in range(args.repeats)])
        mode = ("burst stream" if args.burst else "stream") if args.stream else "json"
        print(f"{args.channel} {args.kind} {mode}: {best / args.requests * 1e6:.1f} us/request in process")
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            await drive(app, body, args.stream, args.requests)
            profile.disable()
            pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
        await app.aclose()

    asyncio.run(run())


if __name__ == "__main__":
    main()
