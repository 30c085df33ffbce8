"""``python -m ccx_asgi`` (or ``ccx-asgi``): the standalone gateway (uvicorn), the sub-app mounted at ``/v1``.

With no channels configured it serves the built-in demo channel, so Codex works out of the box.

Every flag is also a ``CCX_`` variable (``--port`` is ``CCX_PORT``…); a flag wins over its
variable. The server binds its socket itself before starting uvicorn, so that "listening" is
logged only once the port is really ours and a bind failure ends the process with one line saying
why. ``--workers N`` runs N uvicorn worker processes that accept on that one socket; each builds its
own app from the environment (:func:`worker_app`), so breaker, affinity and stored-response state
is per process unless ``CCX_REDIS_URL`` points them at one Redis.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from ccx_asgi.app import CCXApp
from ccx_asgi.asgi import route_path, send_json
from ccx_asgi.errors import ConfigurationError
from ccx_asgi.hints import not_found_hint
from ccx_asgi.logs import configure_logging
from ccx_asgi.settings import CCXSettings, ChannelConfig, load_settings
from ccx_asgi.types import Receive, Scope, Send
from ccx_asgi.upstream import redact

__all__ = [
    "StandaloneApp",
    "build_parser",
    "build_standalone",
    "main",
    "raise_open_file_limit",
    "worker_app",
]

logger = logging.getLogger("ccx_asgi")

MOUNT = "/v1"

#: ``--flag`` → the ``CCX_`` variable it overrides.
_FLAG_VARIABLES = {"host": "CCX_HOST", "port": "CCX_PORT", "log_level": "CCX_LOG_LEVEL", "workers": "CCX_WORKERS"}
#: Exit status for a configuration problem (as before: the message names the variable).
_EXIT_CONFIG = 2
#: Exit status when the server cannot start (bind failure, uvicorn missing, app startup failed).
_EXIT_START = 1


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


def worker_app() -> StandaloneApp:
    """The app of one worker process (a uvicorn factory): settings and logging from the environment.

    The parent process has validated the same environment already, and has written its flags into
    it, so a worker sees exactly what the parent saw.
    """
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    return build_standalone(settings)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``--help``, ``--version`` and one flag per standalone-server setting."""
    from ccx_asgi import __version__

    parser = argparse.ArgumentParser(
        prog="ccx-asgi" if os.path.basename(sys.argv[0]) == "ccx-asgi" else "python -m ccx_asgi",
        description="Serve the ccx_asgi Responses gateway at http://HOST:PORT/v1 (POST /v1/responses). "
        "Channels, keys and every other setting come from CCX_* environment variables "
        "(see docs/configuration.md); with no CCX_CHANNELS the built-in demo channel answers.",
        epilog="Each flag overrides its environment variable. Breaker, affinity and stored-response state "
        "is per worker process unless CCX_REDIS_URL is set.",
    )
    parser.add_argument("--version", action="version", version=f"ccx_asgi {__version__}")
    parser.add_argument("--host", help="bind address (CCX_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port, 0 for any free one (CCX_PORT, default 3000)")
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (CCX_LOG_LEVEL, default INFO)",
    )
    parser.add_argument("--workers", type=int, help="worker processes behind the one port (CCX_WORKERS, default 1)")
    return parser


def raise_open_file_limit() -> tuple[int, int] | None:
    """Raise this process's open-file soft limit to its hard limit; ``(soft, hard)`` afterwards.

    Every concurrent stream holds two sockets (client and upstream), and common defaults (1024) are
    reached by a few hundred Codex sessions. ``None`` where the platform has no such limit (Windows).
    """
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            # macOS reports an unlimited hard limit that setrlimit refuses; keep what we have.
            logger.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def _limit_text(value: int) -> str:
    try:
        import resource
    except ImportError:  # pragma: no cover - only reached on POSIX
        return str(value)
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when the host has a colon), inheritable by workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Lets a restarted gateway bind while old connections are in TIME_WAIT; it does not let two
        # servers listen on one port (that still fails with "address already in use").
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _fail(message: str, status: int) -> SystemExit:
    print(f"ccx_asgi: {message}", file=sys.stderr)
    return SystemExit(status)


