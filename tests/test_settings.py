"""CCXSettings from the environment: names from the public contract, readable errors, hidden secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from ccx_asgi import ChannelConfig, ConfigurationError, create_app, load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCX_PROXY_ACCESS_KEY", "pk")
    monkeypatch.setenv("CCX_EXTRA_PROXY_ACCESS_KEYS", "k2, k3,,")
    monkeypatch.setenv("CCX_ADMIN_ACCESS_KEY", "ak")
    monkeypatch.setenv("CCX_HOST", "0.0.0.0")
    monkeypatch.setenv("CCX_PORT", "8123")
    monkeypatch.setenv("CCX_MAX_BODY_MB", "2")
    monkeypatch.setenv(
        "CCX_CHANNELS",
        json.dumps(
            [{"name": "ds", "service_type": "openai", "base_url": "https://api.deepseek.com/", "api_keys": ["u1"]}]
        ),
    )
    settings = load_settings()
    assert settings.proxy_access_key == SecretStr("pk")
    assert [k.get_secret_value() for k in settings.extra_proxy_access_keys] == ["k2", "k3"]
    assert [k.get_secret_value() for k in settings.client_keys()] == ["pk", "k2", "k3"]
    assert settings.admin_keys() == [SecretStr("ak")]
    assert (settings.host, settings.port, settings.max_body_bytes) == ("0.0.0.0", 8123, 2 * 1024 * 1024)
    channel = settings.channels[0]
    assert channel.service_type == "chat"
    assert channel.url("/chat/completions") == "https://api.deepseek.com/v1/chat/completions"


def test_seed_alias_for_the_proxy_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_ACCESS_KEY", "legacy")
    assert load_settings().proxy_access_key == SecretStr("legacy")


@pytest.mark.parametrize(
    ("base_url", "endpoint", "expected"),
    [
        ("https://api.example.com", "/responses", "https://api.example.com/v1/responses"),
        ("https://api.example.com/v1", "/responses", "https://api.example.com/v1/responses"),
        ("https://api.example.com/v1/", "/messages", "https://api.example.com/v1/messages"),
        ("https://gw.example.com/openai/v4", "/chat/completions", "https://gw.example.com/openai/v4/chat/completions"),
        (
            "https://generativelanguage.example.com/v1beta",
            "/responses",
            "https://generativelanguage.example.com/v1beta/responses",
        ),
        ("http://127.0.0.1:8000/api", "/responses", "http://127.0.0.1:8000/api/v1/responses"),
    ],
)
def test_url_building(base_url: str, endpoint: str, expected: str) -> None:
    channel = ChannelConfig(name="c", service_type="responses", base_url=base_url)
    assert channel.url(endpoint) == expected


@pytest.mark.parametrize(
    ("channels", "fragment"),
    [
        ("[not json", "CCX_CHANNELS: not valid JSON"),
        ('{"name": "x"}', "CCX_CHANNELS: must be a JSON array"),
        ('[{"name": "a", "service_type": "gemini", "base_url": "https://x"}]', "CCX_CHANNELS[0].service_type"),
        ('[{"name": "a", "service_type": "chat"}]', "base_url is required"),
        ('[{"name": "a", "service_type": "chat", "base_url": "https://x"}, {"name": "a", "service_type": "chat", "base_url": "https://y"}]',
         "duplicate channel name 'a'"),
        ('[{"name": "a", "service_type": "chat", "base_url": "https://x", "base_ur": "typo"}]', "CCX_CHANNELS[0].base_ur"),
        ('[{"name": "a", "service_type": "responses", "base_url": "https://x/v1/responses"}]', "not an endpoint URL"),
        ('[{"name": "a", "service_type": "responses", "base_url": "ftp://x"}]', "must start with http"),
    ],
)  # fmt: skip
def test_invalid_channels_name_the_variable(monkeypatch: pytest.MonkeyPatch, channels: str, fragment: str) -> None:
    monkeypatch.setenv("CCX_CHANNELS", channels)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert fragment in str(caught.value)
    with pytest.raises(ConfigurationError):
        create_app()


def test_secrets_stay_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCX_PROXY_ACCESS_KEY", "proxy-secret-1")
    monkeypatch.setenv(
        "CCX_CHANNELS",
        json.dumps([{"name": "a", "service_type": "chat", "base_url": "https://x", "api_keys": ["upstream-secret-2"],
                     "headers": {"x-extra": "header-secret-3"}}]),
    )  # fmt: skip
    settings = load_settings()
    shown = repr(settings) + str(settings) + repr(settings.channels) + settings.model_dump_json()
    for secret in ("proxy-secret-1", "upstream-secret-2", "header-secret-3"):
        assert secret not in shown
    # An invalid channel that carries a key: the error names the problem, not the key.
    monkeypatch.setenv(
        "CCX_CHANNELS",
        json.dumps([{"name": "a", "service_type": "nope", "base_url": "https://x", "api_keys": ["upstream-secret-2"]}]),
    )
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "upstream-secret-2" not in str(caught.value)


@pytest.mark.parametrize(
    ("extra", "admin", "expected"),
    [(None, None, ["pk"]), ("k2", None, []), ("k2", "ak", ["ak"]), (None, "ak", ["ak"])],
)
def test_admin_key_fallback(extra: str | None, admin: str | None, expected: list[str]) -> None:
    settings = load_settings(proxy_access_key="pk", extra_proxy_access_keys=extra or "", admin_access_key=admin)
    assert [k.get_secret_value() for k in settings.admin_keys()] == expected


def test_standalone_reports_bad_configuration_and_exits() -> None:
    env = {**os.environ, "CCX_CHANNELS": "[{", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "ccx_asgi"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 2
    assert "CCX_CHANNELS: not valid JSON" in proc.stderr


def test_standalone_refuses_public_bind_without_a_key() -> None:
    env = {**os.environ, "CCX_HOST": "0.0.0.0", "PYTHONPATH": str(ROOT)}
    env.pop("CCX_PROXY_ACCESS_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "ccx_asgi"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 2
    assert "CCX_PROXY_ACCESS_KEY" in proc.stderr
