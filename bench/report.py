"""Rendering a run's results as Markdown tables, with the issue's targets checked."""

from __future__ import annotations

import importlib.util
from typing import Any

from bench.fakes import PACED_CHUNKS, PACED_INTERVAL

ARMS = ("relay", "ccx", "litellm")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "-"
    return f"{a / b:.2f}x"


def added(row: dict[str, Any], arm: str, key: str = "p50") -> float | None:
    """``arm``'s ``key`` minus the direct arm's, or ``None`` when either is missing."""
    arms = row["arms"]
    if arm not in arms or "direct" not in arms or key not in arms[arm] or key not in arms["direct"]:
        return None
    value: float = arms[arm][key] - arms["direct"][key]
    return value


def latency_table(rows: list[dict[str, Any]]) -> str:
    """Added latency (ms) over calling the fake directly; TTFE added for streams."""
    out = [
        "| channel | body | mode | direct p50 | relay +p50 / +p99 | ccx +p50 / +p99 | litellm +p50 / +p99 "
        "| ccx ÷ relay | litellm ÷ ccx | TTFE added p50 relay / ccx / litellm |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = []
        for arm in ARMS:
            cells.append(f"{_ms(added(row, arm))} / {_ms(added(row, arm, 'p99'))}")
        ttfe = " / ".join(_ms(added(row, arm, "ttfe_p50")) for arm in ARMS) if row["stream"] else "-"
        direct = row["arms"].get("direct", {}).get("p50")
        out.append(
            f"| {row['channel']} | {row['kind']} | {'stream' if row['stream'] else 'json'} | {_ms(direct)} | "
            + " | ".join(cells)
            + f" | {_ratio(added(row, 'ccx'), added(row, 'relay'))}"
            + f" | {_ratio(added(row, 'litellm'), added(row, 'ccx'))}"
            + f" | {ttfe} |"
        )
    return "\n".join(out)


def throughput_table(rows: list[dict[str, Any]]) -> str:
    """Requests per second per concurrency, and the server's CPU per request at the lowest load."""
    levels = sorted({r["c"] for r in rows})
    groups: dict[tuple[str, bool, str], dict[int, dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["channel"], r["stream"], r["arm"]), {})[r["c"]] = r
    head = "| channel | mode | arm | " + " | ".join(f"req/s c={c}" for c in levels)
    head += " | server CPU ms/req (c=16) | errors |"
    out = [head, "|" + "---|" * (4 + len(levels) + 1)]
    for (channel, stream, arm), by_c in groups.items():
        cells = [f"{by_c[c]['rps']:.0f}" if c in by_c else "-" for c in levels]
        ref = by_c.get(16) or next(iter(by_c.values()))
        cpu = ref.get("cpu_ms_per_req")
        errors = sum(r["errors"] for r in by_c.values())
        out.append(
            f"| {channel} | {'stream' if stream else 'json'} | {arm} | "
            + " | ".join(cells)
            + f" | {'-' if cpu is None else f'{cpu:.3f}'} | {errors} |"
        )
    return "\n".join(out)


def streams_table(rows: list[dict[str, Any]]) -> str:
    """Concurrent paced streams: errors, TTFE (and added over direct), RSS."""
    direct = {r["channel"]: r for r in rows if r["arm"] == "direct"}
    out = [
        "| channel | arm | streams | errors | TTFE p50 | TTFE added p50 | TTFE p99 | server CPU ms/stream "
        "| RSS idle → peak (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    channels = list(dict.fromkeys(r["channel"] for r in rows))
    arms = ["direct", "relay", "ccx", "litellm"]
    arms += [r["arm"] for r in rows if r["arm"] not in arms]
    # Rows in channel order, then arm order (LiteLLM's runs come last in time, see run_streams).
    ordered = sorted(rows, key=lambda r: (channels.index(r["channel"]), arms.index(r["arm"])))
    for r in ordered:
        base = direct.get(r["channel"], {}).get("ttfe_p50")
        extra = None if r["ttfe_p50"] is None or base is None or r["arm"] == "direct" else r["ttfe_p50"] - base
        out.append(
            f"| {r['channel']} | {r['arm']} | {r['n']} | {r['errors']} | {_ms(r['ttfe_p50'])} | {_ms(extra)} | "
            f"{_ms(r['ttfe_p99'])} | {r.get('cpu_ms_per_stream', 0):.1f} | "
            f"{r['rss_base_mb']:.0f} → {r['rss_peak_mb']:.0f} |"
        )
    return "\n".join(out)


def translator_table(rows: list[dict[str, Any]]) -> str:
    """Upstream chunks per second through each stage of the stream loop."""
    out = [
        "| channel | translator | chunks | events out | parse | + json | + translate | + encode (full) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rates = r["per_second"]
        out.append(
            f"| {r['channel']} | {r['source']} | {r['chunks']} | {r['events']} | "
            + " | ".join(f"{rates[s]:,.0f}" for s in ("parse", "parse+json", "parse+json+translate", "full"))
            + " |"
        )
    return "\n".join(out)


def targets(results: dict[str, Any]) -> list[str]:
    """The issue's targets, each with PASS/FAIL/n.a. and the measured value.

    Latency (issue 12): for every channel type, tiny and Codex bodies, JSON and streaming, ccx's
    added p50 is at most the bare Starlette + httpx relay's in the same run and at most a tenth of
    LiteLLM's ``/v1/responses`` bridge (its Chat and Claude conversions). LiteLLM's ``responses``
    arm is a native pass-through, not a bridge: that comparison is shown as ``info``.
    """
    lines = []
    for row in results["latency"]:
        ccx, relay, peer = added(row, "ccx"), added(row, "relay"), added(row, "litellm")
        what = f"{row['channel']} {row['kind']} {'stream' if row['stream'] else 'json'}"
        if ccx is None:
            lines.append(f"- n.a. {what}: no ccx measurement")
            continue
        if relay is not None:
            ok = ccx <= max(relay, 0.0)
            lines.append(f"- {'PASS' if ok else 'FAIL'} {what}: ccx added {_ms(ccx)} ms ≤ relay {_ms(relay)} ms")
        if peer is not None:
            ok = ccx <= peer / 10
            verdict = ("PASS" if ok else "FAIL") if row["channel"] != "responses" else "info"
            lines.append(
                f"- {verdict} {what}: ccx added {_ms(ccx)} ms ≤ litellm {_ms(peer)} ms / 10 "
                f"(litellm is {peer / ccx:.1f}x ccx)"
                if ccx > 0
                else f"- {verdict} {what}: ccx added {_ms(ccx)} ms ≤ litellm {_ms(peer)} ms / 10"
            )
    for r in results["translator"]:
        rate = r["per_second"]["full"]
        lines.append(
            f"- {'PASS' if rate >= 100_000 else 'FAIL'} translator {r['channel']}: {rate:,.0f} chunks/s ≥ 100,000"
        )
    direct = {r["channel"]: r for r in results["streams"] if r["arm"] == "direct"}
    for r in results["streams"]:
        if r["arm"] != "ccx":
            continue
        base = direct.get(r["channel"], {}).get("ttfe_p50")
        extra = None if base is None or r["ttfe_p50"] is None else r["ttfe_p50"] - base
        ok = r["errors"] == 0 and r["rss_peak_mb"] <= 200 and extra is not None and extra <= 0.005
        lines.append(
            f"- {'PASS' if ok else 'FAIL'} {r['n']} streams {r['channel']}: errors {r['errors']}, "
            f"RSS peak {r['rss_peak_mb']:.0f} MB ≤ 200, TTFE added {_ms(extra)} ms ≤ 5"
        )
    fast = [name for name in ("uvloop", "httptools") if importlib.util.find_spec(name) is not None]
    lines.append(
        f"- {'PASS' if len(fast) == 2 else 'NOTE'} standalone server: uvicorn loop/http 'auto' with "
        f"{', '.join(fast) or 'neither uvloop nor httptools'} installed"
    )
    return lines


def render(results: dict[str, Any]) -> str:
    """The whole report."""
    meta = results.get("meta", {})
    parts = [
        f"\n# ccx_asgi benchmark — {meta.get('date', '?')}",
        f"Python {meta.get('python', '?')}, {meta.get('machine', '?')}; "
        f"LiteLLM {results.get('litellm_version', 'n/a')}; command: {meta.get('command', '?')}",
        "\n## Added latency over calling the fake upstream directly (ms; sequential, arms interleaved"
        + (
            "; each measured request right after an unmeasured one to the same arm)\n"
            if meta.get("warm_shot", True)
            else "; --cold: no request before each measured one)\n"
        ),
        latency_table(results["latency"]),
        "\n## Concurrent paced streams (time to first event, memory)\n",
        f"Each stream: the first burst at once, then one chunk every {PACED_INTERVAL * 1000:.0f} ms "
        f"({PACED_CHUNKS} chunks); the streams start evenly over {meta.get('stream_ramp', '?')} s, "
        "so all are open together at the end of the ramp.\n",
        streams_table(results["streams"]),
        "\n## Throughput (closed loop, tiny body)\n",
        throughput_table(results["throughput"]),
        "\n## Stream translator, one core (upstream chunks/s through each stage)\n",
        translator_table(results["translator"]),
        "\n## Targets\n",
        "\n".join(targets(results)),
    ]
    if results.get("fake_hits"):
        parts.append(f"\nFake upstream requests by path: {results['fake_hits']}")
    if results.get("notes"):
        parts.append("\nNotes:\n" + "\n".join(f"- {n}" for n in results["notes"]))
    return "\n".join(parts) + "\n"
