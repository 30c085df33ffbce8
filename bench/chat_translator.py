"""Micro-benchmark: Chat Completions stream chunks translated to Responses events per second.

Run ``python bench/chat_translator.py``. A realistic answer (reasoning, text, two parallel tool
calls, a usage chunk) is translated many times; two numbers are printed:

- ``translate``: ``ChatStreamTranslator.feed`` on already-parsed chunk dicts (the state machine);
- ``parse+translate+encode``: the per-chunk work the endpoint does (``orjson.loads`` of the SSE data,
  the translator, and SSE encoding of every produced event).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ccx_asgi.convert.chat import ChatStreamTranslator
from ccx_asgi.sse import encode_event

TOOLS = [
    {"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {}}},
    {"type": "custom", "name": "apply_patch", "description": "Apply a patch."},
]


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1763900000,
        "model": "bench-model",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def transcript() -> list[dict[str, Any]]:
    """~1,400 chunks: 300 reasoning, 1,000 text, two tool calls of 50 fragments each, finish, usage."""
    chunks = [_chunk({"role": "assistant", "content": ""})]
    chunks += [_chunk({"reasoning_content": f"thinking step {i}. "}) for i in range(300)]
    chunks += [_chunk({"content": f"word{i} "}) for i in range(1000)]
    for index, name in enumerate(("exec_command", "apply_patch")):
        chunks.append(_chunk({"tool_calls": [{"index": index, "id": f"call_{index}", "type": "function",
                                              "function": {"name": name, "arguments": ""}}]}))  # fmt: skip
        arg = '{"input": "' if name == "apply_patch" else '{"cmd": "'
        chunks.append(_chunk({"tool_calls": [{"index": index, "function": {"arguments": arg}}]}))
        chunks += [_chunk({"tool_calls": [{"index": index, "function": {"arguments": "abcdefgh"}}]}) for _ in range(48)]
        chunks.append(_chunk({"tool_calls": [{"index": index, "function": {"arguments": '"}'}}]}))
    chunks.append(_chunk({}, "tool_calls"))
    usage = {"prompt_tokens": 5000, "completion_tokens": 1500, "prompt_tokens_details": {"cached_tokens": 4096}}
    chunks.append({**_chunk({}), "choices": [], "usage": usage})
    return chunks


def bench_translate(chunks: list[dict[str, Any]], rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        translator = ChatStreamTranslator("bench", {"tools": TOOLS})
        for data in chunks:
            translator.feed(data)
        translator.finish()
    return len(chunks) * rounds / (time.perf_counter() - start)


def bench_full(raw: list[bytes], rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        translator = ChatStreamTranslator("bench", {"tools": TOOLS})
        for data in raw:
            for event in translator.feed(orjson.loads(data)):
                encode_event(event)
        for event in translator.finish():
            encode_event(event)
    return len(raw) * rounds / (time.perf_counter() - start)


def main() -> None:
    """Run both measurements (best of ``--repeat``) and print chunks per second."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="transcripts per measurement")
    parser.add_argument("--repeat", type=int, default=5, help="measurements; the best is reported")
    args = parser.parse_args()
    chunks = transcript()
    raw = [orjson.dumps(c) for c in chunks]
    bench_translate(chunks, 2)  # warm-up
    translate = max(bench_translate(chunks, args.rounds) for _ in range(args.repeat))
    full = max(bench_full(raw, args.rounds) for _ in range(args.repeat))
    print(f"chunks per transcript: {len(chunks)}  (python {sys.version.split()[0]})")
    print(f"translate:               {translate:>10,.0f} chunks/s  ({1e6 / translate:.2f} µs/chunk)")
    print(f"parse+translate+encode:  {full:>10,.0f} chunks/s  ({1e6 / full:.2f} µs/chunk)")


if __name__ == "__main__":
    main()
