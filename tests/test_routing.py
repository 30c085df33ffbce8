"""Routing rules as tables: allowlist patterns, model mapping, priority order and the 404."""

from __future__ import annotations

import pytest

from ccx_asgi.routing import Allowlist, Router, map_model, matches_allowlist, ordered_channels, public_models
from ccx_asgi.settings import ChannelConfig
from tests.conftest import AppFactory, channel
from tests.fixture_types import ClientFor


def cfg(name: str, **fields: object) -> ChannelConfig:
    return ChannelConfig.model_validate(channel(name, **fields))


@pytest.mark.parametrize(
    ("patterns", "model", "allowed"),
    [
        ([], "anything", True),
        (["gpt-5"], "gpt-5", True),
        (["gpt-5"], "gpt-5-mini", False),
        (["gpt-5"], "GPT-5", False),  # case-sensitive like the original
        (["gpt*"], "gpt-5-codex", True),
        (["gpt*"], "chatgpt", False),
        (["*mini"], "gpt-5-mini", True),
        (["*mini"], "gpt-5-mini-2", False),
        (["*codex*"], "gpt-5-codex-max", True),
        (["*codex*"], "gpt-5", False),
        (["*"], "x", True),
        (["gpt*", "!gpt-4*"], "gpt-5", True),
        (["gpt*", "!gpt-4*"], "gpt-4o", False),
        (["!*mini"], "gpt-5", True),  # only exclusions: everything else passes
        (["!*mini"], "gpt-5-mini", False),
        (["gpt-5", "!gpt-5"], "gpt-5", False),  # exclusions always win
        (["claude*", "*sonnet*"], "my-sonnet-x", True),
        (["", "!"], "m", True),  # empty patterns are ignored
    ],
)
def test_allowlist(patterns: list[str], model: str, allowed: bool) -> None:
    assert matches_allowlist(patterns, model) is allowed
    assert Allowlist.compile(patterns).allows(model) is allowed


@pytest.mark.parametrize(
    ("model_map", "model", "expected"),
    [
        ({}, "gpt-5", "gpt-5"),
        ({"gpt-5": "deepseek-chat"}, "gpt-5", "deepseek-chat"),
        ({"gpt": "a", "gpt-5": "b"}, "gpt-5-mini", "b"),  # longest substring key wins
        ({"gpt": "a", "mini": "m"}, "gpt-5-mini", "m"),  # 'mini' (4) is longer than 'gpt' (3)
        ({"gpt-5": "exact", "gpt-5-mini": "longer"}, "gpt-5", "exact"),  # exact before substring
        ({"abc": "first", "bcd": "second"}, "abcd", "first"),  # tie: alphabetically first key
        ({"bcd": "second", "abc": "first"}, "abcd", "first"),  # independent of JSON order
        ({"codex": "c"}, "gpt-5", "gpt-5"),  # no key matches: unchanged
        ({"": "empty"}, "gpt-5", "gpt-5"),  # an empty key never matches as substring
    ],
)
def test_map_model(model_map: dict[str, str], model: str, expected: str) -> None:
    assert map_model(model_map, model) == expected


def test_priority_order_disabled_channels_and_list_order() -> None:
    channels = [
        cfg("late", priority=5),
        cfg("off", priority=0, enabled=False),
        cfg("first", priority=1),
        cfg("second"),  # no priority: its list index (3) is used
        cfg("tie", priority=1),  # same priority as 'first': list order breaks the tie
    ]
    assert [c.name for c in ordered_channels(channels)] == ["first", "tie", "second", "late"]


def test_router_candidates_use_the_requested_model_and_map_per_channel() -> None:
    router = Router(
        [
            cfg("ds", models=["gpt*"], model_map={"gpt": "deepseek-chat"}, priority=2),
            cfg("kimi", models=["*codex*"], model_map={"codex": "kimi-k2"}, priority=1),
            cfg("off", enabled=False),
        ]
    )
    got = [(c.channel.name, c.upstream_model) for c in router.candidates("gpt-5-codex")]
    assert got == [("kimi", "kimi-k2"), ("ds", "deepseek-chat")]
    # The mapped name never matters for the allowlist: 'deepseek-chat' is not allowed anywhere.
    assert router.candidates("deepseek-chat") == []
    assert [c.channel.name for c in router.candidates("gpt-4")] == ["ds"]


def test_public_models_lists_mapping_keys_and_exact_names_once() -> None:
    models = public_models(
        [cfg("a", model_map={"gpt-5": "x"}, models=["gpt-5", "o3", "gpt*", "!o3"]), cfg("b", models=["gpt-5", "m"])]
    )
    assert models == [("gpt-5", "a"), ("m", "b")]


async def test_no_candidate_is_a_404_naming_the_model(make_app: AppFactory, client_for: ClientFor) -> None:
    client = client_for(make_app([channel("a", models=["claude*"]), channel("b", models=["gpt*"], enabled=False)]))
    response = await client.post("/responses", json={"model": "gpt-5", "input": "hi"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert "'gpt-5'" in error["message"]
    assert "allowlist" in error["message"]


async def test_single_channel_allowlist_is_enforced(make_app: AppFactory, client_for: ClientFor) -> None:
    # Original CCX bug 9: the allowlist was ignored when only one channel existed.
    client = client_for(make_app([channel("only", models=["gpt-5"])]))
    response = await client.post("/responses", json={"model": "o3", "input": "hi"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_targets_are_channels_times_keys_pinned_and_sticky() -> None:
    from pydantic import SecretStr

    from ccx_asgi.breaker import target_id
    from ccx_asgi.routing import order_targets

    router = Router([cfg("a", priority=1, api_keys=["ka1", "ka2"]), cfg("b", priority=2, api_keys=["kb1"])])
    candidates = router.candidates("gpt-5")
    plain = order_targets(candidates)
    assert [(t.candidate.channel.name, t.index) for t in plain] == [("a", 0), ("a", 1), ("b", 0)]
    assert plain[1].id == target_id("a", SecretStr("ka2"))
    b = target_id("b", SecretStr("kb1"))
    # Affinity: the sticky target first; with prefer_priority, first within its own channel only.
    assert [t.id for t in order_targets(candidates, sticky=b)] == [b, plain[0].id, plain[1].id]
    assert [t.id for t in order_targets(candidates, sticky=b, prefer_priority=True)] == [t.id for t in plain]
    a2 = plain[1].id
    assert [t.id for t in order_targets(candidates, sticky=a2, prefer_priority=True)] == [a2, plain[0].id, b]
    # A previous response held by one account: only that target.
    assert [t.id for t in order_targets(candidates, pinned=b, sticky=a2)] == [b]
    assert order_targets(candidates, sticky="gone") == plain
