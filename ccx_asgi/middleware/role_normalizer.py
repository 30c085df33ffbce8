"""``RoleNormalizerMiddleware``: rewrite non-standard roles for upstreams that reject them.

Placed after the failover layer, it runs once per attempt: for a channel with ``normalize_roles``
(or for every channel with ``always=True``) the attempt's body gets ``developer`` → ``system`` and
other non-standard roles → ``user``. The client's parsed body is never mutated, so the next
candidate sees the original roles. Useful in front of a passthrough channel whose upstream answers
"unknown variant `developer`".
"""

from __future__ import annotations

from ccx_asgi.context import SCOPE_KEY, RequestContext
from ccx_asgi.convert.roles import normalize_roles
from ccx_asgi.types import ASGIApp, Receive, Scope, Send

__all__ = ["RoleNormalizerMiddleware"]


class RoleNormalizerMiddleware:
    """Normalise roles in ``scope["ccx"].attempt.body`` (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, always: bool = False) -> None:
        self.app = app
        self.always = always

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rewrite the attempt's body when its channel asks for it, then call the wrapped app."""
        if scope["type"] == "http":
            ctx = scope.get(SCOPE_KEY)
            if isinstance(ctx, RequestContext) and ctx.attempt is not None:
                attempt = ctx.attempt
                if self.always or attempt.channel.normalize_roles:
                    attempt.body = normalize_roles(attempt.body)
        await self.app(scope, receive, send)
