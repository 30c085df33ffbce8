"""The response store on its own: bounds in entries and bytes, TTL, ownership, items, memory."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest

from ccx_asgi.state import MemoryBlobStore, MemoryStore
from ccx_asgi.store import ResponseStore, StoredResponse, owner_fingerprint


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(rid: str, owner: str = "alice", *, text: str = "hi", items: int = 1) -> StoredResponse:
    output = [{"id": f"msg_{rid}_{n}", "type": "message", "role": "assistant", "content": []} for n in range(items)]
    return StoredResponse(
        id=rid,
        owner=owner,
        kind="local",
        channel="c",
        response={"id": rid, "object": "response", "status": "completed", "output": output},
        input=[{"type": "message", "role": "user", "content": text}],
    )


async def test_blob_store_is_bounded_by_entries() -> None:
    store = MemoryBlobStore(max_entries=3, max_bytes=1_000_000)
    for n in range(10):
        assert await store.put("ns", str(n), b"x", 60)
    assert len(store) == 3
    assert [await store.get("ns", str(n)) for n in (6, 7, 8, 9)] == [None, b"x", b"x", b"x"]


async def test_blob_store_is_bounded_by_bytes_and_refuses_what_cannot_fit() -> None:
    store = MemoryBlobStore(max_entries=1000, max_bytes=10_000)
    for n in range(10):
        assert await store.put("ns", str(n), b"y" * 3000, 60)
    assert len(store) == 3 and store.size <= 10_000 and store.held_bytes == 9000
    assert not await store.put("ns", "huge", b"z" * 10_001, 60)
    assert await store.get("ns", "huge") is None


async def test_blob_store_expires_and_deletes() -> None:
    clock = Clock()
    store = MemoryBlobStore(max_entries=10, max_bytes=1000, clock=clock)
    await store.put("ns", "k", b"v", 5)
    clock.now += 4.9
    assert await store.get("ns", "k") == b"v"
    clock.now += 0.2
    assert await store.get("ns", "k") is None
    await store.put("ns", "k", b"v", 5)
    assert await store.delete("ns", "k")
    assert not await store.delete("ns", "k")


def test_blob_store_needs_positive_bounds() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryBlobStore(max_entries=0, max_bytes=10)


def test_owner_fingerprint_is_keyed_and_never_the_key() -> None:
    import hashlib

    key = b"proxy-key-for-tests"
    fingerprint = owner_fingerprint(key)
    assert key.decode() not in fingerprint
    assert fingerprint not in hashlib.sha256(key).hexdigest()  # not the digest used elsewhere
    assert fingerprint == owner_fingerprint(key) != owner_fingerprint(b"other")
    assert owner_fingerprint(None) == owner_fingerprint(b"") == "-"


async def test_records_belong_to_their_owner_and_items_follow_them() -> None:
    store = ResponseStore(MemoryStore())
    assert await store.save(record("resp_1", items=2))
    assert (await store.get("alice", "resp_1")) is not None
    assert await store.get("bob", "resp_1") is None
    assert await store.item("alice", "msg_resp_1_1") == {
        "id": "msg_resp_1_1", "type": "message", "role": "assistant", "content": []
    }  # fmt: skip
    assert await store.item("bob", "msg_resp_1_1") is None
    got = await store.get("alice", "resp_1")
    assert got is not None
    await store.delete(got)
    assert await store.get("alice", "resp_1") is None
    assert await store.item("alice", "msg_resp_1_0") is None


async def test_damaged_or_foreign_records_are_not_found() -> None:
    store = ResponseStore(MemoryStore())
    await store.responses.put("response", "resp_x", b"not json", 60)
    await store.responses.put("response", "resp_y", b'{"v": 99, "k": "local"}', 60)
    assert await store.get("alice", "resp_x") is None
    assert await store.get("alice", "resp_y") is None
    await store.items.put("item", "it", b"[1]", 60)
    assert await store.item("alice", "it") is None


async def test_a_disabled_store_keeps_nothing() -> None:
    store = ResponseStore(MemoryStore(), enabled=False)
    assert not await store.save(record("resp_1"))
    assert await store.get("alice", "resp_1") is None


async def test_expiry_uses_the_ttl() -> None:
    clock = Clock()
    store = ResponseStore(MemoryStore(), ttl=10, clock=clock)
    await store.save(record("resp_1"))
    clock.now += 9
    assert await store.get("alice", "resp_1") is not None
    clock.now += 2
    assert await store.get("alice", "resp_1") is None
    assert await store.item("alice", "msg_resp_1_0") is None


async def test_a_record_over_the_budget_is_refused() -> None:
    store = ResponseStore(MemoryStore(), max_entries=10, max_bytes=10_000)
    assert not await store.save(record("resp_big", text="x" * 20_000))
    assert await store.get("alice", "resp_big") is None


async def test_memory_stays_flat_under_ten_thousand_stored_responses() -> None:
    """Traced allocations stop growing once both bounds are reached (``python -m bench.store_memory``
    measures the process RSS through the whole app)."""
    store = ResponseStore(MemoryStore(), max_entries=500, max_bytes=64 * 1024 * 1024)
    text = "lorem ipsum " * 250  # ~3 KB of input per response
    samples: dict[int, int] = {}
    tracemalloc.start()
    try:
        for n in range(1, 10_001):
            await store.save(record(f"resp_{n}", text=f"{n} {text}", items=2))
            if n in (6_000, 10_000):
                gc.collect()
                samples[n] = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    responses: Any = store.responses
    items: Any = store.items
    assert len(responses) == 500 and len(items) == 4000  # 8 items per stored response
    # Both bounds were reached by 2,000 saves: from there on nothing accumulates (the first
    # thousands after it still resize the cache's dict, hence the later first sample), and what is
    # held is far below the 30 MB of input alone that 10,000 unbounded records would keep.
    assert samples[10_000] < samples[6_000] * 1.02, samples
    assert samples[10_000] < 8_000_000, samples


async def test_records_cost_about_their_size() -> None:
    """A stored record holds an exact-size copy, not orjson's worst-case output buffer."""
    store = ResponseStore(MemoryStore(), max_entries=10_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(500):
            await store.save(record(f"resp_{n}", text="x" * 5000))
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    responses: Any = store.responses
    items: Any = store.items
    held = responses.held_bytes + items.held_bytes
    assert used < held + 500 * 2048, (used, held)  # under 2 KB of bookkeeping per response and its item


async def test_a_record_from_before_chains_by_reference_continues_as_a_chains_first() -> None:
    """A version-1 record held the whole effective input: it reads as the root of its chain."""
    import orjson

    store = ResponseStore(MemoryStore())
    chain = [{"role": "user", "content": "My secret word is FIG."}, {"role": "user", "content": "And?"}]
    old = {"v": 1, "id": "resp_old", "o": "alice", "k": "local", "at": 1.0, "m": "m", "c": "chat",
           "r": {"id": "resp_old", "output": []}, "i": chain, "f": 1, "t": "", "u": ""}  # fmt: skip
    await store.responses.put("response", "resp_old", orjson.dumps(old), 60)
    got = await store.get("alice", "resp_old")
    assert got is not None and got.input == chain and got.parent == "" and await store.chain(got) == []
    follow = record("resp_new")
    follow.follow(got)
    assert await store.save(follow)
    assert [r.id for r in await store.chain(follow)] == ["resp_old"]
