"""``python -m bench.profile``: sample the standalone gateway under load with py-spy and summarise.

It starts the fake upstream and ``python -m ccx_asgi`` (as ``python -m bench`` does), attaches
py-spy (from the LiteLLM/bench venv, never the project's) to the gateway, drives one scenario at a
fixed concurrency, and prints the functions with the most samples: by self time (the frame on top)
and inclusive (anywhere on the stack). The raw collapsed stacks are kept for flame graphs.

    python -m bench.profile --channel responses --stream --kind codex --seconds 8
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench import peer
from bench.client import Connection
from bench.procs import free_port, python_module, start
from bench.run import CCX_KEY, CHANNELS, Arm, request_bytes


def summarise(raw: Path, top: int) -> str:
    """Self and inclusive sample counts per function from py-spy's collapsed (``raw``) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].split("/")[-1] + ")" if " (" in f else f
                  for f in stack.split(";")]  # fmt: skip
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "self time:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


async def drive(arm: Arm, raw: bytes, concurrency: int, seconds: float) -> int:
    """Closed-loop load for ``seconds``; returns the number of requests answered 200."""
    deadline = time.perf_counter() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        conn = Connection(arm.port)
        while time.perf_counter() < deadline:
            result = await conn.request(raw)
            done += result.status == 200
        await conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def main() -> None:
    """Profile one scenario."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--channel", choices=CHANNELS, default="responses")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--kind", choices=("tiny", "codex"), default="tiny")
    parser.add_argument("--paced", action="store_true", help="use the fake's paced streams (one chunk per read)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "ccx-bench-profile.txt")
    args = parser.parse_args()
    bin_dir, note = peer.ensure_venv()
    if bin_dir is None or not (bin_dir / "py-spy").exists():
        raise SystemExit(f"py-spy is not available: {note}")
    fake_port, ccx_port = free_port(), free_port()
    fake = start("fake", python_module("bench.fakes", "--port", str(fake_port)), port=fake_port, ready_path="/")
    import json

    channels = [
        {
            "name": args.channel,
            "service_type": args.channel,
            "base_url": f"http://127.0.0.1:{fake_port}{'/paced' if args.paced else ''}/v1",
            "api_keys": ["sk-bench-upstream"],
            "models": [f"bench-{args.channel}", f"bench-{args.channel}-paced"],
            "model_map": {f"bench-{args.channel}": "bench-model"},
        }
    ]
    env = {"CCX_CHANNELS": json.dumps(channels), "CCX_PORT": str(ccx_port), "CCX_PROXY_ACCESS_KEY": CCX_KEY}
    ccx = start("ccx", python_module("ccx_asgi"), port=ccx_port, env=env, ready_path="/v1/models")
    try:
        arm = Arm("ccx", ccx_port, ccx, {"authorization": f"Bearer {CCX_KEY}"})
        raw = request_bytes(arm, args.channel, stream=args.stream or args.paced, kind=args.kind, paced=args.paced)
        asyncio.run(drive(arm, raw, args.concurrency, 1.0))  # warm up
        spy = subprocess.Popen(
            [str(bin_dir / "py-spy"), "record", "--pid", str(ccx.pid), "--duration", str(int(args.seconds)),
             "--rate", "500", "--format", "raw", "--output", str(args.out), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        done = asyncio.run(drive(arm, raw, args.concurrency, args.seconds + 0.5))
        _, err = spy.communicate(timeout=60)
        if spy.returncode != 0:
            raise SystemExit(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
    finally:
        ccx.stop()
        fake.stop()
    mode = "stream" if args.stream else "json"
    print(f"# {args.channel} {mode} {args.kind}, concurrency {args.concurrency}, {done} requests; raw: {args.out}")
    print(summarise(args.out, args.top))


if __name__ == "__main__":
    main()
