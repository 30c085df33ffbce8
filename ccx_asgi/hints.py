"""Helpful messages for the usual configuration mistakes.

Codex and SDK users get a base URL slightly wrong more often than anything else: ``/v1`` twice
(``…/v1/v1/responses``), no ``/v1`` at all (``…/responses``), or a Chat Completions client pointed at
a Responses-only gateway. The 404 then says what to configure instead (:func:`not_found_hint`).

Operators most often miss ``normalize_roles`` for an upstream that rejects Codex's ``developer``
role; the upstream's 400 then carries the fix (:func:`upstream_error_hint`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ccx_asgi.settings import ChannelConfig

__all__ = ["not_found_hint", "upstream_error_hint"]

# How upstreams word a rejected role: DeepSeek/Volcengine (serde) "unknown variant `developer`",
# others "invalid role: developer", "role 'developer' is not supported", "developer role".
_DEVELOPER_ROLE = re.compile(
    r"unknown variant\W+developer|role\W+(?:\w+\W+){0,3}developer|developer\W+(?:\w+\W+)?role", re.IGNORECASE
)

_CHAT = ("/chat/completions", "/completions")
_OURS = ("/responses", "/models")

_CHAT_HINT = (
    "This gateway speaks the OpenAI Responses API (POST {api}/responses), not Chat Completions. "
    'Configure the client to use the Responses API: in Codex set wire_api = "responses" for this '
    "model provider; with the OpenAI SDK call client.responses.create(...)."
)


def not_found_hint(client_path: str, route: str, *, mount: str = "") -> str | None:
    """A hint for a request path that looks like a configuration mistake, else ``None``.

    ``client_path`` is the full path the client called (shown in the message). ``route`` is the path
    relative to the app that answers: the sub-app passes its route path with ``mount=""``; a root app
    that mounts the sub-app at ``mount`` (``/v1``) passes its own path and the mount.
    """
    path = route.rstrip("/") or "/"
    api = client_path[: len(client_path) - len(route)].rstrip("/") + mount if route else mount
    if mount:
        if path in _OURS:
            return (
                f"No route at {client_path}: the Responses API lives under {mount}. Set the client's base "
                f"URL to end in {mount} (for example http://HOST:PORT{mount}); clients append /responses."
            )
        if path in _CHAT or path.endswith(_CHAT):
            return _CHAT_HINT.format(api=mount) + f" The base URL must end in {mount}."
        return None
    inner = path
    while inner.startswith("/v1/"):
        inner = inner[3:]
    if inner != path and (inner in _OURS or inner in _CHAT or inner == "/messages"):
        return (
            f"No route at {client_path}: the base URL has a version segment twice. Set the client's base "
            f"URL to http://HOST:PORT{api or '/v1'} (ending in a single /v1); clients append /responses."
        )
    if path in _CHAT:
        return _CHAT_HINT.format(api=api)
    if path == "/messages":
        return (
            f"This gateway speaks the OpenAI Responses API (POST {api}/responses), not Anthropic Messages. "
            "Point an OpenAI Responses client (Codex, the OpenAI SDK) at it instead."
        )
    if path.endswith("/responses"):
        return (
            f"No route at {client_path}: set the client's base URL to {api or 'the mount path'} exactly; "
            "clients append /responses themselves."
        )
    return None


def upstream_error_hint(channel: ChannelConfig, status: int, message: str) -> str:
    """Text to append to an upstream's error ``message`` (status ``status``) that says how to fix it, or ``""``.

    Only a 400/422 that rejects the ``developer`` role on a channel without ``normalize_roles``
    gets one today; the upstream's own words stay first, unchanged.
    """
    if status in (400, 422) and not channel.normalize_roles and _DEVELOPER_ROLE.search(message):
        return (
            f' (the upstream rejects the "developer" role Codex sends: set "normalize_roles": true on channel '
            f'{channel.name!r} in CCX_CHANNELS to send it as "system")'
        )
    return ""
