"""ccx_asgi: an embeddable OpenAI Responses API gateway for Codex and the OpenAI SDKs.

Mount :func:`create_app` at ``/v1`` in a FastAPI, Starlette or Litestar service, or run
``python -m ccx_asgi`` for a standalone server. Configuration comes from ``CCX_*`` environment
variables (see :class:`CCXSettings`).
"""

from ccx_asgi.app import CCXApp, create_app
from ccx_asgi.context import Attempt, RequestContext
from ccx_asgi.errors import (
    AllChannelsFailedError,
    AuthenticationError,
    CCXError,
    ConfigurationError,
    InvalidRequestError,
    ModelNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    RequestTooLargeError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamStreamError,
    UpstreamTimeoutError,
)
from ccx_asgi.middleware import (
    AuthMiddleware,
    FailoverMiddleware,
    ModelMapperMiddleware,
    RoleNormalizerMiddleware,
)
from ccx_asgi.settings import CCXSettings, ChannelConfig, load_settings

__version__ = "0.1.0"

__all__ = [
    "AllChannelsFailedError",
    "Attempt",
    "AuthMiddleware",
    "AuthenticationError",
    "CCXApp",
    "CCXError",
    "CCXSettings",
    "ChannelConfig",
    "ConfigurationError",
    "FailoverMiddleware",
    "InvalidRequestError",
    "ModelMapperMiddleware",
    "ModelNotFoundError",
    "NotFoundError",
    "PermissionDeniedError",
    "RequestContext",
    "RequestTooLargeError",
    "RoleNormalizerMiddleware",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamStatusError",
    "UpstreamStreamError",
    "UpstreamTimeoutError",
    "__version__",
    "create_app",
    "load_settings",
]
