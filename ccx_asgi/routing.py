"""Pure routing rules: which channels may serve a requested model, and under which upstream name.

Kept free of I/O so the rules are tested as tables and reused by the model mapper, ``GET /models``
and the admin API.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import SecretStr

from ccx_asgi.breaker import channel_targets
from ccx_asgi.settings import ChannelConfig

__all__ = [
    "Allowlist",
    "Candidate",
    "ModelRule",
    "Router",
    "Target",
    "map_model",
    "matches_allowlist",
    "order_targets",
    "ordered_channels",
    "public_models",
]


@dataclass(frozen=True, slots=True)
class ModelRule:
    """One compiled allowlist pattern: exact, ``prefix*``, ``*suffix``, ``*contains*`` or ``*``."""

    kind: str
    text: str

    @classmethod
    def parse(cls, pattern: str) -> ModelRule:
        """Compile ``pattern`` (without a leading ``!``)."""
        starts, ends = pattern.startswith("*"), pattern.endswith("*") and len(pattern) > 1
        core = pattern.strip("*")
        if not core:
            return cls("any", "")
        if starts and ends:
            return cls("contains", core)
        if starts:
            return cls("suffix", core)
        if ends:
            return cls("prefix", core)
        return cls("exact", core)

    def matches(self, model: str) -> bool:
        """Whether ``model`` fits this pattern (case-sensitive, as in the original CCX)."""
        if self.kind == "exact":
            return model == self.text
        if self.kind == "prefix":
            return model.startswith(self.text)
        if self.kind == "suffix":
            return model.endswith(self.text)
        if self.kind == "contains":
            return self.text in model
        return True


@dataclass(frozen=True, slots=True)
class Allowlist:
    """A compiled model allowlist; exclusions (``!pattern``) always win."""

    allow: tuple[ModelRule, ...]
    deny: tuple[ModelRule, ...]

    @classmethod
    def compile(cls, patterns: Sequence[str]) -> Allowlist:
        """Compile the channel's ``models`` list once."""
        return cls(
            tuple(ModelRule.parse(p) for p in patterns if p and not p.startswith("!")),
            tuple(ModelRule.parse(p[1:]) for p in patterns if p.startswith("!") and len(p) > 1),
        )

    def allows(self, model: str) -> bool:
        """Whether ``model`` passes. No positive pattern means everything not excluded passes."""
        if any(rule.matches(model) for rule in self.deny):
            return False
        return not self.allow or any(rule.matches(model) for rule in self.allow)


def matches_allowlist(patterns: Sequence[str], model: str) -> bool:
    """Whether ``model`` passes the allowlist ``patterns`` (see :class:`Allowlist`)."""
    return Allowlist.compile(patterns).allows(model)


def map_model(model_map: dict[str, str], model: str) -> str:
    """The upstream model for ``model``: an exact key first, else the longest key contained in it.

    Ties between equally long keys go to the alphabetically first key so the result never depends
    on the order of a JSON object.
    """
    exact = model_map.get(model)
    if exact is not None:
        return exact
    best: str | None = None
    for key in model_map:
        if key and key in model and (best is None or len(key) > len(best) or (len(key) == len(best) and key < best)):
            best = key
    return model_map[best] if best is not None else model


@dataclass(frozen=True, slots=True)
class Candidate:
    """A channel that may serve the request, with the model name to send it."""

    channel: ChannelConfig
    upstream_model: str


def ordered_channels(channels: Iterable[ChannelConfig]) -> list[ChannelConfig]:
    """Enabled channels by ``priority`` (lower first); list order breaks ties and fills gaps."""
    enabled = [(c.priority if c.priority is not None else i, i, c) for i, c in enumerate(channels) if c.enabled]
    return [c for _, _, c in sorted(enabled, key=lambda t: (t[0], t[1]))]


class Router:
    """Channels compiled once for per-request candidate selection."""

    def __init__(self, channels: Iterable[ChannelConfig]) -> None:
        self.channels = ordered_channels(channels)
        self._routes = [(c, Allowlist.compile(c.models)) for c in self.channels]

    def candidates(self, model: str) -> list[Candidate]:
        """The channels allowed to serve ``model``, in the order to try them.

        The allowlist is checked against the *requested* model, even with a single channel.
        """
        return [Candidate(c, map_model(c.model_map, model)) for c, allow in self._routes if allow.allows(model)]


def public_models(channels: Iterable[ChannelConfig]) -> list[tuple[str, str]]:
    """``(model, channel name)`` pairs clients may request: mapping keys and exact allowlist names."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for channel in channels:
        if not channel.enabled:
            continue
        names = [*channel.model_map, *(p for p in channel.models if not p.startswith("!") and "*" not in p)]
        for name in names:
            if name not in seen and matches_allowlist(channel.models, name):
                seen.add(name)
                out.append((name, channel.name))
    return out


@dataclass(frozen=True, slots=True)
class Target:
    """One candidate channel with one of its keys (``index`` in its list): what the failover layer
    tries, and what a breaker, a parked key and affinity are kept for (``id``, see
    :func:`~ccx_asgi.breaker.target_id`)."""

    candidate: Candidate
    key: SecretStr | None
    index: int
    id: str


def order_targets(
    candidates: Sequence[Candidate],
    *,
    pinned: str | None = None,
    sticky: str | None = None,
    prefer_priority: bool = False,
) -> list[Target]:
    """The targets of ``candidates`` in the order failover tries them: channel priority, keys in list
    order; only ``pinned`` when set (the one account that holds a previous response); else the
    ``sticky`` target (affinity) first, or with ``prefer_priority`` first within its own channel."""
    targets: list[Target] = []
    for candidate in candidates:
        pairs = channel_targets(candidate.channel.name, candidate.channel.api_keys)
        targets.extend(Target(candidate, key, i, tid) for i, (key, tid) in enumerate(pairs))
    if pinned is not None:
        # Only that account holds the previous response: no other target can serve the follow-up.
        return [t for t in targets if t.id == pinned]
    if sticky is None:
        return targets
    chosen = next((t for t in targets if t.id == sticky), None)
    if chosen is None:
        return targets
    rest = [t for t in targets if t is not chosen]
    if not prefer_priority:
        return [chosen, *rest]
    # Keep channel priority (a healthy higher-priority channel wins; an open one is skipped
    # anyway), but use the sticky key first within its channel.
    name = chosen.candidate.channel.name
    first = next((i for i, t in enumerate(rest) if t.candidate.channel.name == name), None)
    return targets if first is None else [*rest[:first], chosen, *rest[first:]]
