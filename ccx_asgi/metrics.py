"""Prometheus metrics (optional: ``pip install 'ccx-asgi[metrics]'`` installs ``prometheus-client``).

Each app owns its own ``CollectorRegistry`` so that several apps (or tests) never collide and the
host's default registry is left alone. Exposed series (all prefixed ``ccx_``):

====================================  =========  ==========================================================
name                                  type       labels
====================================  =========  ==========================================================
``ccx_requests_total``                counter    ``channel`` (``none`` when unrouted), ``status`` (HTTP)
``ccx_upstream_failures_total``       counter    ``channel``: failed attempts (error status, timeout, …)
``ccx_failovers_total``               counter    ``channel``: failed attempts after which another was tried
``ccx_request_duration_seconds``      histogram  ``channel``: whole request, until the last byte
``ccx_time_to_first_byte_seconds``    histogram  ``channel``: until the first body byte reached the client
``ccx_tokens_total``                  counter    ``channel``, ``kind`` (input, output, cached_input, reasoning)
``ccx_breaker_state``                 enum       ``channel``; ``unknown`` until a state provider is wired
====================================  =========  ==========================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Enum, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["BREAKER_STATES", "CONTENT_TYPE", "Metrics", "breaker_state"]

#: Content type of the text exposition format.
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: The states ``ccx_breaker_state`` can report.
BREAKER_STATES = ("closed", "half_open", "open", "unknown")

_TTFB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
_DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_TOKEN_KINDS = (
    ("input_tokens", "input"),
    ("output_tokens", "output"),
    ("cached_tokens", "cached_input"),
    ("reasoning_tokens", "reasoning"),
)


def breaker_state(state: Any) -> str:
    """Normalise whatever a state provider reports for a breaker to one of :data:`BREAKER_STATES`."""
    if isinstance(state, Mapping):
        state = state.get("state")
    if not isinstance(state, str):
        return "unknown"
    name = state.strip().lower().replace("-", "_").replace(" ", "_")
    if name == "halfopen":
        name = "half_open"
    return name if name in BREAKER_STATES else "unknown"


class Metrics:
    """The gateway's metric families in a private registry (see the module docstring)."""

    def __init__(self, channels: Iterable[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "ccx_requests", "Responses requests by final channel and HTTP status.", ["channel", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.failures = Counter(
            "ccx_upstream_failures", "Failed upstream attempts by channel.", ["channel"], registry=self.registry
        )
        self.failovers = Counter(
            "ccx_failovers", "Failed attempts after which another key or channel was tried.", ["channel"],
            registry=self.registry,
        )  # fmt: skip
        self.duration = Histogram(
            "ccx_request_duration_seconds", "Whole request duration.", ["channel"],
            buckets=_DURATION_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.ttfb = Histogram(
            "ccx_time_to_first_byte_seconds", "Time until the first body byte was sent to the client.", ["channel"],
            buckets=_TTFB_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.tokens = Counter(
            "ccx_tokens", "Tokens reported by upstreams.", ["channel", "kind"], registry=self.registry
        )
        self.breaker = Enum(
            "ccx_breaker_state", "Circuit breaker state per channel.", ["channel"],
            states=list(BREAKER_STATES), registry=self.registry,
        )  # fmt: skip
        self.channels = list(channels)
        for name in self.channels:
            self.breaker.labels(name).state("unknown")
        # ``labels()`` takes a lock and builds a tuple on every call; the label sets are few and fixed
        # (channels are configuration), so each child is looked up once and kept.
        self._children: dict[tuple[object, ...], Any] = {}

    def _child(self, family: Any, *labels: str) -> Any:
        key = (family, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child

    def observe(self, fields: Mapping[str, Any], failovers: Iterable[str]) -> None:
        """Account for one finished request (``fields`` from the request record)."""
        channel = fields.get("channel") or "none"
        self._child(self.requests, channel, str(fields.get("status") or 0)).inc()
        for failed in fields.get("failed_attempts") or ():
            self._child(self.failures, failed["channel"]).inc()
        for name in failovers:
            self._child(self.failovers, name).inc()
        self._child(self.duration, channel).observe(fields["duration_ms"] / 1000)
        if fields.get("ttfb_ms") is not None:
            self._child(self.ttfb, channel).observe(fields["ttfb_ms"] / 1000)
        for key, kind in _TOKEN_KINDS:
            value = fields.get(key)
            if value:
                self._child(self.tokens, channel, kind).inc(value)

    def set_states(self, states: Mapping[str, Any] | None) -> None:
        """Update the breaker gauge from a state provider's per-channel dicts (``None``: unknown)."""
        for name in self.channels:
            state = states.get(name) if states is not None else None
            breaker = state.get("breaker") if isinstance(state, Mapping) else None
            self.breaker.labels(name).state(breaker_state(breaker))

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
