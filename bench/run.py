"""The benchmark run: start the servers, measure every arm, print the tables and check the targets.

Arms, for each channel type (``responses``, ``chat``, ``claude``):

- ``direct``: the load generator calls the fake upstream's native endpoint itself (the baseline);
- ``relay``: the bare uvicorn + Starlette + httpx relay in front of the same endpoint (the floor);
- ``ccx``: the standalone ``python -m ccx_asgi`` server, ``POST /v1/responses`` with a channel of
  that service type pointing at the fake;
- ``litellm``: LiteLLM's proxy ``POST /v1/responses`` with a model of that kind at the fake.

An arm that does not answer 200 in its warm-up (for instance a service type not installed yet) is
skipped for that scenario with a note; nothing else changes when it appears.
"""

from __future__ import annotations

import asyncio
import json
import platform
import random
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import peer
from bench.client import Connection, Result, build_request
from bench.procs import Server, cpu_seconds, free_port, python_module, rss_bytes, start
from bench.translator import measure as measure_translator

CHANNELS = ("responses", "chat", "claude")
NATIVE_PATH = {"responses": "/v1/responses", "chat": "/v1/chat/completions", "claude": "/v1/messages"}
CODEX_BODY = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "codex" / "request-gpt-5.5-turn1.json"
CCX_KEY = "sk-ccx-bench-" + secrets.token_hex(8)


@dataclass
class Options:
    """What to run and how long (see ``python -m bench --help``)."""

    rounds: int = 300
    warmup: int = 30
    duration: float = 1.0
    concurrency: tuple[int, ...] = (1, 16, 64, 256)
    peer_max_concurrency: int = 64
    streams: int = 256
    stream_ramp: float = 2.0
    translator_deltas: int = 20000
    channels: tuple[str, ...] = CHANNELS
    litellm: bool = True
    install: bool = True
    throughput: bool = True
    latency: bool = True
    concurrent_streams: bool = True
    json_path: Path | None = None
    #: Precede each measured request with an unmeasured one to the same arm (see :func:`latency`).
    warm_shot: bool = True


@dataclass
class Arm:
    """One way of reaching the fake upstream."""

    name: str
    port: int
    server: Server | None
    headers: dict[str, str] = field(default_factory=dict)
    gateway: bool = True

    def path(self, channel: str, paced: bool) -> str:
        """The request path for ``channel``."""
        if not self.gateway or self.name == "relay":
            return ("/paced" if paced else "") + NATIVE_PATH[channel]
        return "/v1/responses"

    def model(self, channel: str, paced: bool) -> str:
        """The model to ask for."""
        if self.name in ("direct", "relay"):
            return "bench-model"
        return f"bench-{channel}" + ("-paced" if paced else "")


def tiny_body(channel: str, model: str, stream: bool, *, native: bool) -> dict[str, Any]:
    """A minimal request: Responses shape for the gateways, the native shape for direct and relay."""
    if not native or channel == "responses":
        return {"model": model, "input": "hi", "stream": stream}
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    if channel == "claude":
        body["max_tokens"] = 256
    return body


def codex_body(model: str, stream: bool) -> dict[str, Any]:
    """The recorded 42 KB Codex request with the model and ``stream`` replaced."""
    body: dict[str, Any] = orjson.loads(CODEX_BODY.read_bytes())
    return {**body, "model": model, "stream": stream}


def request_bytes(arm: Arm, channel: str, *, stream: bool, kind: str, paced: bool = False) -> bytes:
    """The raw HTTP request ``arm`` sends for a scenario."""
    model = arm.model(channel, paced)
    native = arm.name in ("direct", "relay")
    body = codex_body(model, stream) if kind == "codex" else tiny_body(channel, model, stream, native=native)
    headers = {"content-type": "application/json", "accept": "text/event-stream" if stream else "application/json"}
    return build_request(arm.path(channel, paced), orjson.dumps(body), {**headers, **arm.headers}, port=arm.port)


