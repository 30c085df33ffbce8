"""Running the real Codex CLI (npm ``@openai/codex``) against a gateway, for end-to-end tests.

The binary is looked up in ``$CODEX_BIN``, then ``.cache/codex`` (where ``.ci/run`` installs it),
then ``PATH``. Tests that need it call :func:`require_codex`, which skips with the install command
when it is absent (CI always installs it, so CI never skips).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = "npm install --prefix .cache/codex --no-audit --no-fund @openai/codex@0.171.0"


def codex_bin() -> str | None:
    """The Codex CLI executable, or ``None``."""
    candidates = [
        os.environ.get("CODEX_BIN"),
        str(ROOT / ".cache/codex/node_modules/.bin/codex"),
        shutil.which("codex"),
    ]
    return next((c for c in candidates if c and Path(c).exists()), None)


def require_codex() -> str:
    """The Codex CLI executable; skips the test (or fails in CI) when it is not installed."""
    found = codex_bin()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"Codex CLI not installed in CI; run: {INSTALL}")
        pytest.skip(f"Codex CLI not installed; run: {INSTALL}")
    return found


def catalog_entry(slug: str, *, apply_patch: str = "freeform", reasoning: bool = True) -> dict[str, Any]:
    """A model-catalog entry so Codex offers ``exec_command`` and the freeform ``apply_patch`` for ``slug``."""
    return {
        "slug": slug,
        "display_name": slug,
        "supported_reasoning_levels": [{"effort": "medium", "description": "m"}] if reasoning else [],
        "shell_type": "unified_exec",
        "visibility": "list",
        "supported_in_api": True,
        "priority": 1,
        "support_verbosity": False,
        "truncation_policy": {"mode": "tokens", "limit": 10000},
        "experimental_supported_tools": [],
        "apply_patch_tool_type": apply_patch,
        "context_window": 128000,
        "base_instructions": "You are a coding agent.",
    }


@dataclass
class CodexRun:
    """The outcome of one ``codex exec``."""

    returncode: int
    events: list[dict[str, Any]]
    stdout: str
    stderr: str

    def items(self, kind: str) -> list[dict[str, Any]]:
        """Completed items of one type (``agent_message``, ``command_execution``, ``file_change``…)."""
        return [
            e["item"]
            for e in self.events
            if e.get("type") == "item.completed" and e.get("item", {}).get("type") == kind
        ]

    def explain(self) -> str:
        """Everything useful for an assertion message."""
        return f"exit {self.returncode}\nstdout:\n{self.stdout[-4000:]}\nstderr:\n{self.stderr[-4000:]}"


def run_codex(
    base_url: str,
    key: str,
    model: str,
    prompt: str,
    workdir: Path,
    *,
    catalog: list[dict[str, Any]] | None = None,
    timeout: float = 120,
    extra_config: list[str] = (),  # type: ignore[assignment]
    retries: int = 0,
) -> CodexRun:
    """Run one non-interactive Codex turn in ``workdir`` against ``base_url`` (must end in ``/v1``).

    A throw-away ``CODEX_HOME`` holds a config with a custom provider (``wire_api = "responses"``,
    ``env_key``), ``retries`` request and stream retries (none by default) and a short idle timeout so
    failures surface fast.
    """
    binary = require_codex()
    home = workdir.parent / f"{workdir.name}-codex-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        'model_provider = "ccx"\n\n[model_providers.ccx]\nname = "ccx"\n'
        f'base_url = "{base_url}"\nenv_key = "CCX_CLIENT_KEY"\nwire_api = "responses"\n'
        f"request_max_retries = {retries}\nstream_max_retries = {retries}\nstream_idle_timeout_ms = 30000\n"
    )
    args = [binary, "exec", "--skip-git-repo-check", "--json", "-m", model,
            "--dangerously-bypass-approvals-and-sandbox", "--disable", "unbounded_connection_retries"]  # fmt: skip
    if catalog is not None:
        catalog_file = home / "catalog.json"
        catalog_file.write_text(json.dumps({"models": catalog}))
        args += ["-c", f"model_catalog_json={json.dumps(str(catalog_file))}"]
    for item in extra_config:
        args += ["-c", item]
    args.append(prompt)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_", "CCX_", "ANTHROPIC_"))}
    env.update(CODEX_HOME=str(home), CCX_CLIENT_KEY=key, NO_COLOR="1")
    proc = subprocess.run(
        args,
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    events = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return CodexRun(proc.returncode, events, proc.stdout, proc.stderr)
