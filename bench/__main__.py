"""``python -m bench``: run the benchmark suite and print the report (see ``docs/performance.md``)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from bench.run import CHANNELS, Bench, Options


def parse(argv: list[str] | None = None) -> Options:
    """Command-line options → :class:`Options`."""
    parser = argparse.ArgumentParser(prog="python -m bench", description="ccx_asgi benchmark suite (loopback only).")
    parser.add_argument(
        "--quick", action="store_true", help="short run (about 5 minutes, mostly LiteLLM): fewer rounds, shorter loads"
    )
    parser.add_argument("--rounds", type=int, help="latency rounds per scenario (default 300, quick 60)")
    parser.add_argument("--duration", type=float, help="seconds per throughput point (default 1.0, quick 0.3)")
    parser.add_argument("--concurrency", help="comma-separated throughput concurrencies (default 1,16,64,256)")
    parser.add_argument("--streams", type=int, default=256, help="concurrent paced streams (default 256)")
    parser.add_argument("--stream-ramp", type=float, default=2.0, help="seconds over which the streams start")
    parser.add_argument("--channels", help=f"comma-separated channel types (default {','.join(CHANNELS)})")
    parser.add_argument(
        "--peer-max-concurrency", type=int, default=64, help="highest throughput concurrency for LiteLLM (default 64)"
    )
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM arm")
    parser.add_argument("--no-install", action="store_true", help="do not create the LiteLLM venv if it is missing")
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to skip: latency, streams, throughput (translator always runs)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results to this JSON file")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="latency: no unmeasured request to the same arm before each measured one (measures idle wake-ups too)",
    )
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    options = Options()
    if args.quick:
        options.rounds, options.warmup, options.duration, options.translator_deltas = 60, 10, 0.3, 5000
    if args.rounds:
        options.rounds = args.rounds
    if args.duration:
        options.duration = args.duration
    if args.concurrency:
        options.concurrency = tuple(int(c) for c in args.concurrency.split(","))
    if args.channels:
        wanted = tuple(c.strip() for c in args.channels.split(",") if c.strip())
        unknown = set(wanted) - set(CHANNELS)
        if unknown:
            parser.error(f"unknown channel types: {', '.join(sorted(unknown))}")
        options.channels = wanted
    options.streams = args.streams
    options.stream_ramp = args.stream_ramp
    options.peer_max_concurrency = args.peer_max_concurrency
    options.litellm = not args.no_litellm
    options.install = not args.no_install
    options.latency = "latency" not in skip
    options.concurrent_streams = "streams" not in skip
    options.throughput = "throughput" not in skip
    options.json_path = args.json
    options.warm_shot = not args.cold
    return options


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark."""
    options = parse(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(Bench(options).run())
    else:
        uvloop.run(Bench(options).run())


if __name__ == "__main__":
    main()
