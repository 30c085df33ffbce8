"""``ModelMapperMiddleware``: parse the body once and choose the candidate channels.

It reads the request body (bounded by ``max_body_bytes``, 413 beyond), parses it once, validates
the envelope (a JSON object with a string ``model``), and stores a
:class:`~ccx_asgi.context.RequestContext` under ``scope["ccx"]`` on a shallow copy of the scope,
with the candidate channels for the requested model in priority order and each one's upstream
model. No candidate → 404 ``model_not_found`` that names the model and explains why. The wrapped
app's ``receive`` replays the body bytes read here, so a host endpoint behind it can read the body.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ccx_asgi.asgi import ensure_request_id, request_id
from ccx_asgi.body import read_request_json, replay
from ccx_asgi.context import SCOPE_KEY, RequestContext
from ccx_asgi.errors import CCXError, ModelNotFoundError, send_error
from ccx_asgi.routing import Router
from ccx_asgi.settings import ChannelConfig
from ccx_asgi.types import ASGIApp, Receive, Scope, Send

__all__ = ["ModelMapperMiddleware"]


class ModelMapperMiddleware:
    """Parse the body into ``scope["ccx"]`` and pick candidates (see the module docstring).

    ``channels`` are compiled once here; ``max_body_bytes`` bounds the body (default 50 MB);
    ``on_context`` is called with the scope and the new context before the wrapped app runs (the
    app uses it to hand the context to the request log).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        channels: Sequence[ChannelConfig],
        max_body_bytes: int = 50 * 1024 * 1024,
        on_context: Callable[[Scope, RequestContext], None] | None = None,
    ) -> None:
        self.app = app
        self.router = Router(channels)
        self.max_body_bytes = max_body_bytes
        self.on_context = on_context

    def _not_found(self, model: str) -> ModelNotFoundError:
        if not self.router.channels:
            return ModelNotFoundError(
                f"The model '{model}' does not exist: no channels are configured (set CCX_CHANNELS).",
                param="model",
            )
        return ModelNotFoundError(
            f"The model '{model}' does not exist or you do not have access to it: no enabled channel's "
            "allowlist ('models') matches it. The allowlist is checked against the requested model; "
            "'model_map' only renames the model sent upstream, so add the requested name (or a pattern "
            "such as 'gpt*') to a channel's 'models', or leave 'models' empty to allow all.",
            param="model",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Build the request context, then call the wrapped app with it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The head of the /responses pipeline: used without the app, it owns the request id.
        scope, send = ensure_request_id(scope, send)
        rid = request_id(scope)
        try:
            raw, parsed = await read_request_json(receive, scope, self.max_body_bytes)
            ctx = RequestContext.from_body(parsed, request_id=rid, headers=list(scope.get("headers") or ()))
            ctx.candidates = self.router.candidates(ctx.model)
            if not ctx.candidates:
                raise self._not_found(ctx.model)
            if self.on_context is not None:
                self.on_context(scope, ctx)
        except CCXError as exc:
            await send_error(send, exc)
            return
        # The gateway's layers read ctx.body; a host endpoint behind the mapper may read the bytes.
        await self.app({**scope, SCOPE_KEY: ctx}, replay(raw, receive), send)
