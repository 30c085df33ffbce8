"""The peer arm: LiteLLM's proxy, in its own virtualenv, driven on its ``/v1/responses`` endpoint.

The venv lives at ``.cache/litellm-venv`` in the checkout (override with
``CCX_BENCH_LITELLM_VENV``, e.g. to share one venv between worktrees) and is created on first use
with a pinned ``litellm[proxy]`` plus the profilers (py-spy, pyinstrument). It is never the
project's own venv. If it cannot be created the arm is skipped with a note.

Models (all at the same fake upstream as the other arms):

- ``bench-chat``: ``openai/chat_completions/<model>`` — LiteLLM's Responses→Chat bridge;
- ``bench-claude``: ``anthropic/<model>`` — LiteLLM's Responses→Messages bridge;
- ``bench-responses``: ``openai/<model>`` — LiteLLM's native Responses pass-through.

The ``-paced`` variants point at the fake's paced profile.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.procs import Server, start

LITELLM_SPEC = "litellm[proxy]==1.106.2"
TOOLS = ("py-spy==0.4.3", "pyinstrument==5.1.3")


def venv_dir() -> Path:
    """Where the peer's venv lives (outside the project's venv)."""
    override = os.environ.get("CCX_BENCH_LITELLM_VENV")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / ".cache" / "litellm-venv"


def ensure_venv(*, install: bool = True) -> tuple[Path | None, str]:
    """Return the venv's ``bin`` directory (creating the venv if allowed) and a note."""
    venv = venv_dir()
    binary = venv / "bin" / "litellm"
    if binary.exists():
        return venv / "bin", f"LiteLLM venv reused: {venv}"
    if not install:
        return None, f"LiteLLM skipped: no venv at {venv} (run without --no-install to create it)"
    print(f"creating {venv} with {LITELLM_SPEC} (one-off, a few minutes)...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", LITELLM_SPEC, *TOOLS],
            check=True,
            timeout=1200,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"LiteLLM skipped: could not install {LITELLM_SPEC} into {venv} ({exc})"
    return venv / "bin", f"LiteLLM venv created: {venv}"


def litellm_version(bin_dir: Path) -> str:
    """The installed LiteLLM version."""
    out = subprocess.run(
        [str(bin_dir / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return out.stdout.strip() or "unknown"


def config_yaml(upstream: str) -> str:
    """The proxy's ``config.yaml`` for the fake upstream at ``upstream`` (``http://127.0.0.1:PORT``)."""
    lines = ["model_list:"]
    for suffix, prefix in (("", ""), ("-paced", "/paced")):
        models = {
            "bench-chat": ("openai/chat_completions/bench-model", f"{upstream}{prefix}/v1"),
            "bench-claude": ("anthropic/bench-model", f"{upstream}{prefix}"),
            "bench-responses": ("openai/bench-model", f"{upstream}{prefix}/v1"),
        }
        for name, (model, base) in models.items():
            lines += [
                f"  - model_name: {name}{suffix}",
                "    litellm_params:",
                f"      model: {model}",
                f"      api_base: {base}",
                "      api_key: sk-bench-fake",
            ]
    lines += ["litellm_settings:", "  drop_params: true", "  telemetry: false", "  request_timeout: 300"]
    return "\n".join(lines) + "\n"


def start_litellm(bin_dir: Path, upstream: str, port: int, workdir: Path, master_key: str) -> Server:
    """Start the LiteLLM proxy (one worker, like the other arms) and wait until it answers.

    ``master_key`` is the key clients send (LiteLLM refuses to start without one).
    """
    config = workdir / "litellm-config.yaml"
    config.write_text(config_yaml(upstream))
    env = {
        # Never reach the network: the cost map ships with the package.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "NO_PROXY": "*",
        "LITELLM_MASTER_KEY": master_key,
    }
    argv = [
        str(bin_dir / "litellm"),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    return start("litellm", argv, port=port, env=env, ready_path="/health/liveliness", timeout=180)
