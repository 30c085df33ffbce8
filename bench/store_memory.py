"""``python -m bench.store_memory``: resident memory while the gateway stores many responses.

Sends ``--requests`` non-streaming requests (default 10,000), each with about ``--input-kb`` KB of
input (default 3), through the whole app in process (``httpx.ASGITransport``) to the built-in demo
channel, every one stored (``store`` absent). The store is bounded at ``--max-entries`` (default
1,000). Every ``--every`` requests it prints the process RSS, the stored count and the store's
weight, so one sees the growth stop once the bound is reached. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time

import httpx

from bench.procs import rss_bytes
from ccx_asgi import ChannelConfig, create_app, load_settings
from ccx_asgi.state import MemoryBlobStore


async def run(requests: int, input_kb: int, max_entries: int, every: int) -> None:
    """Run the loop and print one line per ``every`` requests."""
    settings = load_settings(
        channels=[ChannelConfig(name="demo", service_type="demo")],
        response_store_max_entries=max_entries,
        response_store_max_mb=64,
    )
    app = create_app(settings)
    store, items = app.responses_store.responses, app.responses_store.items
    assert isinstance(store, MemoryBlobStore) and isinstance(items, MemoryBlobStore)
    filler = "lorem ipsum dolor sit amet " * (input_kb * 1024 // 27)
    print(f"{requests} stored responses, ~{input_kb} KB input each, bound {max_entries} entries")
    print("| requests | RSS (MB) | responses held | their bytes (MB) | items held | s |")
    print("|---:|---:|---:|---:|---:|---:|")
    started = time.perf_counter()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        previous = None
        for n in range(1, requests + 1):
            body = {"model": "demo", "input": f"turn {n}: {filler}"}
            if previous is not None and n % 2 == 0:
                body["previous_response_id"] = previous  # every other turn continues the last one
            answer = await client.post("/responses", json=body)
            answer.raise_for_status()
            previous = answer.json()["id"]
            if n % every == 0:
                gc.collect()
                rss = rss_bytes(os.getpid()) / 1e6
                elapsed = time.perf_counter() - started
                held = store.held_bytes / 1e6
                print(f"| {n} | {rss:.1f} | {len(store)} | {held:.1f} | {len(items)} | {elapsed:.1f} |")
    await app.aclose()


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.store_memory", description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--input-kb", type=int, default=3)
    parser.add_argument("--max-entries", type=int, default=1_000)
    parser.add_argument("--every", type=int, default=1_000)
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.input_kb, args.max_entries, args.every))


if __name__ == "__main__":
    main()
