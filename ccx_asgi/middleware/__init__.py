"""Composable pure-ASGI middleware: auth, model mapper, failover, role normalizer, stored responses."""

from ccx_asgi.middleware.auth import AuthMiddleware
from ccx_asgi.middleware.failover import FailoverMiddleware
from ccx_asgi.middleware.model_mapper import ModelMapperMiddleware
from ccx_asgi.middleware.role_normalizer import RoleNormalizerMiddleware
from ccx_asgi.middleware.stateful import StatefulMiddleware

__all__ = [
    "AuthMiddleware",
    "FailoverMiddleware",
    "ModelMapperMiddleware",
    "RoleNormalizerMiddleware",
    "StatefulMiddleware",
]