def pct(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def ms(seconds: float) -> str:
    """Seconds as milliseconds with two decimals."""
    return f"{seconds * 1000:.2f}"


# -- measurements ---------------------------------------------------------------------------------


async def warm(arm: Arm, raw: bytes) -> str | None:
    """One request; ``None`` when it answered 200, else why not."""
    conn = Connection(arm.port)
    try:
        result = await asyncio.wait_for(conn.request(raw), 30)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await conn.close()
    if result.status == 200:
        return None
    try:
        message = str(orjson.loads(result.error_body)["error"]["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = result.error_body.decode("utf-8", "replace")
    return f"HTTP {result.status}: {message[:300]}"


async def latency(
    arms: list[Arm], raws: dict[str, bytes], rounds: int, warmup: int, *, warm_shot: bool = True
) -> dict[str, dict[str, Any]]:
    """Sequential requests, arms interleaved in a shuffled order each round.

    With ``warm_shot``, each measured request comes right after an unmeasured one to the same arm.
    On this VM a process that has idled answers slower: the chat tiny request through ccx took
    0.88 ms after no pause, 1.33 ms after 10 ms and 2.30 ms after 50 ms (the relay 0.82, 1.40 and
    2.29 ms; ``docs/performance.md``). Interleaved with LiteLLM's 10-45 ms requests, the other arms
    idled that long before a third of their requests while LiteLLM itself never idled, so the
    comparison measured the machine's wake-up as much as the gateways. ``--cold`` measures without.
    """
    conns = {arm.name: Connection(arm.port) for arm in arms}
    totals: dict[str, list[float]] = {arm.name: [] for arm in arms}
    firsts: dict[str, list[float]] = {arm.name: [] for arm in arms}
    errors = dict.fromkeys(totals, 0)
    rng = random.Random(7)
    order = list(arms)
    for i in range(warmup + rounds):
        rng.shuffle(order)
        for arm in order:
            try:
                if warm_shot:
                    shot = await asyncio.wait_for(conns[arm.name].request(raws[arm.name]), 60)
                    if shot.status != 200:  # unmeasured, but an arm that fails it still shows errors
                        errors[arm.name] += 1
                result = await asyncio.wait_for(conns[arm.name].request(raws[arm.name]), 60)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                errors[arm.name] += 1
                await conns[arm.name].close()
                continue
            if result.status != 200:
                errors[arm.name] += 1
            elif i >= warmup:
                totals[arm.name].append(result.total)
                firsts[arm.name].append(result.first)
    for conn in conns.values():
        await conn.close()
    out = {}
    for name in totals:
        if totals[name]:
            out[name] = {
                "p50": statistics.median(totals[name]),
                "p99": pct(totals[name], 0.99),
                "ttfe_p50": statistics.median(firsts[name]),
                "ttfe_p99": pct(firsts[name], 0.99),
                "n": len(totals[name]),
                "errors": errors[name],
            }
        else:
            out[name] = {"errors": errors[name], "n": 0}
    return out


async def throughput(
    arm: Arm, raw: bytes, concurrency: int, duration: float, pid: int, grace: float = 20.0
) -> dict[str, Any]:
    """Closed-loop load at ``concurrency`` for ``duration`` seconds; server CPU per request from /proc.

    Requests in flight at the deadline may finish within ``grace`` seconds (and count, over the
    longer elapsed time); workers still busy after that are cancelled and reported as ``stuck``.
    """
    conns = [Connection(arm.port) for _ in range(concurrency)]
    gate = asyncio.Event()
    done = 0
    errors = 0
    deadline = 0.0

    async def worker(conn: Connection) -> None:
        nonlocal done, errors
        try:
            await conn.request(raw)  # open the connection and warm it before the clock starts
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
        await gate.wait()
        while time.perf_counter() < deadline:
            try:
                result = await conn.request(raw)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                await conn.close()
                continue
            if result.status == 200:
                done += 1
            else:
                errors += 1

    tasks = [asyncio.create_task(worker(c)) for c in conns]
    await asyncio.sleep(0.2 + concurrency * 0.002)
    cpu0 = cpu_seconds(pid)
    start = time.perf_counter()
    deadline = start + duration
    gate.set()
    _, pending = await asyncio.wait(tasks, timeout=duration + grace)
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(pid) - cpu0
    for task in pending:  # requests still running long after the deadline: counted, then abandoned
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for conn in conns:
        await conn.close()
    return {
        "rps": done / elapsed,
        "cpu_ms_per_req": cpu * 1000 / done if done else None,
        "cpu_util": cpu / elapsed,
        "done": done,
        "errors": errors,
        "stuck": len(pending),
    }


async def concurrent_streams(arm: Arm, raw: bytes, count: int, ramp: float, pid: int) -> dict[str, Any]:
    """``count`` paced streams started over ``ramp`` seconds, all open together; peak RSS sampled."""
    base = rss_bytes(pid)
    peak = base
    stop = asyncio.Event()

    async def sampler() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_bytes(pid))
            await asyncio.sleep(0.02)

    async def one(i: int) -> Result | BaseException:
        await asyncio.sleep(i * ramp / count)
        conn = Connection(arm.port)
        try:
            return await asyncio.wait_for(conn.request(raw), 120)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            return exc
        finally:
            await conn.close()

    sampling = asyncio.create_task(sampler())
    cpu0 = cpu_seconds(pid)
    results = await asyncio.gather(*(one(i) for i in range(count)))
    cpu = cpu_seconds(pid) - cpu0
    stop.set()
    await sampling
    ok = [r for r in results if isinstance(r, Result) and r.status == 200]
    firsts = [r.first for r in ok]
    return {
        "errors": count - len(ok),
        "ttfe_p50": statistics.median(firsts) if firsts else None,
        "ttfe_p99": pct(firsts, 0.99) if firsts else None,
        "total_p50": statistics.median([r.total for r in ok]) if ok else None,
        "cpu_ms_per_stream": cpu * 1000 / count,
        "rss_base_mb": base / 2**20,
        "rss_peak_mb": peak / 2**20,
    }


async def settle(servers: list[Server], *, window: float = 0.25, limit: float = 15.0) -> float:
    """Wait until the servers together use at most one clock tick of CPU over ``window`` s (at most ``limit`` s).

    A server that still works off an earlier load (LiteLLM's background logging does) would otherwise
    steal CPU from the next measurement on this 2-core machine. Returns the seconds waited.
    """
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        before = sum(cpu_seconds(s.pid) for s in servers if s.alive())
        await asyncio.sleep(window)
        if sum(cpu_seconds(s.pid) for s in servers if s.alive()) - before <= 0.011:
            break
    return time.perf_counter() - start


# -- the run --------------------------------------------------------------------------------------


class Bench:
    """Owns the servers of one run and the collected results."""

    def __init__(self, options: Options) -> None:
        self.o = options
        self.servers: list[Server] = []
        self.notes: list[str] = []
        self.results: dict[str, Any] = {"latency": [], "throughput": [], "streams": [], "translator": []}
        self.workdir = Path(tempfile.mkdtemp(prefix="ccx-bench-"))

    def note(self, text: str) -> None:
        """Record and print a note (once: the same skip is met by several parts of the run)."""
        if text in self.notes:
            return
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def start_servers(self) -> list[Arm]:
        """Start the fake, the relay, ccx and (if possible) LiteLLM; return the arms."""
        fake_port = free_port()
        fake = start("fake", python_module("bench.fakes", "--port", str(fake_port)), port=fake_port, ready_path="/")
        self.servers.append(fake)
        upstream = f"http://127.0.0.1:{fake_port}"
        arms = [Arm("direct", fake_port, fake, gateway=False)]

        relay_port = free_port()
        relay = start(
            "relay",
            python_module("bench.relay", "--port", str(relay_port), "--upstream", upstream),
            port=relay_port,
            ready_path="/",
        )
        self.servers.append(relay)
        arms.append(Arm("relay", relay_port, relay))

        ccx_port = free_port()
        channels = []
        for channel in CHANNELS:
            for suffix, prefix in (("", ""), ("-paced", "/paced")):
                model = f"bench-{channel}{suffix}"
                channels.append(
                    {
                        "name": f"{channel}{suffix}",
                        "service_type": channel,
                        "base_url": f"{upstream}{prefix}/v1",
                        "api_keys": ["sk-bench-upstream"],
                        "models": [model],
                        "model_map": {model: "bench-model"},
                    }
                )
        env = {
            "CCX_CHANNELS": json.dumps(channels),
            "CCX_PORT": str(ccx_port),
            "CCX_HOST": "127.0.0.1",
            "CCX_PROXY_ACCESS_KEY": CCX_KEY,
        }
        ccx = start("ccx", python_module("ccx_asgi"), port=ccx_port, env=env, ready_path="/v1/models")
        self.servers.append(ccx)
        arms.append(Arm("ccx", ccx_port, ccx, {"authorization": f"Bearer {CCX_KEY}"}))

        if self.o.litellm:
            bin_dir, message = peer.ensure_venv(install=self.o.install)
            self.note(message)
            if bin_dir is not None:
                version = peer.litellm_version(bin_dir)
                self.results["litellm_version"] = version
                port = free_port()
                key = "sk-" + secrets.token_hex(32)
                try:
                    server = peer.start_litellm(bin_dir, upstream, port, self.workdir, key)
                except RuntimeError as exc:
                    self.note(f"LiteLLM {version} did not start; arm skipped: {exc}")
                else:
                    self.servers.append(server)
                    arms.append(Arm("litellm", port, server, {"authorization": f"Bearer {key}"}))
                    self.note(f"LiteLLM {version} proxy on port {port}")
        return arms

    def stop_servers(self) -> None:
        """Stop every process this run started."""
        for server in reversed(self.servers):
            server.stop()

    async def scenario_arms(self, arms: list[Arm], channel: str, *, stream: bool, kind: str) -> list[Arm]:
        """The arms that answer this scenario (others get a note)."""
        usable = []
        for arm in arms:
            problem = await warm(arm, request_bytes(arm, channel, stream=stream, kind=kind))
            if problem is None:
                usable.append(arm)
            else:
                self.note(f"{channel} {'stream' if stream else 'json'} {kind}: {arm.name} skipped ({problem})")
        return usable

    async def run_latency(self, arms: list[Arm]) -> None:
        """Added latency and time-to-first-event, sequential, arms interleaved."""
        print("\n== latency (sequential, arms interleaved)", flush=True)
        for channel in self.o.channels:
            for kind in ("tiny", "codex"):
                for stream in (False, True):
                    usable = await self.scenario_arms(arms, channel, stream=stream, kind=kind)
                    if not any(a.name == "direct" for a in usable):
                        continue
                    raws = {a.name: request_bytes(a, channel, stream=stream, kind=kind) for a in usable}
                    await self.settle(f"{channel} {kind} {'stream' if stream else 'json'} latency", limit=30.0)
                    stats = await latency(usable, raws, self.o.rounds, self.o.warmup, warm_shot=self.o.warm_shot)
                    row = {"channel": channel, "kind": kind, "stream": stream, "arms": stats}
                    self.results["latency"].append(row)
                    print("  " + _latency_line(row), flush=True)

    async def run_throughput(self, arms: list[Arm]) -> None:
        """Requests per second and server CPU per request at each concurrency."""
        print("\n== throughput (closed loop, tiny body)", flush=True)
        for channel in self.o.channels:
            for stream in (False, True):
                usable = await self.scenario_arms(arms, channel, stream=stream, kind="tiny")
                for arm in usable:
                    raw = request_bytes(arm, channel, stream=stream, kind="tiny")
                    assert arm.server is not None
                    for concurrency in self.o.concurrency:
                        if arm.name == "litellm" and concurrency > self.o.peer_max_concurrency:
                            continue
                        await self.settle(f"{channel} {arm.name} c={concurrency} throughput")
                        stats = await throughput(arm, raw, concurrency, self.o.duration, arm.server.pid)
                        row = {"channel": channel, "stream": stream, "arm": arm.name, "c": concurrency, **stats}
                        self.results["throughput"].append(row)
                        cpu = stats["cpu_ms_per_req"]
                        print(
                            f"  {channel:9} {'stream' if stream else 'json':6} {arm.name:8} c={concurrency:<3}"
                            f" {stats['rps']:8.0f} req/s  cpu {cpu if cpu is None else round(cpu, 3)} ms/req"
                            f"  errors {stats['errors']}",
                            flush=True,
                        )

    async def settle(self, what: str, limit: float = 15.0) -> None:
        """Wait until every server is idle; note it when one still works after ``limit`` seconds."""
        waited = await settle(self.servers, limit=limit)
        if waited >= limit:
            busy = ", ".join(f"{s.name} {100 * u:.0f}%" for s, u in await _cpu_use(self.servers) if u > 0.02)
            self.note(f"{what}: servers still busy after {limit:g} s ({busy}); measured anyway")

    async def run_streams(self, arms: list[Arm]) -> None:
        """Many paced streams open at once: errors, time to first event, peak RSS.

        LiteLLM takes many seconds per burst and keeps working after its last stream ends, so its
        runs come after every other arm's, and each run waits (up to a minute) for idle servers.
        """
        count = self.o.streams
        print(f"\n== {count} concurrent paced streams", flush=True)
        runs: list[tuple[str, Arm]] = []
        for channel in self.o.channels:
            usable = await self.scenario_arms(arms, channel, stream=True, kind="tiny")
            runs += [(channel, arm) for arm in usable]
        runs.sort(key=lambda run: run[1].name == "litellm")
        for channel, arm in runs:
            assert arm.server is not None
            raw = request_bytes(arm, channel, stream=True, kind="tiny", paced=True)
            await self.settle(f"{channel} {arm.name} streams", limit=60.0)
            stats = await concurrent_streams(arm, raw, count, self.o.stream_ramp, arm.server.pid)
            row = {"channel": channel, "arm": arm.name, "n": count, **stats}
            self.results["streams"].append(row)
            print(
                f"  {channel:9} {arm.name:8} errors {stats['errors']}  ttfe p50 "
                f"{ms(stats['ttfe_p50'] or 0)} ms  rss {stats['rss_base_mb']:.0f}->{stats['rss_peak_mb']:.0f} MB",
                flush=True,
            )

    def run_translator(self) -> None:
        """The in-process translator micro-benchmark."""
        print("\n== stream translator (one core, in process)", flush=True)
        for channel in self.o.channels:
            result = measure_translator(channel, deltas=self.o.translator_deltas, repeats=3)
            if isinstance(result, str):
                self.note(f"translator {channel}: skipped ({result})")
                continue
            self.results["translator"].append(result.__dict__)
            print(f"  {channel:9} {result.per_second['full']:10,.0f} chunks/s  ({result.source})", flush=True)

    async def run(self) -> None:
        """Everything, in order; servers are stopped whatever happens."""
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        self.results["meta"] = {
            "date": started,
            "command": " ".join(["python -m bench", *sys.argv[1:]]),
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
            "options": {k: str(v) for k, v in self.o.__dict__.items()},
            "stream_ramp": self.o.stream_ramp,
            "warm_shot": self.o.warm_shot,
        }
        self.run_translator()
        arms = self.start_servers()
        try:
            if self.o.latency:
                await self.run_latency(arms)
            if self.o.concurrent_streams:
                await self.run_streams(arms)
            if self.o.throughput:
                await self.run_throughput(arms)
            fake = arms[0].server
            if fake is not None:
                hits = await asyncio.to_thread(_stats, fake.port)
                self.results["fake_hits"] = hits
        finally:
            self.stop_servers()
        self.results["notes"] = self.notes
        print(report(self.results))
        if self.o.json_path is not None:
            self.o.json_path.parent.mkdir(parents=True, exist_ok=True)
            self.o.json_path.write_bytes(orjson.dumps(self.results, option=orjson.OPT_INDENT_2))
            print(f"results written to {self.o.json_path}")


async def _cpu_use(servers: list[Server], window: float = 0.25) -> list[tuple[Server, float]]:
    """Each live server's CPU use (share of one core) over ``window`` seconds."""
    alive = [s for s in servers if s.alive()]
    before = [cpu_seconds(s.pid) for s in alive]
    await asyncio.sleep(window)
    return [(s, (cpu_seconds(s.pid) - b) / window) for s, b in zip(alive, before, strict=True)]


def _stats(port: int) -> dict[str, int]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/__stats", timeout=5) as response:
        data: dict[str, int] = orjson.loads(response.read())
    return data


def _latency_line(row: dict[str, Any]) -> str:
    arms = row["arms"]
    base = arms.get("direct", {}).get("p50")
    parts = []
    for name, stats in arms.items():
        if not stats.get("n"):
            parts.append(f"{name}: errors {stats['errors']}")
            continue
        added = f" (+{ms(stats['p50'] - base)})" if base is not None and name != "direct" else ""
        parts.append(f"{name} {ms(stats['p50'])}{added}")
    return f"{row['channel']:9} {row['kind']:5} {'stream' if row['stream'] else 'json':6} " + "  ".join(parts)


# -- the report -----------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> str:
    """Markdown tables of everything measured, with the target checks."""
    from bench.report import render

    return render(results)
