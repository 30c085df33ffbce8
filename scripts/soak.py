"""Soak test: mixed traffic with random upstream faults against a real gateway process, on loopback.

The gateway runs as ``python -m ccx_asgi`` in a child process (so its memory is measured alone);
a misbehaving fake upstream (``tests/fakes/hostile_upstream.py``) runs on uvicorn in this process.
Two channels point at it: channel ``a`` misbehaves as each request asks (``x-soak-fault``), channel
``b`` is healthy, so faults before the commit must fail over and faults after it must end the
stream with ``response.failed``. Every stream is validated with the openai SDK's types. Anything
that differs from the expected outcome of the injected fault is counted as unexpected.

    python scripts/soak.py --minutes 30 --out soak.json

Run from the repository root with the test extra installed. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.hostile_upstream import HostileUpstream, Plan, text_events  # noqa: E402
from tests.sdk import parse_sse, validate_events, validate_response  # noqa: E402
from tests.servers import free_port, serve  # noqa: E402

PROXY_KEY = "soak-proxy-key-0000000000000000"
UPSTREAM_KEY = "sk-soak-upstream-1111111111111111"

#: fault -> (weight, streaming outcome, non-streaming outcome); None = not used without streaming.
FAULTS: dict[str, tuple[int, str, str | None]] = {
    "none": (50, "completed", "ok"),
    "garbage": (5, "completed", None),  # malformed JSON lines, [DONE], non-object JSON between events
    "slow": (5, "completed", "ok"),
    "status_500": (7, "completed_failover", "ok_failover"),
    "status_429": (5, "completed_failover", "ok_failover"),
    "stall_headers": (3, "completed_failover", "ok_failover"),
    "cut_prelude": (5, "completed_failover", None),
    "cut_after_commit": (7, "failed_in_stream", None),
    "idle_after_commit": (3, "failed_in_stream", None),
    "vanish": (10, "vanished", None),
}


def plan(body: dict[str, Any], headers: dict[str, str]) -> Plan:
    """Channel ``a`` does what the request's ``x-soak-fault`` asks; channel ``b`` always answers."""
    events = text_events("soak answer " * random.randint(1, 20), pieces=random.randint(1, 12))
    fault = headers.get("x-soak-fault", "none") if headers.get("x-which") == "a" else "none"
    if fault == "status_500":
        return Plan(status=500, error={"error": {"message": "internal error", "type": "server_error"}})
    if fault == "status_429":
        return Plan(status=429, error={"error": {"message": "rate limited"}}, headers=[(b"retry-after", b"1")])
    if fault == "stall_headers":
        return Plan(stall_before_headers=True)
    if fault == "cut_prelude":
        return Plan(events=events[:2])
    # events: created, in_progress, the message item, its content part, then the text deltas. Only
    # real content commits a stream (docs/routing.md): cut or stall right after the first delta.
    if fault == "cut_after_commit":
        return Plan(events=events[:5])
    if fault == "idle_after_commit":
        return Plan(events=events, stall_after=5)
    if fault == "slow":
        return Plan(events=events, delay=0.03)
    if fault == "garbage":
        noisy: list[dict[str, Any] | bytes] = []
        for event in events:
            noisy.append(random.choice([b"data: {broken\n\n", b"data: [DONE]\n\n", b"data: 42\n\n", b": ping\n\n"]))
            noisy.append(event)
        return Plan(events=noisy)
    return Plan(events=events, delay=0.002 if fault == "vanish" else 0.0)


def channels(upstream_url: str) -> bytes:
    base = {"service_type": "responses", "base_url": upstream_url + "/v1", "api_keys": [UPSTREAM_KEY]}
    timeouts = {"first_byte_timeout": 2.0, "idle_timeout": 2.0, "connect_timeout": 2.0}
    return orjson.dumps(
        [
            {"name": "a", **base, **timeouts, "headers": {"x-which": "a"}},
            {"name": "b", **base, **timeouts, "headers": {"x-which": "b"}},
        ]
    )


def start_gateway(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``python -m ccx_asgi`` with ``env``, logging to ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "ccx_asgi"], env=env, cwd=ROOT, stderr=log, stdout=log)


def read_log(path: Path) -> str:
    """The gateway's log."""
    return path.read_text(errors="replace")


