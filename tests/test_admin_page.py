"""The status page as a browser renders it: headless Chromium against the gateway on real uvicorn.

Skipped when no Chromium binary is installed (``apt-get install -y chromium``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.screenshot_status import ADMIN_KEY, PROXY_KEY, capture, chromium

pytestmark = pytest.mark.skipif(chromium() is None, reason="chromium is not installed")


def test_status_page_renders_in_chromium(tmp_path: Path) -> None:
    shot = tmp_path / "status.png"
    dom = capture(shot, dump_dom=True)
    # Chromium reached the page through the admin guard (HTTP Basic) and rendered the live data.
    assert "<title>ccx_asgi status</title>" in dom
    for text in ("primary", "demo", "claude-backup", "breaker: unknown", "gpt-5 → demo-model"):
        assert text in dom
    for rid in ("demo-req-1", "demo-req-2", "demo-req-3", "demo-req-4"):
        assert rid in dom
    assert "404 model_not_found" in dom
    assert "primary (no answer)" in dom  # the failover from the unreachable channel
    assert "sk-…1234" in dom  # masked key
    for secret in (
        ADMIN_KEY,
        PROXY_KEY,
        "sk-primary-key-aaaaaaaaaaaaaaaa1234",
        "sk-ant-backup-key-bbbbbbbbbbbbbbbb5678",
    ):
        assert secret not in dom
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000  # a blank or error page compresses to a few kB
