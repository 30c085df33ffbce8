"""Render the admin status page with headless Chromium and save a screenshot.

Usage (from the repository root; needs Debian's ``chromium`` package and the ``server`` extra)::

    python scripts/screenshot_status.py [docs/admin-status.png]

It starts the standalone gateway on a free loopback port with three channels (one unreachable, so
that requests fail over; one demo channel that answers; one disabled), sends a few requests through
real HTTP, and points Chromium at ``/v1/admin/`` with the admin key as HTTP Basic credentials.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ccx_asgi import ChannelConfig, create_app, load_settings  # noqa: E402
from ccx_asgi.__main__ import StandaloneApp  # noqa: E402
from tests.servers import free_port, serve  # noqa: E402

PROXY_KEY = "sk-proxy-screenshot-0000000000000001"
ADMIN_KEY = "admin-screenshot-key-000000000000001"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str | None:
    """The Chromium binary on ``PATH``, if any."""
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def _closed_port() -> int:
    # A port nobody listens on: connections are refused at once, which is the failover we want to show.
    return free_port()


@contextmanager
def running_gateway() -> Iterator[str]:
    """Serve a demo configuration with uvicorn; yield the base URL (``http://127.0.0.1:PORT``)."""
    channels = [
        ChannelConfig(
            name="primary",
            service_type="responses",
            base_url=f"http://127.0.0.1:{_closed_port()}/v1",
            api_keys=[SecretStr("sk-primary-key-aaaaaaaaaaaaaaaa1234")],
            models=["gpt-5*"],
            model_map={"gpt-5": "gpt-5-codex"},
        ),
        ChannelConfig(
            name="demo",
            service_type="demo",
            models=["gpt-5*", "demo*"],
            model_map={"gpt-5": "demo-model"},
            normalize_roles=True,
        ),
        ChannelConfig(
            name="claude-backup",
            service_type="claude",
            base_url="https://api.anthropic.com",
            api_keys=[SecretStr("sk-ant-backup-key-bbbbbbbbbbbbbbbb5678")],
            enabled=False,
        ),
    ]
    settings = load_settings(
        proxy_access_key=PROXY_KEY, admin_access_key=ADMIN_KEY, channels=channels, models_from_upstream=False
    )
    with serve(StandaloneApp(create_app(settings))) as url:
        yield url


def send_traffic(base: str) -> None:
    """A few requests through real HTTP: successes after failover, a JSON answer, an unknown model."""
    headers = {"authorization": f"Bearer {PROXY_KEY}"}
    with httpx.Client(base_url=base + "/v1", headers=headers, timeout=10) as client:
        for n, (model, stream) in enumerate([("gpt-5", True), ("gpt-5.1-codex", True), ("demo-small", False)]):
            body = {"model": model, "input": f"hello #{n}", "stream": stream}
            client.post("/responses", json=body, headers={"x-request-id": f"demo-req-{n + 1}"}).raise_for_status()
        client.post("/responses", json={"model": "llama-3-70b", "input": "hi"}, headers={"x-request-id": "demo-req-4"})


def run_chromium(url: str, *args: str, size: str = "1400,1220") -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on ``url`` with the flags that work as root in a container."""
    binary = chromium()
    if binary is None:
        raise RuntimeError("chromium is not installed (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as profile:
        command = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={size}",
            *args,
            url,
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)


def capture(out: Path | None = None, *, dump_dom: bool = False) -> str:
    """Start the gateway, send traffic, and screenshot the page to ``out`` and/or return its DOM."""
    with running_gateway() as base:
        send_traffic(base)
        host = base.removeprefix("http://")
        url = f"http://ops:{ADMIN_KEY}@{host}/v1/admin/"
        dom = run_chromium(url, "--dump-dom").stdout if dump_dom else ""
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            run_chromium(url, f"--screenshot={out}")
    return dom


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "admin-status.png"
    capture(target)
    print(f"wrote {target}")
