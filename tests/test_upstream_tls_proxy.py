"""The default upstream transport over real loopback sockets: TLS verification and private CAs,
proxies (a local ``CONNECT`` proxy), URLs with query strings, credentials kept out of every log
line, header hygiene, and the model-list fetches (deadline, the channel's ``anthropic_version``)."""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from ccx_asgi import ConfigurationError, load_settings
from ccx_asgi.upstream import _no_proxy
from tests.conftest import AppFactory, channel
from tests.fakes.raw_upstream import Conn, ConnectProxy, RawRequest, RawUpstream, completed, json_answer, ok_answer
from tests.sdk import validate_response

#: Standard loop and uvloop (``pytest_asyncio_loop_factories`` in ``tests/conftest.py``).
BOTH_LOOPS = True


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def ca_dir(ca_file: str, tmp_path: Path) -> str:
    """A hashed CA directory (``openssl rehash``), as ``SSL_CERT_DIR`` expects."""
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.pem").write_text(Path(ca_file).read_text())
    subprocess.run(["openssl", "rehash", str(certs)], check=True, capture_output=True)
    return str(certs)


async def answer(conn: Conn, request: RawRequest) -> None:
    await conn.send(ok_answer(request, "over tls"))


async def post(client: httpx.AsyncClient, text: str = "hi") -> httpx.Response:
    return await client.post("/responses", json={"model": "m", "input": text}, timeout=30)


# --- TLS -----------------------------------------------------------------------------------------


