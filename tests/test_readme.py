"""The README's code runs as written: every Python block, and the JSON the Codex section shows.

App blocks (FastAPI, Litestar) are executed as they stand, served by real uvicorn on loopback with
the demo channel the Mount section documents, and called with the ``openai`` SDK. The SDK snippet
runs against the real standalone server (``python -m ccx_asgi``); only its port is changed, since
3000 may be taken on a test machine. A Python block of any other kind fails the test until it is
covered here.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.e2e.codex import catalog_entry
from tests.servers import free_port, serve, wait_serving

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
DEMO_CHANNELS = '[{"name": "demo", "service_type": "demo"}]'
KEY = "change-me"  # the key the README's commands and snippets use


def blocks(language: str) -> list[str]:
    """The README's fenced blocks of ``language``."""
    return [body for lang, body in BLOCK.findall(README) if lang == language]


def python_blocks() -> dict[str, list[str]]:
    kinds: dict[str, list[str]] = {"app": [], "sdk": [], "other": []}
    for code in blocks("python"):
        if re.search(r"^app = (FastAPI|Litestar)\(", code, re.M):
            kinds["app"].append(code)
        elif "from openai import OpenAI" in code:
            kinds["sdk"].append(code)
        else:
            kinds["other"].append(code)
    return kinds


def test_every_python_block_is_run_by_this_file() -> None:
    kinds = python_blocks()
    assert len(kinds["app"]) >= 2  # FastAPI and Litestar
    assert len(kinds["sdk"]) == 1
    assert kinds["other"] == [], "a README Python block no test runs"


@pytest.fixture
def readme_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the README tells a user to set for a mounted app without an upstream account."""
    monkeypatch.setenv("CCX_PROXY_ACCESS_KEY", KEY)
    monkeypatch.setenv("CCX_CHANNELS", DEMO_CHANNELS)


@pytest.mark.parametrize("code", python_blocks()["app"], ids=lambda code: re.findall(r"app = (\w+)\(", code)[0])
def test_app_block_serves_the_gateway(code: str, readme_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("readme_app")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # as if it were the user's app.py
    exec(compile(code, "README.md", "exec"), module.__dict__)  # noqa: S102 - the README's own code
    with serve(module.app, lifespan="on") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        answer = client.responses.create(model="gpt-5.5", input="hello")
        assert "demo channel" in answer.output_text
        with client.responses.stream(model="gpt-5.5", input="hello") as stream:
            events = [event.type for event in stream]
        assert events[0] == "response.created" and events[-1] == "response.completed"
        assert [m.id for m in client.models.list()] == ["gpt-5.5", "demo"]
        wrong = openai.OpenAI(base_url=f"{url}/v1", api_key="not-the-key", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.responses.create(model="gpt-5.5", input="hello")
        upstream_client = module.ccx.upstream.client  # the one the demo answers went through
    # The host's shutdown closed ccx's upstream client (the lifespan code in the block ran).
    assert upstream_client.is_closed


@pytest.fixture
def standalone() -> Iterator[str]:
    """The README's serve command (the installed package, run as ``python -m ccx_asgi``) on a free port."""
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "CCX_PROXY_ACCESS_KEY": KEY, "CCX_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "ccx_asgi"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    if not wait_serving(url, proc):
        proc.kill()
        raise RuntimeError(proc.communicate()[0])
    try:
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=20)  # reads the pipe to its end and closes it


def test_sdk_snippet_runs_against_the_standalone_server(standalone: str) -> None:
    [code] = python_blocks()["sdk"]
    assert 'base_url="http://127.0.0.1:3000/v1"' in code and f'api_key="{KEY}"' in code
    code = code.replace("http://127.0.0.1:3000", standalone)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own code
    assert "Hello from ccx_asgi" in printed.getvalue()
    assert "demo channel" in printed.getvalue()


def test_codex_catalog_example_is_the_one_the_e2e_tests_run() -> None:
    # tests/e2e/test_codex_*.py run the real Codex CLI with catalog_entry(): the README shows the same.
    [catalog] = [json.loads(code) for code in blocks("json") if '"slug"' in code]
    [entry] = catalog["models"]
    assert entry == catalog_entry(entry["slug"])


def test_serve_command_and_extras_named_in_the_readme_exist() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for named in re.findall(r"\[([a-z,]+)\]'", README):
        for extra in named.split(","):
            assert extra in extras, f"the README installs an extra pyproject.toml does not define: {extra}"
    assert 'demo", "service_type": "demo"}' in README
