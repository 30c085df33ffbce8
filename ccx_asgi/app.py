"""``CCXApp``: the mountable Responses sub-app, and :func:`create_app` to build it from settings.

Routes are relative to where the app is mounted (``/v1`` in the examples):

- ``POST /responses`` → Auth → ModelMapper → Failover → RoleNormalizer → ChannelEndpoint
- ``GET /models`` → Auth → the list of models clients may request

Mounted sub-apps get no lifespan events from Starlette/FastAPI, so the upstream client is created
lazily; hosts close it with :meth:`CCXApp.aclose` or by entering :meth:`CCXApp.lifespan` from their
own lifespan. Run standalone, the app also answers ASGI lifespan events itself.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from ccx_asgi.asgi import request_id, route_path, send_json
from ccx_asgi.breaker import BreakerConfig
from ccx_asgi.channels.demo import DemoTransport
from ccx_asgi.channels.endpoint import ChannelEndpoint
from ccx_asgi.errors import CCXError, InvalidRequestError, NotFoundError, send_error
from ccx_asgi.middleware.auth import AuthMiddleware
from ccx_asgi.middleware.failover import FailoverMiddleware
from ccx_asgi.middleware.model_mapper import ModelMapperMiddleware
from ccx_asgi.middleware.role_normalizer import RoleNormalizerMiddleware
from ccx_asgi.routing import ordered_channels, public_models
from ccx_asgi.settings import CCXSettings, load_settings
from ccx_asgi.state import StateStore, create_store
from ccx_asgi.types import ASGIApp, Message, Receive, Scope, Send
from ccx_asgi.upstream import Upstream

__all__ = ["CCXApp", "create_app"]

logger = logging.getLogger("ccx_asgi")


class _Started:
    """Wraps ``send`` to know whether a response has begun (for the error boundary)."""

    __slots__ = ("send", "started")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class CCXApp:
    """The ccx_asgi sub-app. Build it with :func:`create_app`.

    ``settings`` is the validated configuration; ``transport`` replaces the network for upstream
    calls (tests, or a host's own transport).
    """

    def __init__(self, settings: CCXSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.channels = ordered_channels(settings.channels)
        self.upstream = Upstream(transport=transport, demo_transport=DemoTransport())
        self._models = {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": channel}
                for name, channel in public_models(self.channels)
            ],
        }
        responses: ASGIApp = ChannelEndpoint(self.upstream)
        responses = RoleNormalizerMiddleware(responses)
        redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
        self.state: StateStore = create_store(redis_url, prefix=settings.redis_prefix)
        responses = FailoverMiddleware(
            responses,
            state=self.state,
            breaker=BreakerConfig(
                failure_threshold=settings.breaker_failure_threshold,
                failure_ratio=settings.breaker_failure_ratio,
                window=settings.breaker_window,
                min_requests=settings.breaker_min_requests,
                backoff=settings.breaker_backoff,
                max_backoff=max(settings.breaker_max_backoff, settings.breaker_backoff),
                probe_timeout=settings.breaker_probe_timeout,
            ),
            affinity_ttl=settings.affinity_ttl,
            affinity_prefer_priority=settings.affinity_prefer_priority,
            keepalive_interval=settings.keepalive_interval,
            key_park_seconds=settings.key_park_seconds,
            max_retry_after=settings.max_retry_after,
        )
        responses = ModelMapperMiddleware(responses, channels=self.channels, max_body_bytes=settings.max_body_bytes)
        models: ASGIApp = self._serve_models
        client_keys = settings.client_keys()
        if client_keys:
            responses = AuthMiddleware(responses, keys=client_keys)
            models = AuthMiddleware(models, keys=client_keys)
        else:
            logger.warning(
                "CCX_PROXY_ACCESS_KEY is not set: every client is accepted. Set it before exposing the gateway."
            )
        if not self.channels:
            logger.warning("no enabled channels (CCX_CHANNELS is empty): every request will get model_not_found")
        self._routes: dict[tuple[str, str], ASGIApp] = {
            ("POST", "/responses"): responses,
            ("GET", "/models"): models,
        }

    async def aclose(self) -> None:
        """Close the upstream HTTP client and the state store (safe to call more than once)."""
        await self.upstream.aclose()
        await self.state.aclose()

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[CCXApp]:
        """Async context for a host's lifespan: closes the upstream client on exit."""
        try:
            yield self
        finally:
            await self.aclose()

    async def _serve_models(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, self._models)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route one ASGI call."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = route_path(scope)
        method = scope.get("method", "GET")
        handler = self._routes.get((method, path))
        responder = _Started(send)
        try:
            if handler is None:
                raise self._no_route(method, path)
            await handler(scope, receive, responder)
        except CCXError as exc:
            if responder.started:
                logger.warning("error after the response started: %s", exc.message)
                return
            await send_error(send, exc, [(b"x-request-id", request_id(scope).encode())])
        except Exception:
            logger.exception("unhandled error while serving %s %s", method, path)
            if not responder.started:
                await send_error(
                    send,
                    CCXError("Internal gateway error; see the gateway log."),
                    [(b"x-request-id", request_id(scope).encode())],
                )

    def _no_route(self, method: str, path: str) -> CCXError:
        known = {p for _, p in self._routes}
        if path in known:
            allowed = ", ".join(m for m, p in self._routes if p == path)
            return InvalidRequestError(f"Method {method} is not allowed on {path}; use {allowed}.", status=405)
        return NotFoundError(f"No route {method} {path}. This gateway serves POST /responses and GET /models.")


def create_app(settings: CCXSettings | None = None, *, transport: httpx.AsyncBaseTransport | None = None) -> CCXApp:
    """Build a :class:`CCXApp`; settings are read from the environment when not given.

    Raises :class:`~ccx_asgi.errors.ConfigurationError` with a readable message for bad settings.
    """
    return CCXApp(settings if settings is not None else load_settings(), transport=transport)
