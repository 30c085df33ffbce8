"""docs/codex.md's retry advice, checked on the pinned Codex CLI: a wrong key costs 6 requests by default, 1 without retries."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ccx_asgi import load_settings
from ccx_asgi.__main__ import build_standalone
from ccx_asgi.types import Receive, Scope, Send
from tests.e2e.codex import require_codex
from tests.servers import serve

pytestmark = pytest.mark.e2e

PROVIDER = (
    'model_provider = "ccx"\nmodel = "gpt-5.5"\n\n[model_providers.ccx]\nname = "ccx"\nbase_url = "{url}/v1"\n'
    'env_key = "CCX_CLIENT_KEY"\nwire_api = "responses"\n{extra}'
)


class Counter:
    """Counts the ``POST``s reaching the gateway."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.posts = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            self.posts += 1
        await self.app(scope, receive, send)


@pytest.mark.parametrize(("extra", "requests"), [("", 6), ("request_max_retries = 0\nstream_max_retries = 0\n", 1)])
def test_a_wrong_key_costs_what_the_docs_say(tmp_path: Path, extra: str, requests: int) -> None:
    counter = Counter(build_standalone(load_settings(proxy_access_key="the-right-key")))
    home = tmp_path / "home"
    home.mkdir()
    with serve(counter) as url:
        (home / "config.toml").write_text(PROVIDER.format(url=url, extra=extra))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_", "CCX_", "ANTHROPIC_"))}
        env.update(CODEX_HOME=str(home), CCX_CLIENT_KEY="a-wrong-key", NO_COLOR="1")
        run = subprocess.run(
            [require_codex(), "exec", "--skip-git-repo-check", "--disable", "unbounded_connection_retries", "Hi."],
            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert run.returncode != 0
    assert "401 Unauthorized" in run.stderr
    assert counter.posts == requests, run.stderr[-2000:]
    assert ("Reconnecting... 5/5" in run.stderr) == (requests > 1)
