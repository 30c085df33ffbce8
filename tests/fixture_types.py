"""Types of the shared fixtures in ``tests/conftest.py``, for annotating the tests that take them."""

from __future__ import annotations

from typing import Protocol

import httpx

from ccx_asgi import CCXApp


class ClientFor(Protocol):
    """The ``client_for`` fixture: an in-process client for an app, with the proxy key (or ``key``)."""

    def __call__(self, app: CCXApp, key: str | None = ...) -> httpx.AsyncClient: ...
