"""The stream translator micro-benchmark: upstream SSE bytes in, encoded Responses frames out.

It runs, on one core and in process, exactly the per-chunk work of
:class:`~ccx_asgi.channels.endpoint.ChannelEndpoint`'s stream loop: ``SSEParser.feed`` on each
network chunk, ``orjson.loads`` of each ``data:`` field, the channel's translator ``feed``, and
``encode_event`` of every produced event. Each upstream frame arrives as its own chunk, as it does
from a streaming upstream. It reports upstream chunks per second, and the same loop stopped after
each stage so one sees where the time goes.

Translators are found through the adapters registered in ``ccx_asgi.channels.endpoint.ADAPTERS``
(``adapter.translator(ctx, attempt)``), so the Chat and Claude translators are measured as soon as
their adapters exist; before that, a ``*Translator`` class in ``ccx_asgi.convert.chat`` /
``ccx_asgi.convert.claude`` is tried, and otherwise the type is skipped with a note.
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from bench.fakes import chat_payload, claude_payload, responses_payload
from ccx_asgi.sse import SSEParser, encode_event

PAYLOADS = {"responses": responses_payload, "chat": chat_payload, "claude": claude_payload}
STAGES = ("parse", "parse+json", "parse+json+translate", "full")


@dataclass
class TranslatorResult:
    """Chunks per second by stage (best of the repeats) and how many events the full loop produced."""

    channel: str
    source: str
    chunks: int
    events: int
    per_second: dict[str, float]


def _request_context() -> tuple[Any, Any]:
    from ccx_asgi.context import Attempt, RequestContext
    from ccx_asgi.settings import ChannelConfig

    body = {"model": "bench", "input": "hi", "stream": True}
    ctx = RequestContext.from_body(body, request_id="req_bench", headers=[])
    return ctx, lambda channel: Attempt(
        ChannelConfig(name=channel, service_type=channel, base_url="http://127.0.0.1:9/v1"),
        "bench-model",
        None,
        0,
        body,
    )


def find_translator(channel: str) -> tuple[Callable[[], Any] | None, str]:
    """A factory of fresh translators for ``channel`` and where it came from (or a skip note)."""
    from ccx_asgi.channels.endpoint import ADAPTERS

    ctx, make_attempt = _request_context()
    adapter = ADAPTERS.get(channel)
    if adapter is not None:
        attempt = make_attempt(channel)
        return (lambda: adapter.translator(ctx, attempt)), f"{type(adapter).__name__}.translator()"
    try:
        module = importlib.import_module(f"ccx_asgi.convert.{channel}")
    except ImportError:
        return None, f"no adapter for {channel!r} and no ccx_asgi.convert.{channel} module yet"
    for name, cls in vars(module).items():
        if inspect.isclass(cls) and name.endswith("Translator") and hasattr(cls, "feed") and hasattr(cls, "finish"):
            for args in (("bench",), ("bench", ctx.body), ()):
                try:
                    cls(*args)
                except TypeError:
                    continue
                return (lambda cls=cls, args=args: cls(*args)), f"ccx_asgi.convert.{channel}.{name}"
    return None, f"no *Translator class with feed()/finish() in ccx_asgi.convert.{channel}"


def _run(frames: tuple[bytes, ...], make: Callable[[], Any], stage: str) -> tuple[float, int]:
    parser = SSEParser()
    translator = make()
    loads = orjson.loads
    do_json = stage != "parse"
    do_translate = stage in ("parse+json+translate", "full")
    do_encode = stage == "full"
    out: list[bytes] = []
    events = 0
    start = time.perf_counter()
    for chunk in frames:
        for sse in parser.feed(chunk):
            data = sse.data
            if not do_json or not data or data == "[DONE]":
                continue
            parsed = loads(data)
            if not do_translate:
                continue
            produced = translator.feed(parsed)
            events += len(produced)
            if do_encode:
                out.extend(encode_event(e) for e in produced)
    if do_translate:
        tail = translator.finish()
        events += len(tail)
        if do_encode:
            out.extend(encode_event(e) for e in tail)
    return time.perf_counter() - start, events


def measure(channel: str, *, deltas: int, repeats: int) -> TranslatorResult | str:
    """Chunks per second for ``channel``'s translator, or a note why it was skipped."""
    make, source = find_translator(channel)
    if make is None:
        return source
    frames = PAYLOADS[channel](deltas).frames
    rates: dict[str, float] = {}
    events = 0
    for stage in STAGES:
        best = min(_run(frames, make, stage)[0] for _ in range(repeats))
        rates[stage] = len(frames) / best
    events = _run(frames, make, "full")[1]
    return TranslatorResult(channel, source, len(frames), events, rates)
