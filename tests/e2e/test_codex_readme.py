"""The README's Codex set-up, as written, with the real Codex CLI against the standalone server.

The ``config.toml`` block and the model catalog are taken from the README; only the port in
``base_url`` is changed (3000 may be taken on a test machine).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from ccx_asgi import load_settings
from ccx_asgi.__main__ import build_standalone
from ccx_asgi.types import Receive, Scope, Send
from tests.e2e.codex import require_codex
from tests.servers import serve

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
KEY = "change-me"  # the README's `export CCX_CLIENT_KEY=change-me`


def readme_block(language: str, marker: str) -> str:
    blocks: list[str] = [
        b for lang, b in re.findall(r"^```(\w*)\n(.*?)^```", README, re.S | re.M) if lang == language and marker in b
    ]
    [block] = blocks
    return block


def run_exec(home: Path, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_", "CCX_", "ANTHROPIC_"))}
    env.update(CODEX_HOME=str(home), CCX_CLIENT_KEY=KEY, NO_COLOR="1")
    return subprocess.run(
        [require_codex(), "exec", "--skip-git-repo-check", "--json", "--dangerously-bypass-approvals-and-sandbox",
         "--disable", "unbounded_connection_retries", *args, "Say hello."],
        cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def commands(run: subprocess.CompletedProcess[str]) -> list[str]:
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    return [
        e["item"]["aggregated_output"]
        for e in events
        if e.get("type") == "item.completed" and e["item"].get("type") == "command_execution"
    ]


class Recorder:
    """Wraps the gateway: keeps each ``POST`` body Codex sends (to see which tools it offered)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(json.loads(raw))
        replay = [{"type": "http.request", "body": raw, "more_body": False}]

        async def again() -> Any:
            return replay.pop() if replay else await receive()

        await self.app(scope, again, send)

    def tools(self) -> set[str]:
        """Tool names of the newest body."""
        return {t.get("name") or t["type"] for t in self.bodies[-1].get("tools") or []}


def test_readme_codex_config_and_catalog_work(tmp_path: Path) -> None:
    config = readme_block("toml", "[model_providers.ccx]")
    assert 'base_url = "http://127.0.0.1:3000/v1"' in config
    catalog = readme_block("json", '"slug"')
    slug = json.loads(catalog)["models"][0]["slug"]
    app = build_standalone(load_settings(proxy_access_key=KEY))
    work = tmp_path / "work"
    work.mkdir()
    recorder = Recorder(app)
    with serve(recorder) as url:
        home = tmp_path / "home"
        home.mkdir()
        (home / "config.toml").write_text(config.replace("http://127.0.0.1:3000", url))
        tomllib.loads((home / "config.toml").read_text())  # the block is valid TOML as printed
        run = run_exec(home, work)
        assert run.returncode == 0, run.stderr[-3000:]
        assert {b["model"] for b in recorder.bodies} == {"gpt-5.5"}  # it reached the gateway
        assert any("hello from the ccx_asgi demo channel" in out for out in commands(run)), run.stdout[-3000:]

        # The README's own-model set-up: its catalog and the two config.toml lines it gives.
        (home / "catalog.json").write_text(catalog)
        text = (home / "config.toml").read_text().replace('model = "gpt-5.5"', f'model = "{slug}"')
        (home / "config.toml").write_text(f'model_catalog_json = "{home / "catalog.json"}"\n' + text)
        run = run_exec(home, work)
        assert run.returncode == 0, run.stderr[-3000:]
        assert recorder.bodies[-1]["model"] == slug
        # Without the catalog Codex falls back to default metadata and offers no apply_patch.
        assert {"exec_command", "apply_patch"} <= recorder.tools(), recorder.tools()
        assert any("hello from the ccx_asgi demo channel" in out for out in commands(run)), run.stdout[-3000:]
