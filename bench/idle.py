"""``python -m bench.idle``: how much slower each arm answers after it has idled (this VM's wake-up).

Starts the fake, the relay and ccx (no LiteLLM) for one channel type and, for each arm, sends 40
sequential requests after each idle gap, printing the median total time in ms. It is why
``python -m bench`` measures each latency request right after an unmeasured one to the same arm.

    python -m bench.idle [--channel chat] [--kind tiny|codex] [--stream]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

from bench.client import Connection
from bench.run import CHANNELS, Bench, Options, request_bytes

GAPS = (0.0, 0.002, 0.005, 0.01, 0.02, 0.05)


async def _run(channel: str, kind: str, stream: bool, requests: int) -> None:
    bench = Bench(Options(channels=(channel,), litellm=False))
    arms = bench.start_servers()
    try:
        print("| arm | " + " | ".join(f"{gap * 1000:g} ms idle" for gap in GAPS) + " |")
        print("|---" * (len(GAPS) + 1) + "|")
        for arm in arms:
            raw = request_bytes(arm, channel, stream=stream, kind=kind)
            conn = Connection(arm.port)
            for _ in range(50):
                await conn.request(raw)
            medians = []
            for gap in GAPS:
                times = []
                for _ in range(requests):
                    if gap:
                        await asyncio.sleep(gap)
                    times.append((await conn.request(raw)).total * 1000)
                medians.append(f"{statistics.median(times):.2f}")
            await conn.close()
            print(f"| {arm.name} | " + " | ".join(medians) + " |")
    finally:
        bench.stop_servers()


def main() -> None:
    """Measure and print one table."""
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__.splitlines()[0])
    parser.add_argument("--channel", choices=CHANNELS, default="chat")
    parser.add_argument("--kind", choices=("tiny", "codex"), default="tiny")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    asyncio.run(_run(args.channel, args.kind, args.stream, args.requests))


if __name__ == "__main__":
    main()
