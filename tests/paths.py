"""Where the suite's own fixtures live (inside the repository, so any clone can run the tests)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CODEX_FIXTURES", "FIXTURES", "codex_bodies"]

#: ``tests/fixtures``.
FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: Recorded Codex request bodies (see ``tests/fixtures/codex/README.md``).
CODEX_FIXTURES = FIXTURES / "codex"


def codex_bodies() -> list[Path]:
    """The recorded ``request-*.json`` Codex bodies; never empty (a test over none would prove nothing)."""
    found = sorted(CODEX_FIXTURES.glob("request-*.json"))
    if not found:
        raise FileNotFoundError(f"no recorded Codex bodies in {CODEX_FIXTURES}")
    return found
