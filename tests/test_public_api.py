"""The package's public surface: ``__all__`` matches the public names, and each is documented."""

from __future__ import annotations

import inspect

import ccx_asgi


def test_all_matches_public_names() -> None:
    public = {name for name in dir(ccx_asgi) if not name.startswith("_")}
    modules = {name for name in public if inspect.ismodule(getattr(ccx_asgi, name))}
    assert set(ccx_asgi.__all__) - {"__version__"} == public - modules


def test_public_names_are_documented() -> None:
    for name in ccx_asgi.__all__:
        obj = getattr(ccx_asgi, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{name} has no docstring"


def test_middleware_signature_convention() -> None:
    for cls in (ccx_asgi.AuthMiddleware, ccx_asgi.ModelMapperMiddleware, ccx_asgi.FailoverMiddleware,
                ccx_asgi.RoleNormalizerMiddleware):  # fmt: skip
        params = list(inspect.signature(cls.__init__).parameters.values())
        assert params[1].name == "app"
        assert all(p.kind is p.KEYWORD_ONLY for p in params[2:]), cls
        assert inspect.iscoroutinefunction(cls.__call__)