async def test_private_ca_through_ssl_cert_file(
    make_app: AppFactory, client_for: Any, ca: trustme.CA, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    async with RawUpstream(answer, ssl_context=server_context(ca, "localhost"), host="localhost") as up:
        response = await post(client_for(make_app([channel(base_url=up.url + "/v1")])))
        assert response.status_code == 200, response.text
        assert validate_response(response.json()).output_text == "over tls"


async def test_private_ca_through_ssl_cert_dir(
    make_app: AppFactory, client_for: Any, ca: trustme.CA, ca_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_DIR", ca_dir)
    async with RawUpstream(answer, ssl_context=server_context(ca, "localhost"), host="localhost") as up:
        response = await post(client_for(make_app([channel(base_url=up.url + "/v1")])))
        assert response.status_code == 200, response.text


async def test_private_ca_per_channel(make_app: AppFactory, client_for: Any, ca: trustme.CA, ca_file: str) -> None:
    async with RawUpstream(answer, ssl_context=server_context(ca, "localhost"), host="localhost") as up:
        app = make_app([channel("private", base_url=up.url + "/v1", ca_bundle=ca_file)])
        assert (await post(client_for(app))).status_code == 200


async def test_untrusted_ca_is_refused(make_app: AppFactory, client_for: Any, ca: trustme.CA) -> None:
    async with RawUpstream(answer, ssl_context=server_context(ca, "localhost"), host="localhost") as up:
        response = await post(client_for(make_app([channel(base_url=up.url + "/v1")])))
        assert response.status_code == 503
        message = response.json()["error"]["message"]
        assert "TLS certificate verification failed" in message
        assert up.requests == []


async def test_wrong_host_name_is_refused(
    make_app: AppFactory, client_for: Any, ca: trustme.CA, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    async with RawUpstream(answer, ssl_context=server_context(ca, "other.example"), host="localhost") as up:
        response = await post(client_for(make_app([channel(base_url=up.url + "/v1")])))
        assert response.status_code == 503
        assert "mismatch" in response.json()["error"]["message"].lower()
        assert up.requests == []


async def test_model_lists_use_the_same_trust_store(
    make_app: AppFactory, client_for: Any, ca: trustme.CA, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)

    async def models(conn: Conn, request: RawRequest) -> None:
        await conn.send(json_answer({"object": "list", "data": [{"id": "private-model"}]}))

    async with RawUpstream(models, ssl_context=server_context(ca, "localhost"), host="localhost") as up:
        response = await client_for(make_app([channel(base_url=up.url + "/v1")])).get("/models")
        assert "private-model" in [m["id"] for m in response.json()["data"]]


# --- proxies -------------------------------------------------------------------------------------


async def test_https_upstream_through_a_connect_proxy_with_credentials(
    make_app: AppFactory, client_for: Any, ca: trustme.CA, ca_file: str
) -> None:
    async with (
        RawUpstream(answer, ssl_context=server_context(ca, "localhost"), host="localhost") as up,
        ConnectProxy() as proxy,
    ):
        proxy_url = proxy.url.replace("http://", "http://agent:s3cret-proxy@")
        app = make_app([channel(base_url=up.url + "/v1", ca_bundle=ca_file, proxy=proxy_url)])
        response = await post(client_for(app))
        assert response.status_code == 200, response.text
        assert proxy.seen[0][0] == f"CONNECT localhost:{up.port}"
        assert proxy.seen[0][1] == "Basic " + base64.b64encode(b"agent:s3cret-proxy").decode()
        assert len(up.requests) == 1
        assert "proxy-authorization" not in up.requests[0].headers


async def test_global_proxy_setting_and_the_direct_override(make_app: AppFactory, client_for: Any) -> None:
    async with RawUpstream(answer) as up, ConnectProxy() as proxy:
        app = make_app(
            [
                channel("via", base_url=up.url + "/v1", models=["a"]),
                channel("direct", base_url=up.url + "/v1", models=["b"], proxy=""),
            ],
            upstream_proxy=proxy.url,
        )
        client = client_for(app)
        assert (await client.post("/responses", json={"model": "a", "input": "1"})).status_code == 200
        assert (await client.post("/responses", json={"model": "b", "input": "2"})).status_code == 200
        assert [line for line, _ in proxy.seen] == [f"POST {up.url}/v1/responses"]
        assert len(up.requests) == 2


@pytest.mark.parametrize("trust_env", [True, False])
async def test_environment_proxies_only_when_opted_in(
    make_app: AppFactory, client_for: Any, monkeypatch: pytest.MonkeyPatch, trust_env: bool
) -> None:
    async with RawUpstream(answer) as up, ConnectProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "bypassed.invalid")
        app = make_app([channel(base_url=up.url + "/v1")], upstream_trust_env=trust_env)
        assert (await post(client_for(app))).status_code == 200
        assert len(proxy.seen) == (1 if trust_env else 0)


def test_no_proxy_matching() -> None:
    assert _no_proxy("api.example.com", "example.com")
    assert _no_proxy("api.example.com", " .example.com ,other")
    assert _no_proxy("127.0.0.1", "localhost,127.0.0.1:8080")
    assert _no_proxy("anything", "*")
    assert not _no_proxy("notexample.com", "example.com")
    assert not _no_proxy("example.com", "")


# --- URLs and logs -------------------------------------------------------------------------------


async def test_base_url_query_is_kept_after_the_endpoint_path(make_app: AppFactory, client_for: Any) -> None:
    async with RawUpstream(answer) as up:
        app = make_app([channel(base_url=up.url + "/openai/v1?api-version=2025-04-01-preview")])
        assert (await post(client_for(app))).status_code == 200
        assert up.requests[0].target == "/openai/v1/responses?api-version=2025-04-01-preview"


def test_urls_with_and_without_query() -> None:
    settings = load_settings(
        channels=[channel(base_url="https://h.test/openai/v1/?api-version=1"), channel("b", base_url="https://h.test")]
    )
    azure, plain = settings.channels
    assert azure.url("/responses") == "https://h.test/openai/v1/responses?api-version=1"
    assert azure.url("/models", "limit=1000") == "https://h.test/openai/v1/models?api-version=1&limit=1000"
    assert plain.url("/models", "limit=1000") == "https://h.test/v1/models?limit=1000"


async def test_credentials_in_base_url_never_reach_a_log_line(
    make_app: AppFactory, client_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "aiohttp", "aiohttp.client", "ccx_asgi"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        async with RawUpstream(answer) as up:
            base = up.url.replace("http://", "http://user:pw-in-url-123@") + "/v1?key=query-secret-456"
            app = make_app([channel(base_url=base, api_keys=[])])
            client = client_for(app)
            assert (await post(client)).status_code == 200
            await client.get("/models")
            sent = up.requests[0]
            assert sent.headers["authorization"] == "Basic " + base64.b64encode(b"user:pw-in-url-123").decode()
            assert sent.target == "/v1/responses?key=query-secret-456"
    finally:
        for name in ("httpx", "httpcore", "aiohttp", "aiohttp.client", "ccx_asgi"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    assert "HTTP Request: POST" in caplog.text  # httpx did log the request, filtered
    assert "pw-in-url-123" not in caplog.text
    assert "query-secret-456" not in caplog.text


async def test_a_channel_authorization_wins_over_url_user_info(make_app: AppFactory, client_for: Any) -> None:
    async with RawUpstream(answer) as up:
        app = make_app([channel(base_url=up.url.replace("http://", "http://u:p@") + "/v1")])
        assert (await post(client_for(app))).status_code == 200
        assert up.requests[0].headers["authorization"] == "Bearer upstream-key"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"base_url": "https://h.test/v1#frag"}, "fragment"),
        ({"base_url": "https://h.test:99999/v1"}, "invalid host or port"),
        ({"base_url": "https:///v1"}, "no host name"),
        ({"headers": {"Host": "evil.test"}}, "'Host'"),
        ({"headers": {"content-length": "5"}}, "'content-length'"),
        ({"headers": {"Transfer-Encoding": "chunked"}}, "'Transfer-Encoding'"),
        ({"headers": {"connection": "close"}}, "'connection'"),
        ({"headers": {"proxy-authorization": "x"}}, "'proxy-authorization'"),
        ({"headers": {"x-bad name": "v"}}, "invalid header name"),
        ({"headers": {"x-note": "caf\u00e9"}}, "printable ASCII"),
        ({"headers": {"x-note": "a\r\nx-injected: 1"}}, "printable ASCII"),
        ({"proxy": "socks5://127.0.0.1:1080"}, "proxy"),
        ({"ca_bundle": "/nonexistent/ca.pem"}, "ca_bundle"),
    ],
)
def test_channel_client_fields_are_checked_at_start_up(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings(channels=[channel("the-channel", **fields)])
    assert "'the-channel'" in str(info.value)
    assert message in str(info.value)
    assert "evil.test" not in str(info.value) and "café" not in str(info.value)


async def test_non_ascii_client_header_values_are_dropped_not_a_5xx(make_app: AppFactory, client_for: Any) -> None:
    async with RawUpstream(answer) as up:
        client = client_for(make_app([channel(base_url=up.url + "/v1")]))
        response = await client.post(
            "/responses",
            json={"model": "m", "input": "hi"},
            headers=[(b"x-note", "caf\u00e9".encode()), (b"x-kept", b"plain")],
        )
        assert response.status_code == 200
        assert "x-note" not in up.requests[0].headers
        assert up.requests[0].headers["x-kept"] == "plain"


# --- model lists ---------------------------------------------------------------------------------


async def test_model_list_sends_the_channels_anthropic_version(make_app: AppFactory, client_for: Any) -> None:
    async def models(conn: Conn, request: RawRequest) -> None:
        await conn.send(json_answer({"data": [{"id": "claude-x"}], "has_more": False}))

    async with RawUpstream(models) as up:
        app = make_app(
            [channel("an", service_type="claude", base_url=up.url + "?beta=1", anthropic_version="2099-01-01")]
        )
        response = await client_for(app).get("/models")
        assert "claude-x" in [m["id"] for m in response.json()["data"]]
        sent = up.requests[0]
        assert sent.headers["anthropic-version"] == "2099-01-01"
        assert sent.target == "/v1/models?beta=1&limit=1000"


async def test_a_trickling_model_list_is_cut_at_the_total_deadline_for_every_caller(
    make_app: AppFactory, client_for: Any
) -> None:
    async def trickle(conn: Conn, request: RawRequest) -> None:
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n")
        for _ in range(600):
            await conn.send(b" ")
            await asyncio.sleep(0.05)

    async with RawUpstream(trickle) as up:
        app = make_app([channel(base_url=up.url + "/v1", models=["listed"])], models_fetch_timeout=0.5)
        client = client_for(app)
        started = time.monotonic()
        first = asyncio.create_task(client.get("/models"))
        await asyncio.sleep(0.3)  # later callers share the refresh already under way
        late = time.monotonic()
        answers = await asyncio.gather(*(client.get("/models") for _ in range(5)))
        done = time.monotonic()
        assert (await first).status_code == 200
        assert all(a.status_code == 200 and [m["id"] for m in a.json()["data"]] == ["listed"] for a in answers)
        assert done - started < 1.5
        assert done - late < 0.5 + 0.5
        assert len(up.requests) == 1


async def test_model_list_answers_arrive_in_full(make_app: AppFactory, client_for: Any) -> None:
    async def models(conn: Conn, request: RawRequest) -> None:
        await conn.send(json_answer({"object": "list", "data": [{"id": f"m{n}", "created": n} for n in range(500)]}))

    async with RawUpstream(models) as up:
        response = await client_for(make_app([channel(base_url=up.url + "/v1")])).get("/models")
        assert len(response.json()["data"]) == 500
        assert completed("x")["status"] == "completed"
