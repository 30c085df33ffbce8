"""Circuit breakers and key parking per (channel, key), stored in a :class:`~ccx_asgi.state.StateStore`.

A target is one channel used with one of its keys (:func:`target_id`; the key appears only as a
short SHA-256 fingerprint). Its record holds the consecutive-failure count, the outcomes of the last
``window`` attempts, when the circuit opened and the current backoff, and until when the key is
parked. No record means "healthy", so a healthy target costs one read and no write per request.

States:

- **closed**: attempts go through. It opens after ``failure_threshold`` consecutive failures, or
  when at least ``min_requests`` outcomes are in the window and the failure share reaches
  ``failure_ratio``.
- **open**: skipped while other targets are available, for ``backoff`` seconds.
- **half-open**: after the backoff one request (atomically claimed, so one per cluster) probes it.
  Success closes the circuit and forgets its history; failure reopens it with the backoff doubled,
  up to ``max_backoff``.

Parking is separate: ``Retry-After`` or an auth/quota failure parks the key for a while, after
which it is tried again without a probe.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from ccx_asgi.settings import ChannelConfig
from ccx_asgi.state import Clock, StateStore

__all__ = ["BreakerConfig", "CircuitBreaker", "Verdict", "channel_targets", "target_id"]

logger = logging.getLogger("ccx_asgi.breaker")

_NS = "breaker"
_PROBE_NS = "probe"


def target_id(channel: str, key: SecretStr | None) -> str:
    """A stable, secret-free id for ``channel`` used with ``key``: ``name/<12 hex of sha256(key)>``."""
    if key is None:
        return f"{channel}/-"
    return f"{channel}/{hashlib.sha256(key.get_secret_value().encode()).hexdigest()[:12]}"


def channel_targets(channel: str, keys: Sequence[SecretStr]) -> list[tuple[SecretStr | None, str]]:
    """Each key of ``channel`` (``None`` for a channel without keys) with its :func:`target_id`, in order."""
    options: list[SecretStr | None] = [*keys] or [None]
    return [(key, target_id(channel, key)) for key in options]


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Breaker thresholds (defaults follow the original CCX; see ``docs/routing.md``)."""

    failure_threshold: int = 5
    failure_ratio: float = 0.7
    window: int = 20
    min_requests: int = 10
    backoff: float = 30.0
    max_backoff: float = 600.0
    probe_timeout: float = 120.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.window < 1 or self.min_requests < 1:
            raise ValueError("breaker counts must be at least 1")
        if not 0 < self.failure_ratio <= 1:
            raise ValueError("breaker failure_ratio must be in (0, 1]")
        if self.backoff <= 0 or self.max_backoff < self.backoff or self.probe_timeout <= 0:
            raise ValueError("breaker backoff must be > 0 and max_backoff >= backoff")


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a target may be tried now; ``reason`` is shown in the all-failed error and logs."""

    allowed: bool
    reason: str = "closed"
    probe: bool = False


_ALLOW = Verdict(True)


class CircuitBreaker:
    """Breakers and parked keys for every target, in ``store``; ``clock`` is injectable for tests."""

    def __init__(self, store: StateStore, config: BreakerConfig | None = None, *, clock: Clock = time.time) -> None:
        self.store = store
        self.config = config or BreakerConfig()
        self.clock = clock
        # Long enough to outlive any backoff; short enough that old failures are eventually forgotten.
        self._ttl = max(3600.0, 2 * self.config.max_backoff)

    async def check(self, target: str) -> Verdict:
        """May ``target`` be tried now? Claims the half-open probe when it is due."""
        record = await self.store.get(_NS, target)
        if record is None:
            return _ALLOW
        now = self.clock()
        parked = float(record.get("p", 0))
        if parked > now:
            return Verdict(False, f"skipped: key parked for {parked - now:.0f}s more")
        opened = float(record.get("o", 0))
        if not opened:
            return _ALLOW
        due = opened + float(record.get("b", self.config.backoff))
        if now < due:
            return Verdict(False, f"skipped: circuit open, next probe in {due - now:.0f}s")
        if await self.store.claim(_PROBE_NS, target, self.config.probe_timeout):
            return Verdict(True, "half-open probe", probe=True)
        return Verdict(False, "skipped: circuit half-open, a probe is already in flight")

    async def state(self, target: str) -> str:
        """``closed``, ``open``, ``half-open`` or ``parked`` (for status pages and tests; no claim)."""
        record = await self.store.get(_NS, target)
        if record is None:
            return "closed"
        now = self.clock()
        if float(record.get("p", 0)) > now:
            return "parked"
        opened = float(record.get("o", 0))
        if not opened:
            return "closed"
        return "open" if now < opened + float(record.get("b", self.config.backoff)) else "half-open"

    async def success(self, target: str, *, probe: bool = False) -> None:
        """Record an answer from ``target`` (including client errors: the upstream is alive)."""
        if probe:
            await self.store.delete(_PROBE_NS, target)
        record = await self.store.get(_NS, target)
        if record is None:
            return
        if record.get("o") or float(record.get("p", 0)) > 0:
            if record.get("o"):
                logger.info("circuit %s closed: the upstream answered again", target)
            await self.store.delete(_NS, target)
            return
        window = (str(record.get("w", "")) + "0")[-self.config.window :]
        if "1" not in window:
            await self.store.delete(_NS, target)
            return
        record.update(c=0, w=window)
        await self.store.set(_NS, target, record, self._ttl)

    async def failure(self, target: str, *, probe: bool = False) -> None:
        """Record a failure of ``target``; may open (or reopen) its circuit."""
        cfg = self.config
        now = self.clock()
        record = await self.store.get(_NS, target) or {}
        opened = float(record.get("o", 0))
        if opened:
            backoff = float(record.get("b", cfg.backoff))
            if probe or now >= opened + backoff:
                backoff = min(backoff * 2, cfg.max_backoff)
            record.update(o=now, b=backoff)
            logger.warning("circuit %s reopened for %gs", target, backoff)
        else:
            consecutive = int(record.get("c", 0)) + 1
            window = (str(record.get("w", "")) + "1")[-cfg.window :]
            record.update(c=consecutive, w=window)
            ratio = window.count("1") / len(window)
            if consecutive >= cfg.failure_threshold or (len(window) >= cfg.min_requests and ratio >= cfg.failure_ratio):
                record.update(o=now, b=cfg.backoff)
                logger.warning(
                    "circuit %s opened for %gs (%d consecutive failures, %.0f%% of the last %d)",
                    target,
                    cfg.backoff,
                    consecutive,
                    ratio * 100,
                    len(window),
                )
        await self.store.set(_NS, target, record, self._ttl)
        if probe:
            await self.store.delete(_PROBE_NS, target)

    async def release(self, target: str) -> None:
        """Give up a half-open probe claim without a verdict (the request was cancelled)."""
        await self.store.delete(_PROBE_NS, target)

    async def park(self, target: str, seconds: float) -> None:
        """Keep ``target`` out of rotation for ``seconds`` (``Retry-After``, a rejected key)."""
        if seconds <= 0:
            return
        record = await self.store.get(_NS, target) or {}
        until = self.clock() + seconds
        record["p"] = max(until, float(record.get("p", 0)))
        logger.info("key %s parked for %gs", target, seconds)
        await self.store.set(_NS, target, record, max(self._ttl, seconds + 60))

    async def failed(self, target: str, *, probe: bool = False, park: float | None = None) -> None:
        """Record a failed attempt on ``target``, and park it for ``park`` seconds when given."""
        await self.failure(target, probe=probe)
        if park is not None:
            await self.park(target, park)

    async def channel_state(self, channel: ChannelConfig) -> dict[str, Any]:
        """The channel's breaker summary (keys by position, never by value): ``closed`` while any of
        its keys may be used, ``half-open`` while one may be probed, ``open`` when every key is open
        or parked."""
        states = [await self.state(tid) for _, tid in channel_targets(channel.name, channel.api_keys)]
        summary = "closed" if "closed" in states else "half-open" if "half-open" in states else "open"
        return {"state": summary, "keys": {f"#{n}": state for n, state in enumerate(states, 1)}}
