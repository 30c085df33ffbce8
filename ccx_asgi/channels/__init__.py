"""Service types: the registry of adapters (what each type means), and the endpoint that does the
upstream I/O.

A service type is one :class:`~ccx_asgi.channels.base.ChannelAdapter`, registered here under its
``service_type`` name. The adapter owns everything the type means: its endpoint path, its auth
headers, its ``/models`` request, its conversion options, a fixed base URL and an in-process
transport if it has them, and the conversion itself. Settings validate ``service_type`` against
:func:`service_types`; the endpoint, ``GET /models``, the admin API, stored-response forwarding and
the upstream client's mounts all ask :func:`adapter_for`. Adding a type is writing one adapter
module and calling :func:`register`::

    from ccx_asgi.channels import register
    register("echo", EchoAdapter())
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ccx_asgi.channels.base import ChannelAdapter
from ccx_asgi.channels.chat import ChatAdapter
from ccx_asgi.channels.claude import ClaudeAdapter
from ccx_asgi.channels.demo import DemoAdapter
from ccx_asgi.channels.responses import ResponsesAdapter
from ccx_asgi.routing import matches_allowlist

if TYPE_CHECKING:
    import httpx

    from ccx_asgi.settings import ChannelConfig

__all__ = [
    "ADAPTERS",
    "ChannelAdapter",
    "adapter_for",
    "builtin_models",
    "local_transports",
    "register",
    "service_types",
    "unregister",
]

#: Adapters by ``service_type`` (the registry; change it through :func:`register`).
ADAPTERS: dict[str, ChannelAdapter] = {
    "responses": ResponsesAdapter(),
    "chat": ChatAdapter(),
    "claude": ClaudeAdapter(),
    "demo": DemoAdapter(),
}


def register(name: str, adapter: ChannelAdapter) -> None:
    """Make ``name`` a service type served by ``adapter`` (channels configured after this may use it)."""
    if name in ADAPTERS:
        raise ValueError(f"service type {name!r} is already registered")
    ADAPTERS[name] = adapter


def unregister(name: str) -> None:
    """Remove a service type :func:`register` added."""
    ADAPTERS.pop(name, None)


def service_types() -> tuple[str, ...]:
    """The registered service type names, in registration order."""
    return tuple(ADAPTERS)


def adapter_for(service_type: str) -> ChannelAdapter | None:
    """The adapter of ``service_type``, or ``None`` when it is not registered."""
    return ADAPTERS.get(service_type)


def builtin_models(channels: Iterable[ChannelConfig], listed: Container[str]) -> list[tuple[str, str]]:
    """``(model, channel name)`` pairs that enabled channels of types with ``builtin_models`` (the
    demo) add to ``GET /models``.

    Only channels without a ``model_map`` (those that have one list its names already), filtered by
    the channel's allowlist; names in ``listed`` and repeats are left out.
    """
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for channel in channels:
        adapter = adapter_for(channel.service_type)
        if adapter is None or not channel.enabled or channel.model_map:
            continue
        for model in adapter.builtin_models:
            if model not in listed and model not in seen and matches_allowlist(channel.models, model):
                seen.add(model)
                out.append((model, channel.name))
    return out


def local_transports() -> dict[str, httpx.AsyncBaseTransport]:
    """httpx mounts (``all://host``) for the types answered in process (the demo), by their fixed
    base URL's host."""
    mounts: dict[str, httpx.AsyncBaseTransport] = {}
    for adapter in ADAPTERS.values():
        transport = adapter.transport()
        if transport is not None and adapter.base_url:
            mounts["all://" + (urlsplit(adapter.base_url).hostname or "")] = transport
    return mounts