def memory(pid: int) -> tuple[float, int]:
    """RSS in MiB and open file descriptors of ``pid``."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


async def one(client: httpx.AsyncClient, stream: bool, fault: str) -> str:
    """Send one request with ``fault``; return the observed outcome."""
    body = {"model": "soak-model", "input": "hello", "stream": stream}
    headers = {"x-soak-fault": fault}
    if fault == "vanish":
        async with client.stream("POST", "/v1/responses", json=body, headers=headers) as response:
            async for _ in response.aiter_bytes():
                break
        return "vanished"
    response = await client.post("/v1/responses", json=body, headers=headers)
    if response.status_code != 200:
        return f"http_{response.status_code}"
    failover = "_failover" if response.headers.get("x-ccx-attempts") == "2" else ""
    if not stream:
        validate_response(response.json())
        return "ok" + failover
    events = parse_sse(response.content)
    validate_events(events)
    if events[-1]["type"] == "response.completed":
        return "completed" + failover
    return "failed_in_stream"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    upstream = HostileUpstream(plan=plan)
    rng = random.Random(args.seed)
    names = list(FAULTS)
    weights = [FAULTS[n][0] for n in names]
    with serve(upstream, lifespan="off") as upstream_url:
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CCX_")},
            "CCX_PROXY_ACCESS_KEY": PROXY_KEY,
            "CCX_CHANNELS": channels(upstream_url).decode(),
            "CCX_HOST": "127.0.0.1",
            "CCX_PORT": str(port),
            # The soak checks what happens to each request given its fault, so channel `a` must be
            # tried first every time: its circuit never opens and a Retry-After never parks its key.
            # Routing around a failing channel is tested in tests/test_breaker.py and tests/test_routing.py.
            "CCX_BREAKER_FAILURE_THRESHOLD": "1000000000",
            "CCX_BREAKER_MIN_REQUESTS": "1000000000",
            "CCX_MAX_RETRY_AFTER": "0",
        }
        log_path = Path(args.log)
        gateway = start_gateway(env, log_path)
        try:
            base = f"http://127.0.0.1:{port}"
            limits = httpx.Limits(max_connections=args.concurrency * 2, max_keepalive_connections=args.concurrency)
            async with httpx.AsyncClient(
                base_url=base, headers={"authorization": f"Bearer {PROXY_KEY}"}, timeout=30, limits=limits
            ) as client:
                for _ in range(100):
                    try:
                        await client.get("/v1/models")
                        break
                    except httpx.ConnectError:
                        await asyncio.sleep(0.1)
                counts: Counter[str] = Counter()
                unexpected: Counter[str] = Counter()
                examples: list[str] = []
                samples: list[dict[str, float]] = []
                started = time.monotonic()
                deadline = started + args.minutes * 60

                async def worker() -> None:
                    while time.monotonic() < deadline:
                        fault = rng.choices(names, weights)[0]
                        stream = FAULTS[fault][2] is None or rng.random() < 0.8
                        expected = FAULTS[fault][1] if stream else FAULTS[fault][2]
                        try:
                            outcome = await one(client, stream, fault)
                        except Exception as exc:  # every surprise is counted, none stops the soak
                            outcome = f"exception:{type(exc).__name__}"
                            if len(examples) < 20:
                                examples.append(f"{fault}/{stream}: {exc!r}"[:300])
                        counts[f"{fault}/{'stream' if stream else 'json'} -> {outcome}"] += 1
                        if outcome != expected:
                            unexpected[f"{fault}: expected {expected}, got {outcome}"] += 1

                async def sampler() -> None:
                    while time.monotonic() < deadline:
                        rss, fds = memory(gateway.pid)
                        done = sum(counts.values())
                        samples.append(
                            {"t": round(time.monotonic() - started, 1), "rss_mib": rss, "fds": fds, "requests": done}
                        )
                        print(f"t={samples[-1]['t']:7.1f}s rss={rss:7.1f} MiB fds={fds:4d} requests={done}", flush=True)
                        await asyncio.sleep(args.sample)

                await asyncio.gather(sampler(), *(worker() for _ in range(args.concurrency)))
                await asyncio.sleep(2)  # let vanished streams and timers wind down
                rss, fds = memory(gateway.pid)
                samples.append(
                    {
                        "t": round(time.monotonic() - started, 1),
                        "rss_mib": rss,
                        "fds": fds,
                        "requests": sum(counts.values()),
                    }
                )
        finally:
            gateway.terminate()
            gateway.wait(timeout=10)
    log_text = read_log(log_path)
    return {
        "minutes": args.minutes,
        "concurrency": args.concurrency,
        "requests": sum(counts.values()),
        "requests_per_second": round(sum(counts.values()) / (args.minutes * 60), 1),
        "unexpected": dict(unexpected),
        "unexpected_examples": examples,
        "outcomes": dict(sorted(counts.items())),
        "upstream_requests": upstream.served,
        "upstream_streams_open_at_end": upstream.active,
        "gateway_log_errors": sum("ERROR" in line or "Traceback" in line for line in log_text.splitlines()),
        "secrets_in_gateway_log": any(k in log_text for k in (PROXY_KEY, UPSTREAM_KEY)),
        "rss_mib": summarize([s["rss_mib"] for s in samples], [s["t"] for s in samples]),
        "fds": {"first": samples[0]["fds"], "last": samples[-1]["fds"], "max": max(s["fds"] for s in samples)},
        "samples": samples,
    }


def summarize(values: list[float], times: list[float]) -> dict[str, float]:
    """First/last/max and the least-squares slope (MiB per minute) after the first fifth (warm-up)."""
    skip = len(values) // 5
    vs, ts = values[skip:], times[skip:]
    mean_t, mean_v = sum(ts) / len(ts), sum(vs) / len(vs)
    var = sum((t - mean_t) ** 2 for t in ts) or 1.0
    slope = sum((t - mean_t) * (v - mean_v) for t, v in zip(ts, vs, strict=True)) / var * 60
    return {
        "first": round(values[0], 1),
        "after_warmup": round(vs[0], 1),
        "last": round(values[-1], 1),
        "max": round(max(values), 1),
        "slope_mib_per_min_after_warmup": round(slope, 3),
    }


def main() -> None:
    """Parse arguments, run the soak and print (and optionally save) the summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to run (default 30)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between memory samples")
    parser.add_argument("--seed", type=int, default=8, help="random seed for the traffic mix")
    parser.add_argument("--out", help="write the JSON summary (with all samples) here")
    parser.add_argument("--log", default="soak-gateway.log", help="where the gateway's log goes")
    args = parser.parse_args()
    summary = asyncio.run(run(args))
    text = orjson.dumps({k: v for k, v in summary.items() if k != "samples"}, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    raise SystemExit(1 if summary["unexpected"] or summary["secrets_in_gateway_log"] else 0)


if __name__ == "__main__":
    main()
