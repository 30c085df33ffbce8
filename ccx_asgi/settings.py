"""Configuration: one :class:`CCXSettings` read from the environment (prefix ``CCX_``).

Settings are read when an app is built (``create_app()`` or ``python -m ccx_asgi``), never at import
time. Every problem is reported as a :class:`~ccx_asgi.errors.ConfigurationError` whose message names
the variable and what is wrong with it; secrets are :class:`~pydantic.SecretStr` so they never show
in reprs, logs or error messages.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ccx_asgi.convert.effort import DEFAULT_THINKING_BUDGETS, EFFORTS, MIN_THINKING_BUDGET
from ccx_asgi.errors import ConfigurationError

if TYPE_CHECKING:
    from ccx_asgi.channels.base import ChannelAdapter

__all__ = ["CCXSettings", "ChannelConfig", "load_settings"]

_VERSION_SEGMENT = re.compile(r"/v\d+(?:(?:alpha|beta)\d*)?$")
# upstream client: headers a channel may not set (the HTTP client frames the request itself; a
# channel value for these could desync the upstream connection), and what a header may look like.
_FRAMING_HEADERS = frozenset(
    {
        "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer",
        "trailers", "upgrade", "expect", "content-encoding",
    }
)  # fmt: skip
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")
_SERVICE_ALIASES = {"openai": "chat"}


def _adapter(service_type: str) -> ChannelAdapter | None:
    # Imported when a channel is validated: the adapters import the settings module themselves.
    from ccx_asgi.channels import adapter_for

    return adapter_for(service_type)


def _endpoint_paths() -> tuple[str, ...]:
    from ccx_asgi.channels import ADAPTERS

    return tuple(adapter.endpoint for adapter in ADAPTERS.values())


class ChannelConfig(BaseModel):
    """One upstream channel (an element of the ``CCX_CHANNELS`` JSON array).

    Unknown fields are rejected so that a typo (``base_ur``) fails at start-up instead of being
    silently ignored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Unique channel name; shown in logs and headers.")
    service_type: str = Field(
        description="Upstream protocol: responses, chat (openai), claude, demo (the registry, ccx_asgi.channels)."
    )
    base_url: str = Field(default="", description="API root, e.g. https://api.deepseek.com/v1.")
    api_keys: list[SecretStr] = Field(default_factory=list, description="Upstream keys, tried in order.")
    model_map: dict[str, str] = Field(
        default_factory=dict, description="Requested model -> upstream model (exact, else longest substring)."
    )
    models: list[str] = Field(
        default_factory=list, description="Allowlist of requested models (exact, prefix*, *suffix, *x*, !x)."
    )
    normalize_roles: bool = Field(default=False, description="developer -> system, odd roles -> user.")
    priority: int | None = Field(default=None, description="Lower is tried first; default: list order.")
    enabled: bool = Field(default=True, description="Disabled channels are never tried.")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="Extra upstream headers.")
    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to establish a connection.")
    first_byte_timeout: float = Field(
        default=300.0,
        gt=0,
        description="Seconds from starting a request until the upstream's response headers arrive "
        "(a non-streaming answer arrives whole, so this bounds its generation time).",
    )
    idle_timeout: float = Field(
        default=300.0, gt=0, description="Seconds the upstream may stay silent between two chunks of its answer."
    )
    write_timeout: float = Field(default=30.0, gt=0, description="Seconds to send the request body.")
    # upstream client: connection pool, proxy and CA of this channel (ccx_asgi.upstream)
    max_connections: int = Field(
        default=256, ge=1, description="Connections this channel may hold open to its upstream (its own pool)."
    )
    proxy: SecretStr | None = Field(
        default=None,
        description="http:// or https:// proxy URL for this channel; empty: connect directly. "
        "Unset: CCX_UPSTREAM_PROXY, else the environment's proxy variables when CCX_UPSTREAM_TRUST_ENV is on.",
    )
    ca_bundle: str | None = Field(
        default=None, description="PEM file of the CAs this channel trusts, instead of the default store."
    )
    # chat channel options
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = Field(
        default="max_tokens", description="Chat: the field that carries max_output_tokens."
    )
    chat_strict_tools: bool = Field(default=False, description="Chat: send tools' `strict` flag upstream.")
    chat_prompt_cache_key: bool = Field(default=False, description="Chat: forward `prompt_cache_key` upstream.")
    chat_stream_usage: bool = Field(
        default=True, description="Chat: ask for usage in streams (`stream_options.include_usage`)."
    )
    chat_reasoning_effort: Literal["reasoning_effort", "reasoning", "none"] = Field(
        default="reasoning_effort",
        description="Chat: how reasoning.effort is sent: `reasoning_effort`, `reasoning: {effort}`, or not at all.",
    )
    chat_reasoning_content: bool = Field(
        default=True, description="Chat: pass earlier reasoning back as `reasoning_content` on assistant turns."
    )
    # chat channel options: allowed_tools and OpenAI-only request fields (issue 14)
    chat_allowed_tools: Literal["filter", "native"] = Field(
        default="filter",
        description="Chat: how `tool_choice: allowed_tools` is sent: `filter` (only the allowed tools are "
        "offered; works everywhere) or `native` (Chat's own `allowed_tools` tool choice; OpenAI).",
    )
    chat_forward_fields: list[Literal["safety_identifier", "verbosity", "service_tier", "prompt_cache_retention"]] = (
        Field(
            default_factory=list,
            description="Chat: OpenAI-only fields to send upstream (`safety_identifier`, `verbosity` from "
            "text.verbosity, `service_tier`, `prompt_cache_retention`); others reject unknown fields.",
        )
    )

    # claude channel options
    anthropic_version: str = Field(default="2023-06-01", description="claude: the anthropic-version header.")
    default_max_tokens: int = Field(
        default=32000, ge=1, description="claude: max_tokens when the client sends no max_output_tokens."
    )
    thinking_budgets: dict[str, int] = Field(
        default_factory=dict,
        description="claude: thinking budget_tokens per reasoning.effort, overriding the built-in table "
        f"({', '.join(f'{effort} {budget}' for effort, budget in DEFAULT_THINKING_BUDGETS.items())}); "
        "kept below max_tokens.",
    )
    prompt_caching: bool = Field(
        default=True, description="claude: mark the system prompt and the newest turn with cache_control."
    )
    # claude thinking mode (adaptive thinking for current models)
    claude_thinking: Literal["auto", "adaptive", "budget", "off"] = Field(
        default="auto",
        description="claude: how reasoning.effort is sent: `auto` (adaptive thinking with output_config.effort "
        "for models that take it, budget_tokens for older ones), `adaptive`, `budget`, or `off` (no thinking).",
    )

    @field_validator("thinking_budgets")
    @classmethod
    def _check_thinking_budgets(cls, value: dict[str, int]) -> dict[str, int]:
        for effort, budget in value.items():
            if effort not in EFFORTS:
                raise ValueError(f"unknown reasoning effort {effort!r} (use {', '.join(EFFORTS)})")
            if budget < MIN_THINKING_BUDGET:
                raise ValueError(
                    f"thinking budget for {effort!r} must be at least {MIN_THINKING_BUDGET} (Claude's minimum)"
                )
        return value

    @model_validator(mode="before")
    @classmethod
    def _legacy_read_timeout(cls, data: Any) -> Any:
        # ``read_timeout`` used to mean both waits; it still sets whichever of the two is not given.
        if isinstance(data, dict) and "read_timeout" in data:
            data = dict(data)
            legacy = data.pop("read_timeout")
            data.setdefault("first_byte_timeout", legacy)
            data.setdefault("idle_timeout", legacy)
        return data

    @model_validator(mode="before")
    @classmethod
    def _fixed_base_url(cls, data: Any) -> Any:
        # A type with a fixed API root (the demo's in-process host) always uses it.
        if isinstance(data, dict) and isinstance(data.get("service_type"), str):
            adapter = _adapter(_SERVICE_ALIASES.get(name := data["service_type"].strip().lower(), name))
            if adapter is not None and adapter.base_url is not None:
                return {**data, "base_url": adapter.base_url}
        return data

    @field_validator("service_type", mode="before")
    @classmethod
    def _alias_service_type(cls, value: Any) -> Any:
        if isinstance(value, str):
            lowered = value.strip().lower()
            return _SERVICE_ALIASES.get(lowered, lowered)
        return value

    @field_validator("service_type")
    @classmethod
    def _registered_service_type(cls, value: str) -> str:
        from ccx_asgi.channels import service_types

        names = service_types()
        if value not in names:
            expected = " or ".join((", ".join(repr(n) for n in names[:-1]), repr(names[-1])))
            raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
        return value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        value = value.strip()
        path, mark, query = value.partition("?")
        path = path.rstrip("/")
        if path and not path.startswith(("http://", "https://")):
            # Shown without userinfo or query: either may carry a credential.
            shown = re.sub(r"//[^/@]*@", "//***@", path).partition("#")[0]
            raise ValueError(f"base_url must start with http:// or https:// (got {shown!r})")
        if path.endswith(_endpoint_paths()):
            raise ValueError("base_url must be the API root (e.g. https://api.example.com/v1), not an endpoint URL")
        return path + mark + query if query else path

    @model_validator(mode="after")
    def _check_needs_base_url(self) -> ChannelConfig:
        if not self.base_url:
            raise ValueError(f"channel {self.name!r}: base_url is required for service_type {self.service_type!r}")
        return self

    # upstream client: URL, header, proxy and CA checks (ccx_asgi.upstream)
    @model_validator(mode="after")
    def _check_upstream_client_fields(self) -> ChannelConfig:
        if "#" in self.base_url:
            raise ValueError(f"channel {self.name!r}: base_url must not have a #fragment (it is never sent)")
        if self.base_url:
            try:
                parts = urlsplit(self.base_url)
                parts.port  # noqa: B018 - raises ValueError for a port out of range
            except ValueError:
                raise ValueError(f"channel {self.name!r}: base_url has an invalid host or port") from None
            if not parts.hostname:
                raise ValueError(f"channel {self.name!r}: base_url has no host name")
        for header, value in self.headers.items():
            name = header.lower()
            if name in _FRAMING_HEADERS or name.startswith("proxy-"):
                raise ValueError(
                    f"channel {self.name!r}: headers must not set {header!r} (a framing or hop-by-hop header "
                    "the HTTP client manages)"
                )
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"channel {self.name!r}: headers has an invalid header name {header!r}")
            if not _HEADER_VALUE.fullmatch(value.get_secret_value()):
                raise ValueError(
                    f"channel {self.name!r}: the value of header {header!r} must be printable ASCII (not shown)"
                )
        if self.proxy is not None:
            proxy = self.proxy.get_secret_value().strip()
            if proxy and (not proxy.startswith(("http://", "https://")) or "#" in proxy):
                raise ValueError(f"channel {self.name!r}: proxy must be an http:// or https:// URL (not shown)")
        if self.ca_bundle is not None and not os.path.isfile(self.ca_bundle):
            raise ValueError(f"channel {self.name!r}: ca_bundle {self.ca_bundle!r} is not a readable file")
        return self

    def url(self, endpoint: str, query: str = "") -> str:
        """The full upstream URL for ``endpoint`` (``/responses``, ``/chat/completions``, ``/messages``).

        A base URL that does not end in a version segment such as ``/v1`` gets ``/v1`` added, as users
        of the original CCX expect. A query string on the base URL (Azure's ``?api-version=``) is kept:
        the endpoint path goes before it, and ``query`` (``limit=1000``) is appended to it.
        """
        base, _, base_query = self.base_url.partition("?")
        if not _VERSION_SEGMENT.search(base):
            base += "/v1"
        joined = "&".join(q for q in (base_query, query) if q) if base_query or query else ""
        return f"{base}{endpoint}?{joined}" if joined else base + endpoint


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class CCXSettings(BaseSettings):
    """Everything ccx_asgi reads from the environment (prefix ``CCX_``).

    Build it with :func:`load_settings` to get :class:`ConfigurationError` messages that name the
    variable; constructing it directly raises pydantic's ``ValidationError``.
    """

    model_config = SettingsConfigDict(env_prefix="CCX_", extra="ignore", populate_by_name=True)

    proxy_access_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("CCX_PROXY_ACCESS_KEY", "PROXY_ACCESS_KEY", "proxy_access_key"),
        description="The key clients send (Authorization: Bearer or x-api-key).",
    )
    extra_proxy_access_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="More client keys, comma-separated."
    )
    admin_access_key: SecretStr | None = Field(default=None, description="Key for the admin endpoints.")
    channels: Annotated[list[ChannelConfig], NoDecode] = Field(
        default_factory=list, description="JSON array of channel objects."
    )
    host: str = Field(default="127.0.0.1", description="Standalone server bind address.")
    port: int = Field(default=3000, ge=0, le=65535, description="Standalone server port.")
    max_body_mb: float = Field(default=50, gt=0, description="Request body limit in MB (413 above).")
    redis_url: SecretStr | None = Field(default=None, description="Optional Redis URL for shared state.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="Standalone server log format: text lines or one JSON object per line."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Standalone server log level (DEBUG adds redacted request bodies)."
    )
    metrics_path: str = Field(
        default="/metrics", description="Prometheus endpoint path relative to the mount; empty disables it."
    )
    recent_requests: int = Field(
        default=50, ge=0, le=10_000, description="Recent requests kept per channel for the admin API (0: none)."
    )
    models_from_upstream: bool = Field(
        default=True, description="GET /models also lists each upstream's own model list."
    )
    models_cache_ttl: float = Field(default=60.0, ge=0, description="Seconds an upstream model list is cached.")
    models_fetch_timeout: float = Field(
        default=3.0,
        gt=0,
        description="Seconds an upstream model list may take in all (connect, head, body) before it is skipped; "
        "no caller waits longer for a refresh under way.",
    )
    # upstream client: proxies, CAs and the connection pools (ccx_asgi.upstream)
    upstream_proxy: SecretStr | None = Field(
        default=None, description="Proxy URL (http:// or https://) for every channel without its own `proxy`."
    )
    upstream_trust_env: bool = Field(
        default=False,
        description="Channels without a proxy setting use HTTPS_PROXY / HTTP_PROXY / ALL_PROXY and NO_PROXY.",
    )
    upstream_keepalive_expiry: float = Field(
        default=5.0, ge=0, description="Seconds an idle upstream connection is kept for reuse (0: never reused)."
    )

    @field_validator("upstream_proxy")
    @classmethod
    def _check_upstream_proxy(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            proxy = value.get_secret_value().strip()
            if not proxy:
                return None
            if not proxy.startswith(("http://", "https://")) or "#" in proxy:
                raise ValueError("must be an http:// or https:// proxy URL (not shown)")
        return value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("metrics_path")
    @classmethod
    def _check_metrics_path(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return ""
        if not value.startswith("/") or value.rstrip("/") in ("", "/responses", "/models", "/admin"):
            raise ValueError("must be a path such as /metrics (relative to the mount), or empty to disable")
        return value.rstrip("/")

    redis_prefix: str = Field(default="ccx", min_length=1, description="Prefix of every Redis key ccx_asgi writes.")
    breaker_failure_threshold: int = Field(default=5, ge=1, description="Consecutive failures that open a circuit.")
    breaker_failure_ratio: float = Field(
        default=0.7, gt=0, le=1, description="Failure share over the window that opens a circuit."
    )
    breaker_window: int = Field(default=20, ge=1, description="Recent outcomes per (channel, key) the ratio uses.")
    breaker_min_requests: int = Field(default=10, ge=1, description="Outcomes needed before the ratio counts.")
    breaker_backoff: float = Field(default=30.0, gt=0, description="Seconds an opened circuit waits before a probe.")
    breaker_max_backoff: float = Field(default=600.0, gt=0, description="Cap of the doubling backoff (seconds).")
    breaker_probe_timeout: float = Field(
        default=120.0, gt=0, description="Seconds before an unfinished half-open probe lets another one through."
    )
    key_park_seconds: float = Field(
        default=300.0, ge=0, description="Seconds a key rejected with 401/402/403 or out of quota rests."
    )
    max_retry_after: float = Field(default=600.0, ge=0, description="Cap on parking a key for its Retry-After.")
    affinity_ttl: float = Field(default=1800.0, ge=0, description="Seconds a conversation sticks (0 disables).")
    affinity_prefer_priority: bool = Field(
        default=False, description="Let a healthy higher-priority channel win over the sticky one."
    )
    keepalive_interval: float = Field(
        default=10.0, ge=0, description="Seconds of silence before a response.in_progress keep-alive (0 disables)."
    )
    # stored responses: store, previous_response_id, item_reference, GET/DELETE /responses/{id}
    response_store: bool = Field(
        default=True,
        description="Keep responses created with `store` (default true) for previous_response_id, item_reference "
        "and GET/DELETE /responses/{id}; false turns storing off for the deployment.",
    )
    response_store_ttl: float = Field(default=86400.0, gt=0, description="Seconds a stored response is kept.")
    response_store_max_entries: int = Field(
        default=10_000, ge=1, description="Stored responses kept in memory; the least recently used go first."
    )
    response_store_max_mb: float = Field(
        default=256, gt=0, description="Memory for stored responses in MB (bounds a single one too)."
    )
    # standalone server: worker processes (python -m ccx_asgi --workers)
    workers: int = Field(
        default=1,
        ge=1,
        le=512,
        description="Standalone server worker processes behind one port; state is per process unless "
        "CCX_REDIS_URL is set.",
    )

    @field_validator("extra_proxy_access_keys", mode="before")
    @classmethod
    def _csv_keys(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("channels", mode="before")
    @classmethod
    def _channels_json(cls, value: Any) -> Any:
        if isinstance(value, str | bytes):
            if not value.strip():
                return []
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc})") from None
        if not isinstance(value, list):
            raise ValueError("must be a JSON array of channel objects")
        return value

    @field_validator("channels")
    @classmethod
    def _unique_names(cls, value: list[ChannelConfig]) -> list[ChannelConfig]:
        seen: set[str] = set()
        for channel in value:
            if channel.name in seen:
                raise ValueError(f"duplicate channel name {channel.name!r}")
            seen.add(channel.name)
        return value

    @property
    def response_store_max_bytes(self) -> int:
        """``response_store_max_mb`` in bytes."""
        return int(self.response_store_max_mb * 1024 * 1024)

    @property
    def max_body_bytes(self) -> int:
        """``max_body_mb`` in bytes."""
        return int(self.max_body_mb * 1024 * 1024)

    def client_keys(self) -> list[SecretStr]:
        """Every key a client may send: the proxy key first, then the extra keys."""
        keys = [self.proxy_access_key] if self.proxy_access_key else []
        return keys + list(self.extra_proxy_access_keys)

    def admin_keys(self) -> list[SecretStr]:
        """Keys that open the admin endpoints.

        The admin key when set; otherwise the proxy key, but only when no extra client keys exist
        (so a key handed out to one more client never doubles as an admin key).
        """
        if self.admin_access_key:
            return [self.admin_access_key]
        if self.proxy_access_key and not self.extra_proxy_access_keys:
            return [self.proxy_access_key]
        return []


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        loc = [str(part) for part in item["loc"]]
        head = "CCX_" + loc[0].upper() if loc else "CCX settings"
        where = head + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:])
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return "invalid configuration: " + "; ".join(lines)


def load_settings(**overrides: Any) -> CCXSettings:
    """Read :class:`CCXSettings` from the environment, turning validation errors into readable ones.

    Keyword ``overrides`` take precedence over the environment (handy in tests and host apps).
    """
    try:
        return CCXSettings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc)) from None
