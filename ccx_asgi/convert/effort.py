"""Reasoning effort levels and thinking limits: the one place they are written down.

The settings validate a channel's ``thinking_budgets`` against these, :func:`reasoning_effort` reads a
request's ``reasoning.effort`` with them, and the Claude converter turns an effort into a thinking
budget or an adaptive effort level.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["DEFAULT_THINKING_BUDGETS", "EFFORTS", "MIN_THINKING_BUDGET", "reasoning_effort"]

#: The ``reasoning.effort`` levels that ask for reasoning, lowest first (``none`` asks for none).
EFFORTS = ("minimal", "low", "medium", "high", "xhigh")
#: Claude rejects smaller thinking budgets.
MIN_THINKING_BUDGET = 1024
#: ``reasoning.effort`` → Claude ``thinking.budget_tokens`` unless the channel configures its own table.
DEFAULT_THINKING_BUDGETS: Mapping[str, int] = MappingProxyType(
    {"minimal": 1024, "low": 4096, "medium": 10000, "high": 24000, "xhigh": 32000}
)

_EFFORTS = frozenset(EFFORTS)


def reasoning_effort(body: dict[str, Any]) -> str | None:
    """The requested ``reasoning.effort`` (``minimal`` … ``xhigh``), or ``None`` for absent/``none``."""
    reasoning = body.get("reasoning")
    if not isinstance(reasoning, dict):
        return None
    effort = reasoning.get("effort")
    return effort if isinstance(effort, str) and effort in _EFFORTS else None
