"""``CCXApp``: the mountable Responses sub-app, and :func:`create_app` to build it from settings.

Routes are relative to where the app is mounted (``/v1`` in the examples):

- ``POST /responses`` → Auth → ModelMapper → Stateful → Failover → RoleNormalizer → ChannelEndpoint
  (:class:`~ccx_asgi.middleware.stateful.StatefulMiddleware` expands and stores stored responses)
- ``GET /models`` → Auth → the list of models clients may request (:mod:`ccx_asgi.catalog`)
- ``GET``/``DELETE /responses/{id}``, ``GET /responses/{id}/input_items`` and
  ``POST /responses/{id}/cancel`` → Auth → stored responses (:mod:`ccx_asgi.responses_api`)
- ``GET /admin/channels``, ``GET /admin/`` and ``GET /metrics`` → the operator endpoints
  (:mod:`ccx_asgi.admin`), behind the admin key

Every HTTP request gets one request id (the client's ``x-request-id``/``x-client-request-id`` or a
new one), returned in ``x-request-id``, and one :class:`~ccx_asgi.observability.RequestRecord` that
becomes the request's log line, its entry in the recent-request ring and its metrics.

Mounted sub-apps get no lifespan events from Starlette/FastAPI, so the upstream client is created
lazily; hosts close it with :meth:`CCXApp.aclose` or by entering :meth:`CCXApp.lifespan` from their
own lifespan. Run standalone, the app also answers ASGI lifespan events itself.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import httpx

from ccx_asgi.admin import AdminAPI, AdminGuard, ChannelStateProvider
from ccx_asgi.asgi import REQUEST_ID_KEY, request_id, route_path, send_json, with_request_id
from ccx_asgi.breaker import BreakerConfig
from ccx_asgi.catalog import ModelCatalog
from ccx_asgi.channels import local_transports
from ccx_asgi.channels.endpoint import ChannelEndpoint
from ccx_asgi.errors import CCXError, InvalidRequestError, NotFoundError, send_error
from ccx_asgi.hints import not_found_hint
from ccx_asgi.middleware.auth import AuthMiddleware
from ccx_asgi.middleware.failover import FailoverMiddleware
from ccx_asgi.middleware.model_mapper import ModelMapperMiddleware
from ccx_asgi.middleware.role_normalizer import RoleNormalizerMiddleware
from ccx_asgi.middleware.stateful import ChainAttemptMiddleware, StatefulMiddleware
from ccx_asgi.observability import RECORD_KEY, Observer, RecentRequests, RequestRecord, record_context
from ccx_asgi.responses_api import StoredResponsesAPI, stored_route
from ccx_asgi.routing import ordered_channels
from ccx_asgi.settings import CCXSettings, load_settings
from ccx_asgi.state import StateStore, create_store
from ccx_asgi.store import ResponseStore
from ccx_asgi.types import ASGIApp, Message, Receive, Scope, Send
from ccx_asgi.upstream import Upstream

if TYPE_CHECKING:
    from ccx_asgi.metrics import Metrics

__all__ = ["CCXApp", "create_app"]

logger = logging.getLogger("ccx_asgi")


class _Started:
    """Wraps ``send``: knows whether a response has begun (for the error boundary), feeds the request
    record, and adds ``x-request-id`` to responses that lack it."""

    __slots__ = ("record", "send", "started")

    def __init__(self, send: Send, record: RequestRecord) -> None:
        self.send = send
        self.record = record
        self.started = False

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            self.record.on_body(message.get("body", b""))
        elif kind == "http.response.start":
            self.started = True
            self.record.on_start(message["status"])
            message = with_request_id(message, self.record.request_id)
        await self.send(message)


def _metrics(channels: list[str]) -> Metrics | None:
    """A :class:`~ccx_asgi.metrics.Metrics`, or ``None`` when prometheus-client is not installed."""
    try:
        from ccx_asgi.metrics import Metrics
    except ImportError:
        logger.info("prometheus-client is not installed: /metrics is off (pip install 'ccx-asgi[metrics]')")
        return None
    return Metrics(channels)


class CCXApp:
    """The ccx_asgi sub-app. Build it with :func:`create_app`.

    ``settings`` is the validated configuration; ``transport`` replaces the network for upstream
    calls (tests, or a host's own transport); ``state_provider`` supplies per-channel breaker and
    affinity state to the admin endpoints (also settable later as ``app.admin.state_provider``).
    """

    def __init__(
        self,
        settings: CCXSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        state_provider: ChannelStateProvider | None = None,
    ) -> None:
        from ccx_asgi import __version__

        self.settings = settings
        self.channels = ordered_channels(settings.channels)
        self.upstream = Upstream(
            transport=transport,
            mounts=local_transports(),
            proxy=settings.upstream_proxy.get_secret_value() if settings.upstream_proxy else None,
            trust_env=settings.upstream_trust_env,
            keepalive_expiry=settings.upstream_keepalive_expiry,
        )
        self.catalog = ModelCatalog(
            self.channels,
            self.upstream,
            fetch=settings.models_from_upstream,
            ttl=settings.models_cache_ttl,
            timeout=settings.models_fetch_timeout,
        )
        names = [c.name for c in settings.channels]
        secrets = [k.get_secret_value() for k in [*settings.client_keys(), *settings.admin_keys()]]
        for configured in settings.channels:
            secrets += [k.get_secret_value() for k in configured.api_keys]
            secrets += [v.get_secret_value() for v in configured.headers.values()]
        self.observer = Observer(RecentRequests(names, settings.recent_requests), _metrics(names), secrets)
        self.admin = AdminAPI(
            settings.channels,
            self.observer,
            AdminGuard(settings.admin_keys(), open_gateway=not settings.client_keys() and not settings.admin_keys()),
            metrics_path=settings.metrics_path or None,
            state_provider=state_provider,
            version=__version__,
        )
        responses: ASGIApp = ChainAttemptMiddleware(ChannelEndpoint(self.upstream))
        responses = RoleNormalizerMiddleware(responses)
        redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
        self.state: StateStore = create_store(redis_url, prefix=settings.redis_prefix)
        self.responses_store = ResponseStore(
            self.state,
            enabled=settings.response_store,
            ttl=settings.response_store_ttl,
            max_entries=settings.response_store_max_entries,
            max_bytes=settings.response_store_max_bytes,
        )
        failover = FailoverMiddleware(
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
        if state_provider is None:
            # Breaker state for the admin API and metrics comes from the failover layer's store.
            self.admin.state_provider = lambda: failover.channel_states(self.channels)
        client_keys = settings.client_keys()
        responses = StatefulMiddleware(failover, store=self.responses_store, client_keys=client_keys)
        responses = ModelMapperMiddleware(
            responses, channels=self.channels, max_body_bytes=settings.max_body_bytes, on_context=record_context
        )
        models: ASGIApp = self._serve_models
        stored: ASGIApp = StoredResponsesAPI(
            self.responses_store, self.channels, self.upstream, client_keys=client_keys
        )
        if client_keys:
            responses = AuthMiddleware(responses, keys=client_keys)
            models = AuthMiddleware(models, keys=client_keys)
            stored = AuthMiddleware(stored, keys=client_keys)
        else:
            logger.warning(
                "CCX_PROXY_ACCESS_KEY is not set: every client is accepted. Set it before exposing the gateway."
            )
        self._stored = stored
        if not self.channels:
            logger.warning("no enabled channels (CCX_CHANNELS is empty): every request will get model_not_found")
        self._routes: dict[tuple[str, str], ASGIApp] = {
            ("POST", "/responses"): responses,
            ("GET", "/models"): models,
            ("GET", "/admin/channels"): self.admin.channels_json,
            ("GET", "/admin/"): self.admin.status_page,
            ("GET", "/admin"): self.admin.redirect_to_page,
        }
        if settings.metrics_path:
            self._routes["GET", settings.metrics_path] = self.admin.metrics

    async def aclose(self) -> None:
        """Close the upstream HTTP client and the state stores (safe to call more than once)."""
        await self.upstream.aclose()
        await self.responses_store.aclose()
        await self.state.aclose()

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[CCXApp]:
        """Async context for a host's lifespan: closes the upstream client on exit."""
        try:
            yield self
        finally:
            await self.aclose()

    async def _serve_models(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, await self.catalog.listing(request_id(scope)))

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
        rid = request_id(scope)
        record = RequestRecord(rid, method, scope.get("path") or path, path)
        # One copy of the scope carries the id and the record to every layer (inner copies share them).
        scope = {**scope, REQUEST_ID_KEY: rid, RECORD_KEY: record}
        # Litestar mounts hand over "/responses/"; a trailing slash never changes the route.
        handler = self._routes.get((method, path)) or self._routes.get((method, path.rstrip("/")))
        if handler is None and stored_route(method, path):
            handler = self._stored
        responder = _Started(send, record)
        try:
            if handler is None:
                raise self._no_route(method, path, record.path)
            await handler(scope, receive, responder)
        except CCXError as exc:
            if responder.started:
                logger.warning("request %s: error after the response started: %s", rid, exc.message)
                return
            await send_error(responder, exc)
        except Exception as exc:
            record.exception = type(exc).__name__
            logger.exception("request %s: unhandled error while serving %s %s", rid, method, path)
            if not responder.started:
                await send_error(responder, CCXError("Internal gateway error; see the gateway log."))
        finally:
            self.observer.finish(record)

    def _no_route(self, method: str, path: str, client_path: str) -> CCXError:
        known = {p for _, p in self._routes}
        if path in known:
            allowed = ", ".join(m for m, p in self._routes if p == path)
            return InvalidRequestError(f"Method {method} is not allowed on {path}; use {allowed}.", status=405)
        hint = not_found_hint(client_path, path)
        if hint is not None:
            return NotFoundError(hint)
        return NotFoundError(
            f"No route {method} {path}. This gateway serves POST /responses, GET and DELETE /responses/{{id}}, "
            "GET /responses/{id}/input_items, POST /responses/{id}/cancel and GET /models."
        )


def create_app(
    settings: CCXSettings | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    state_provider: ChannelStateProvider | None = None,
) -> CCXApp:
    """Build a :class:`CCXApp`; settings are read from the environment when not given.

    Raises :class:`~ccx_asgi.errors.ConfigurationError` with a readable message for bad settings.
    """
    return CCXApp(
        settings if settings is not None else load_settings(), transport=transport, state_provider=state_provider
    )
