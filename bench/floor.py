"""``python -m bench.floor``: where a gateway's added latency goes, one layer at a time.

Starts the fake upstream and four relays in front of its Chat endpoint, plus the standalone
gateway with a chat channel, and measures their added latency side by side (sequential requests,
arms interleaved, like ``python -m bench``):

- ``starlette+httpx``: ``bench/relay.py``, the issue's yardstick;
- ``asgi+httpx``: a raw ASGI relay on the same httpx client (what Starlette costs);
- ``asgi+ccx-client``: a raw ASGI relay on ccx's upstream client, an ``httpx.AsyncClient`` on
  ``ccx_asgi.upstream.AiohttpTransport`` (the floor ccx sits on);
- ``asgi+aiohttp``: a raw ASGI relay on a plain ``aiohttp.ClientSession`` (what the httpx layer of
  ccx's client costs);
- ``asgi-only``: a raw ASGI app that parses the body and answers precomputed bytes with no upstream
  call (what one more uvicorn hop costs);
- ``ccx``: ``python -m ccx_asgi``, ``POST /v1/responses`` converted to Chat.

``ccx`` minus ``asgi+ccx-client`` is what the gateway's own work costs (auth, parsing and converting
the request and the answer, failover, the request log). Run ``python -m bench.floor [--kind codex]
[--stream] [--rounds N]``; a relay alone is ``python -m bench.floor --serve VARIANT --port N
--upstream URL``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

VARIANTS = ("starlette+httpx", "asgi+httpx", "asgi+ccx-client", "asgi+aiohttp", "asgi-only")
_CCX_KEY = "sk-floor-" + "0" * 24
_JSON_STR = [("content-type", "application/json")]


def _start(status: int, content_type: bytes) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]}


async def _read_body(receive: Any) -> bytes:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


async def _lifespan(receive: Any, send: Any, close: Any) -> None:
    """Answer the server's lifespan messages; ``close()`` (a coroutine function) runs at shutdown,
    so a relay's upstream client is closed rather than left to the garbage collector."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _forward(send: Any, response: Any, chunks: AsyncIterator[bytes]) -> None:
    """Send an upstream answer on as it arrives (either client's response), then close it."""
    try:
        await send(_start(response.status_code, response.headers["content-type"].encode()))
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        await response.aclose()
    await send({"type": "http.response.body", "body": b""})


