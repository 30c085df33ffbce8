"""A FastAPI service with its own routes and ccx_asgi mounted at ``/v1``.

Run it (settings come from the ``CCX_*`` environment when the app is built, not at import)::

    CCX_PROXY_ACCESS_KEY=change-me uvicorn --factory examples.fastapi_app.app:create_host_app --port 8000

Then point Codex at ``http://127.0.0.1:8000/v1``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ccx_asgi import CCXApp, create_app


def build_host_app(ccx: CCXApp) -> FastAPI:
    """The host app around an already built ccx sub-app."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Mounted sub-apps get no lifespan events, so the host closes ccx's upstream client itself.
        async with ccx.lifespan():
            yield

    app = FastAPI(title="Example service with a Codex gateway", lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """The host's own route."""
        return {"status": "ok"}

    @app.get("/greet/{name}")
    async def greet(name: str) -> dict[str, str]:
        """Another host route, to show ccx does not get in the way."""
        return {"greeting": f"hello {name}"}

    app.mount("/v1", ccx)
    return app


def create_host_app() -> FastAPI:
    """Factory for ``uvicorn --factory``: reads the ``CCX_*`` environment now."""
    return build_host_app(create_app())
