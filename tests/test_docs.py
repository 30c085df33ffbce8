"""The documentation names every setting the code reads, and the README keeps its two commands."""

from __future__ import annotations

import re
from pathlib import Path

from ccx_asgi.settings import CCXSettings, ChannelConfig

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_lists_every_setting() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    for name in CCXSettings.model_fields:
        assert f"`CCX_{name.upper()}`" in text, name
    for name in ChannelConfig.model_fields:
        assert f"`{name}`" in text, name


def test_readme_has_the_two_setup_commands_and_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "python3 -m venv .venv && .venv/bin/pip install -e '.[server]' && " in readme
    assert "\nbash scripts/test.sh\n" in readme
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    for doc in ROOT.glob("docs/*.md"):
        for target in re.findall(r"\]\(((?!https?:)[^)#]+)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
    for target in re.findall(r"\]\(((?!https?:)[^)#]+)", readme):
        assert (ROOT / target).exists(), f"README links to missing {target}"
