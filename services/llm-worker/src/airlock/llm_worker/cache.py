"""The exact-match response cache (opt-in per tenant and use case).

Entries live on a compacted Kafka topic (``<prefix>llm.cache``), written in the same
transaction as the completion they come from, and every replica keeps the topic's live
entries in memory (:class:`ResponseCache`), so a hit works on any replica. Entries hold
the redacted prompt's answer — placeholders, never values — and each request is restored
with its own vault, so an answer cached for one request is correct for another request of
the same tenant whose *redacted* prompt is identical.

Tenants never share entries: the tenant is part of the key and is checked again on read.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from airlock.core.models import SCHEMA_VERSION, ChatMessage


class CacheEntry(BaseModel):
    """One cached answer, as stored on the cache topic (key = :attr:`key`).

    Attributes:
        key: :func:`cache_key` of the request it answers.
        tenant: The tenant it belongs to; checked on every read.
        use_case: The use case it was cached for.
        model: The logical model.
        content: The answer in redacted form.
        finish_reason: Always a complete one (cut-short answers are not cached).
        served_model: What the provider said answered.
        expires_at: After this, the entry is ignored.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    key: str
    tenant: str
    use_case: str
    model: str
    content: str
    finish_reason: str
    served_model: str
    created_at: datetime
    expires_at: datetime


def cache_key(
    *, tenant: str, use_case: str, model: str, params: Mapping[str, Any], messages: Sequence[ChatMessage]
) -> str:
    """SHA-256 over the canonical JSON of everything that determines the answer."""
    document = {
        "tenant": tenant,
        "use_case": use_case,
        "model": model,
        "params": dict(sorted(params.items())),
        "messages": [[m.role, m.content] for m in messages],
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ResponseCache:
    """The replica's view of the cache topic: live entries, least recently used evicted first.

    Args:
        max_entries: Entries kept in memory.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._max = max_entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, tenant: str, now: datetime) -> CacheEntry | None:
        """The live entry for ``key`` belonging to ``tenant``, or ``None``."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= now:
            del self._entries[key]
            return None
        if entry.tenant != tenant:
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, entry: CacheEntry, now: datetime) -> None:
        """Keep ``entry`` (a newer entry for the same key replaces it; expired ones are skipped)."""
        if entry.expires_at <= now:
            self._entries.pop(entry.key, None)
            return
        self._entries[entry.key] = entry
        self._entries.move_to_end(entry.key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def discard(self, key: str) -> None:
        """Forget ``key`` (a tombstone on the topic)."""
        self._entries.pop(key, None)
