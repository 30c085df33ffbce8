"""``python -m ccx_asgi``: the standalone gateway (uvicorn), with the sub-app mounted at ``/v1``.

With no channels configured it serves the built-in demo channel, so Codex works out of the box.
"""

from __future__ import annotations

import ipaddress
import logging
import sys

from ccx_asgi.app import CCXApp
from ccx_asgi.asgi import route_path, send_json
from ccx_asgi.errors import ConfigurationError
from ccx_asgi.hints import not_found_hint
from ccx_asgi.observability import configure_logging
from ccx_asgi.settings import CCXSettings, ChannelConfig, load_settings
from ccx_asgi.types import Receive, Scope, Send

__all__ = ["StandaloneApp", "build_standalone", "main"]

logger = logging.getLogger("ccx_asgi")

MOUNT = "/v1"


class StandaloneApp:
    """A minimal root app: the ccx sub-app at ``/v1`` and a hint at ``/``."""

    def __init__(self, ccx: CCXApp) -> None:
        self.ccx = ccx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch to the sub-app or answer the hint."""
        if scope["type"] == "lifespan":
            await self.ccx(scope, receive, send)
            return
        path = route_path(scope)
        if path == MOUNT or path.startswith(MOUNT + "/"):
            root = (scope.get("root_path") or "") + MOUNT
            await self.ccx({**scope, "root_path": root, "path": root + path[len(MOUNT) :]}, receive, send)
            return
        if scope["type"] == "http":
            await send_json(
                send,
                {"error": {
                    "message": not_found_hint(path, path, mount=MOUNT)
                    or f"ccx_asgi serves the OpenAI Responses API under {MOUNT}: point clients at "
                    f"a base URL ending in {MOUNT} (they append /responses).",
                    "type": "invalid_request_error", "param": None, "code": "not_found",
                }},
                status=404,
            )  # fmt: skip


def build_standalone(settings: CCXSettings) -> StandaloneApp:
    """The standalone app for ``settings``; adds the demo channel when none is configured."""
    if not settings.channels:
        settings = settings.model_copy(update={"channels": [ChannelConfig(name="demo", service_type="demo")]})
        logger.warning(
            "no CCX_CHANNELS configured: serving the built-in DEMO channel (canned answers, no upstream). "
            "Set CCX_CHANNELS to reach a real model."
        )
    return StandaloneApp(CCXApp(settings))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main() -> None:
    """Read the environment and serve until interrupted."""
    import uvicorn

    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"ccx_asgi: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_format, settings.log_level)
    if not settings.client_keys() and not _is_loopback(settings.host):
        print(
            f"ccx_asgi: refusing to listen on {settings.host} without CCX_PROXY_ACCESS_KEY "
            "(anyone could use the upstream keys)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    app = build_standalone(settings)
    logger.info("ccx_asgi listening on http://%s:%s%s", settings.host, settings.port, MOUNT)
    # "auto" picks uvloop and httptools when installed: they lower the latency floor for everyone.
    # Our formatter for uvicorn's own lines too; its access log is replaced by ccx_asgi.requests.
    uvicorn.run(
        app, host=settings.host, port=settings.port, loop="auto", http="auto",
        log_level=settings.log_level.lower(), log_config=None, access_log=False,
    )  # fmt: skip


if __name__ == "__main__":
    main()