def _secrets(settings: CCXSettings) -> list[str]:
    values = [*settings.client_keys(), *settings.admin_keys(), *([settings.redis_url] if settings.redis_url else [])]
    for channel in settings.channels:
        values += [*channel.api_keys, *channel.headers.values()]
    return [v.get_secret_value() for v in values]


def _apply_flags(args: argparse.Namespace) -> None:
    # Flags go into the environment (not only into this process's settings) so that worker
    # processes, which read the environment, see them too.
    for name, variable in _FLAG_VARIABLES.items():
        value = getattr(args, name)
        if value is not None:
            os.environ[variable] = str(value)


def _log_state_scope(settings: CCXSettings) -> None:
    if settings.redis_url is not None:
        logger.info("breaker, affinity and stored-response state is shared through CCX_REDIS_URL")
    elif settings.workers > 1:
        logger.warning(
            "breaker, affinity and stored-response state is per process: each of the %d workers keeps its own "
            "(an open circuit or a conversation's channel in one worker is unknown to the others). "
            "Set CCX_REDIS_URL to share it.",
            settings.workers,
        )
    else:
        logger.info("breaker, affinity and stored-response state is in this process (CCX_REDIS_URL shares it)")


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, read the environment and serve until interrupted."""
    args = build_parser().parse_args(argv)
    _apply_flags(args)
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        raise _fail(str(exc), _EXIT_CONFIG) from None
    configure_logging(settings.log_format, settings.log_level)
    if not settings.client_keys() and not _is_loopback(settings.host):
        raise _fail(
            f"refusing to listen on {settings.host} without CCX_PROXY_ACCESS_KEY (anyone could use the upstream keys)",
            _EXIT_CONFIG,
        )
    try:
        import uvicorn
    except ImportError:
        raise _fail("the standalone server needs uvicorn: pip install 'ccx-asgi[server]'", _EXIT_START) from None

    single = settings.workers == 1
    # The app is built before binding, so a broken configuration never holds the port; workers
    # build their own (a factory by import string), this one then only proved that they can.
    try:
        built = build_standalone(settings)
    except ValueError as exc:  # ConfigurationError, or a library refusing a value (a malformed Redis URL)
        raise _fail(f"cannot start: {redact(str(exc), _secrets(settings))}", _EXIT_CONFIG) from None
    app: Any = built if single else "ccx_asgi.__main__:worker_app"
    limits = raise_open_file_limit()
    # "auto" picks uvloop and httptools when installed: they lower the latency floor for everyone.
    # Our formatter for uvicorn's own lines too; its access log is replaced by ccx_asgi.requests.
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, loop="auto", http="auto", factory=not single,
        workers=settings.workers, log_level=settings.log_level.lower(), log_config=None, access_log=False,
    )  # fmt: skip
    try:
        sock = _bind(settings.host, settings.port, config.backlog)
    except OSError as exc:
        raise _fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", _EXIT_START) from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    logger.info(
        "ccx_asgi listening on http://%s:%s%s (%d worker%s, pid %d)",
        shown, port, MOUNT, settings.workers, "" if single else "s", os.getpid(),
    )  # fmt: skip
    if limits is not None:
        logger.info("open-file limit: %s (hard limit %s)", _limit_text(limits[0]), _limit_text(limits[1]))
    _log_state_scope(settings)
    try:
        if single:
            server = uvicorn.Server(config)
            server.run(sockets=[sock])
            if not server.started:
                raise SystemExit(_EXIT_START)
        else:
            from uvicorn.supervisors import Multiprocess

            Multiprocess(config, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()


if __name__ == "__main__":
    main()
