"""``AuthMiddleware``: the proxy access-key check, usable on its own in any ASGI stack.

Example (FastAPI/Starlette)::

    app.add_middleware(AuthMiddleware, keys=["my-proxy-key"])

Keys are read from ``Authorization: Bearer <key>`` and ``x-api-key`` and compared in constant time
(:mod:`ccx_asgi.keys`); a refusal says which header was checked but never echoes the key.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import SecretStr

from ccx_asgi.asgi import ensure_request_id
from ccx_asgi.errors import AuthenticationError, send_error
from ccx_asgi.keys import KeySet, presented_keys
from ccx_asgi.types import ASGIApp, Receive, Scope, Send

__all__ = ["AuthMiddleware"]


class AuthMiddleware:
    """Reject HTTP requests that do not carry one of ``keys`` (401, OpenAI error shape).

    ``key_name`` is the setting named in error messages, so a user knows which key is expected.
    Non-HTTP scopes (lifespan, websocket) pass through untouched.
    """

    def __init__(
        self, app: ASGIApp, *, keys: Iterable[str | SecretStr], key_name: str = "CCX_PROXY_ACCESS_KEY"
    ) -> None:
        self.app = app
        keys = list(keys)
        self._keys = KeySet(keys)
        if not keys or len(self._keys) != len(keys):
            raise ValueError("AuthMiddleware needs at least one non-empty key")
        self.key_name = key_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the key, then call the wrapped app."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        presented = presented_keys(scope)
        if any(self._keys.matches(value) for _, value in presented):
            await self.app(scope, receive, send)
            return
        if presented:
            where = " and ".join(f"the {name} header" for name, _ in presented)
            message = (
                f"Invalid API key in {where}. Clients must send the gateway's access key "
                f"({self.key_name}), not an upstream provider key; check that a stale OPENAI_API_KEY "
                "or provider env_key is not overriding it."
            )
        else:
            message = (
                "Missing API key. Send the gateway's access key "
                f"({self.key_name}) as 'Authorization: Bearer <key>' or in the 'x-api-key' header."
            )
        # Used on its own in front of a host's app, only this layer's own answer carries the id.
        _, send = ensure_request_id(scope, send)
        await send_error(send, AuthenticationError(message), [(b"www-authenticate", b'Bearer realm="ccx"')])
