"""Real HTTP servers for tests: any ASGI app served by uvicorn on a free loopback port."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import httpx
import uvicorn


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(
    app: Any, *, port: int | None = None, lifespan: Literal["auto", "on", "off"] = "auto", loop: str = "auto"
) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread; yield its base URL ``http://127.0.0.1:PORT``.

    ``loop="auto"`` runs it on uvloop when installed, as ``uvicorn.run`` and the standalone server
    do (so the gateway's own code, its upstream client included, is tested on the loop it runs on);
    ``"asyncio"`` forces the standard loop.
    """
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan)
    server = uvicorn.Server(config)
    run: Any = asyncio.run
    if loop == "auto":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            run = uvloop.run

    async def main() -> None:
        try:
            await server.serve()
        finally:
            # An app served without lifespan events (or whose lifespan did not run) still closes its
            # upstream connections on the loop that opened them (CCXApp.aclose is idempotent).
            close = getattr(app, "aclose", None)
            if close is not None:
                await close()

    thread = threading.Thread(target=lambda: run(main()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_serving(url: str, proc: subprocess.Popen[str], seconds: float = 30) -> bool:
    """Poll ``url`` until a server process answers; ``False`` when it exits or ``seconds`` pass first.

    Any HTTP answer counts (a 404 at ``/`` is still a listening server).
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            httpx.get(url, timeout=2)
            return True
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                return False
            time.sleep(0.05)
