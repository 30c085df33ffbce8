"""A Litestar service with its own routes and ccx_asgi mounted at ``/v1``.

Run it (settings come from the ``CCX_*`` environment when the app is built, not at import)::

    CCX_PROXY_ACCESS_KEY=change-me uvicorn --factory examples.litestar_app.app:create_host_app --port 8000
"""

from __future__ import annotations

from litestar import Litestar, asgi, get
from litestar.types import Receive, Scope, Send

from ccx_asgi import CCXApp, create_app


def build_host_app(ccx: CCXApp) -> Litestar:
    """The host app around an already built ccx sub-app."""

    @get("/health")
    async def health() -> dict[str, str]:
        """The host's own route."""
        return {"status": "ok"}

    @asgi("/v1", is_mount=True, copy_scope=True)
    async def gateway(scope: Scope, receive: Receive, send: Send) -> None:
        """Everything under /v1 goes to ccx (Litestar strips the mount path for us)."""
        await ccx(scope, receive, send)  # type: ignore[arg-type]

    # Mounted apps get no lifespan events, so the host closes ccx's upstream client itself.
    return Litestar(route_handlers=[health, gateway], on_shutdown=[ccx.aclose])


def create_host_app() -> Litestar:
    """Factory for ``uvicorn --factory``: reads the ``CCX_*`` environment now."""
    return build_host_app(create_app())