def _app(variant: str, upstream: str) -> Any:
    """The ASGI app of one relay variant."""
    if variant == "starlette+httpx":
        from bench.relay import build_relay

        return build_relay(upstream)
    if variant == "asgi-only":
        import orjson

        from bench.fakes import chat_payload

        payload = chat_payload(20).json

        async def answer(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            orjson.loads(await _read_body(receive))
            await send(_start(200, b"application/json"))
            await send({"type": "http.response.body", "body": payload})

        return answer
    if variant == "asgi+httpx":
        import httpx

        client = httpx.AsyncClient(base_url=upstream, trust_env=False)

        async def relay_httpx(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                await _lifespan(receive, send, client.aclose)
                return
            if scope["type"] != "http":
                return
            body = await _read_body(receive)
            request = client.build_request("POST", scope["path"], content=body, headers=dict(_JSON_STR))
            response = await client.send(request, stream=True)
            await _forward(send, response, response.aiter_raw())

        return relay_httpx
    if variant == "asgi+ccx-client":
        import httpx

        from ccx_asgi.upstream import AiohttpTransport

        ccx_client = httpx.AsyncClient(transport=AiohttpTransport(), trust_env=False)
        urls: dict[str, httpx.URL] = {}

        async def relay_ccx_client(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                await _lifespan(receive, send, ccx_client.aclose)
                return
            if scope["type"] != "http":
                return
            body = await _read_body(receive)
            url = urls.get(scope["path"]) or urls.setdefault(scope["path"], httpx.URL(upstream + scope["path"]))
            # As ccx_asgi.upstream sends: a prebuilt URL, an httpx.Request without the client's merging.
            request = httpx.Request("POST", url, content=body, headers=_JSON_STR)
            response = await ccx_client.send(request, stream=True)
            await _forward(send, response, response.aiter_raw())

        return relay_ccx_client
    if variant == "asgi+aiohttp":
        import aiohttp

        sessions: list[aiohttp.ClientSession] = []  # made on the server's loop

        async def close_sessions() -> None:
            for session in sessions:
                await session.close()

        async def relay_aiohttp(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                await _lifespan(receive, send, close_sessions)
                return
            if scope["type"] != "http":
                return
            if not sessions:
                sessions.append(aiohttp.ClientSession(base_url=upstream, cookie_jar=aiohttp.DummyCookieJar()))
            body = await _read_body(receive)
            response = await sessions[0].post(scope["path"], data=body, headers=dict(_JSON_STR))
            try:
                await send(_start(response.status, response.headers["content-type"].encode()))
                async for chunk in response.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            finally:
                response.release()
            await send({"type": "http.response.body", "body": b""})

        return relay_aiohttp
    raise SystemExit(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")


def _serve(variant: str, port: int, upstream: str) -> None:
    import uvicorn

    uvicorn.run(_app(variant, upstream), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def main() -> None:
    """Start everything, measure, print one table."""
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("tiny", "codex"), default="tiny")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--serve", choices=VARIANTS, help="serve one relay variant instead of measuring")
    parser.add_argument("--port", type=int)
    parser.add_argument("--upstream")
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.port, args.upstream)
        return

    import uvloop

    from bench.procs import free_port, python_module, start
    from bench.run import Arm, latency, request_bytes

    servers = []
    try:
        port = free_port()
        fake = start("fake", python_module("bench.fakes", "--port", str(port)), port=port, ready_path="/")
        servers.append(fake)
        upstream = f"http://127.0.0.1:{port}"
        arms = [Arm("direct", port, fake, gateway=False)]
        raws = {"direct": request_bytes(arms[0], "chat", stream=args.stream, kind=args.kind)}
        for variant in VARIANTS:
            port = free_port()
            argv = python_module("bench.floor", "--serve", variant, "--port", str(port), "--upstream", upstream)
            server = start(variant, argv, port=port, ready_path="/")
            servers.append(server)
            arm = Arm("relay", port, server)  # "relay" asks for the native path and model
            raws[variant] = request_bytes(arm, "chat", stream=args.stream, kind=args.kind)
            arm.name = variant
            arms.append(arm)
        port = free_port()
        channel = {"name": "chat", "service_type": "chat", "base_url": f"{upstream}/v1", "api_keys": ["sk-up"],
                   "models": ["bench-chat"], "model_map": {"bench-chat": "bench-model"}}  # fmt: skip
        env = {"CCX_CHANNELS": json.dumps([channel]), "CCX_PORT": str(port), "CCX_PROXY_ACCESS_KEY": _CCX_KEY}
        server = start("ccx", python_module("ccx_asgi"), port=port, env=env, ready_path="/v1/models")
        servers.append(server)
        arms.append(Arm("ccx", port, server, {"authorization": f"Bearer {_CCX_KEY}"}))
        raws["ccx"] = request_bytes(arms[-1], "chat", stream=args.stream, kind=args.kind)
        results = uvloop.run(latency(arms, raws, args.rounds, 30))
    finally:
        for server in reversed(servers):
            server.stop()
    base = results["direct"]["p50"]
    mode = "stream" if args.stream else "json"
    print(f"chat {args.kind} {mode}, {args.rounds} rounds; added = p50 - direct p50 ({base * 1000:.3f} ms)")
    print("| arm | p50 ms | added p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|")
    for name, row in results.items():
        if not row.get("n"):
            print(f"| {name} | - | - | - | {row['errors']} |")
            continue
        added = "-" if name == "direct" else f"{(row['p50'] - base) * 1000:.3f}"
        print(f"| {name} | {row['p50'] * 1000:.3f} | {added} | {row['p99'] * 1000:.3f} | {row['errors']} |")
    if all(results.get(k, {}).get("n") for k in ("ccx", "asgi+ccx-client", "asgi+aiohttp")):
        own = (results["ccx"]["p50"] - results["asgi+ccx-client"]["p50"]) * 1000
        layer = (results["asgi+ccx-client"]["p50"] - results["asgi+aiohttp"]["p50"]) * 1000
        print(f"ccx's own work (ccx - asgi+ccx-client): {own:.3f} ms")
        print(f"the httpx layer of ccx's client (asgi+ccx-client - asgi+aiohttp): {layer:.3f} ms")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
