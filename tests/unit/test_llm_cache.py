"""The response cache's key and in-memory view (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airlock.core.models import ChatMessage
from airlock.llm_worker.cache import CacheEntry, ResponseCache, cache_key

NOW = datetime(2030, 1, 1, tzinfo=UTC)
HELLO = [ChatMessage(role="user", content="hello <PERSON_1>")]


def key(**changes: object) -> str:
    parts: dict[str, object] = {"tenant": "acme", "use_case": "faq", "model": "m", "params": {"max_tokens": 5}}
    parts.update(changes)
    return cache_key(messages=parts.pop("messages", HELLO), **parts)  # type: ignore[arg-type]


def entry(cache_key_: str, tenant: str = "acme", ttl_s: float = 60) -> CacheEntry:
    return CacheEntry(
        key=cache_key_,
        tenant=tenant,
        use_case="faq",
        model="m",
        content="answer",
        finish_reason="stop",
        served_model="m",
        created_at=NOW,
        expires_at=NOW + timedelta(seconds=ttl_s),
    )


def test_key_depends_on_tenant_use_case_model_params_and_redacted_prompt() -> None:
    base = key()
    assert key() == base
    assert key(params={"max_tokens": 5}) == base  # same parameters, any order
    variants = [
        key(tenant="globex"),
        key(use_case="support"),
        key(model="m2"),
        key(params={"max_tokens": 6}),
        key(messages=[ChatMessage(role="user", content="hello <PERSON_2>")]),
        key(messages=[ChatMessage(role="system", content="hello <PERSON_1>")]),
    ]
    assert len({base, *variants}) == 7


def test_entries_expire_and_belong_to_their_tenant() -> None:
    cache = ResponseCache()
    cache.put(entry("k1", ttl_s=10), NOW)
    assert cache.get("k1", "acme", NOW + timedelta(seconds=5)) is not None
    assert cache.get("k1", "globex", NOW) is None
    assert cache.get("k1", "acme", NOW + timedelta(seconds=10)) is None
    assert len(cache) == 0
    cache.put(entry("k2", ttl_s=10), NOW + timedelta(seconds=11))  # already expired: not kept
    assert len(cache) == 0


def test_least_recently_used_entries_are_evicted_first() -> None:
    cache = ResponseCache(max_entries=2)
    cache.put(entry("a"), NOW)
    cache.put(entry("b"), NOW)
    assert cache.get("a", "acme", NOW) is not None  # a is now the most recent
    cache.put(entry("c"), NOW)
    assert cache.get("b", "acme", NOW) is None
    assert cache.get("a", "acme", NOW) is not None and cache.get("c", "acme", NOW) is not None
    cache.discard("a")
    assert cache.get("a", "acme", NOW) is None
