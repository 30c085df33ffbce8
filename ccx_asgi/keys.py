"""Access keys: extraction from request headers and constant-time comparison, shared by the proxy
auth middleware and the admin guard.

Each key is stored as its SHA-256 digest and every presented key is compared with every stored digest
via :func:`hmac.compare_digest`, without an early exit: the time taken says nothing about which key
matched or how long the keys are.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
from collections.abc import Iterable

from pydantic import SecretStr

from ccx_asgi.asgi import header
from ccx_asgi.types import Scope

__all__ = ["KeySet", "presented_keys"]


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class KeySet:
    """Configured keys (empty ones ignored), checked in constant time."""

    __slots__ = ("_digests",)

    def __init__(self, keys: Iterable[str | SecretStr]) -> None:
        values = (k.get_secret_value() if isinstance(k, SecretStr) else k for k in keys)
        self._digests = tuple(_digest(v.encode()) for v in values if v)

    def __len__(self) -> int:
        return len(self._digests)

    def matches(self, presented: bytes) -> bool:
        """Whether ``presented`` is one of the keys."""
        digest = _digest(presented)
        ok = False
        for expected in self._digests:
            ok |= hmac.compare_digest(digest, expected)
        return ok


def presented_keys(scope: Scope, *, basic: bool = False) -> list[tuple[str, bytes]]:
    """The keys a request carries, each with the header it came in (for error messages).

    ``Authorization: Bearer <key>`` and ``x-api-key: <key>``; with ``basic``, also the password of
    ``Authorization: Basic`` (so a browser can open an admin page).
    """
    found: list[tuple[str, bytes]] = []
    auth = header(scope, b"authorization")
    if auth is not None:
        scheme, _, token = auth.strip().partition(b" ")
        token = token.strip()
        if scheme.lower() == b"bearer" and token:
            found.append(("Authorization: Bearer", token))
        elif basic and scheme.lower() == b"basic" and token:
            with contextlib.suppress(binascii.Error, ValueError):
                password = base64.b64decode(token, validate=True).partition(b":")[2]
                if password:
                    found.append(("HTTP Basic", password))
    api_key = header(scope, b"x-api-key")
    if api_key is not None and api_key.strip():
        found.append(("x-api-key", api_key.strip()))
    return found
