"""The hash chain: pure functions shared by sealing, replay and offline verification.

Each ledger partition is a chain. Record ``n`` stores ``prev_hash`` (record ``n-1``'s hash,
or 64 zeros for the first) and ``hash = SHA-256(prev_hash ‖ JCS(event))``, where JCS is the
RFC 8785 canonical JSON of the audit event exactly as the stage published it.

The sealer writes the event into the ledger record *in its canonical form* and as the
record's last member, so a verifier can hash the event's bytes as stored instead of
re-serializing them (:func:`parse_record`); whenever that shortcut does not apply, the
verifier falls back to computing JCS itself, so a record re-serialized by another tool
still verifies.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import rfc8785
from pydantic import BaseModel, ConfigDict
from pydantic_core import from_json

from airlock.core.jsondoc import parse_json

GENESIS = "0" * 64

#: JCS permits integers only within the exact range of an IEEE 754 double.
_SAFE_INT = 2**53 - 1
_COMPACT_SORTED = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_EVENT_MEMBER = b',"event":'
_CLOSE = ord("}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_RECORD_KEYS = frozenset({"schema_version", "partition", "seq", "prev_hash", "hash", "source", "sealed_at", "event"})


class CanonicalizationError(ValueError):
    """The value has no RFC 8785 form (NaN, infinity, an integer beyond 2**53, lone surrogates…)."""


class _NeedsReference(Exception):
    """The fast path cannot vouch for this value; use the reference implementation."""


def _jcs_ready(value: Any) -> Any:
    """A copy of ``value`` that :data:`_COMPACT_SORTED` serializes exactly as RFC 8785 does.

    The standard library already matches JCS for strings (same escapes, raw UTF-8), for
    integers in the safe range and for floats that ``repr`` prints without an exponent,
    except that JCS drops a trailing ``.0``. Anything else (exponents, non-ASCII keys whose
    UTF-16 order could differ, huge integers) goes to the reference implementation.
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is dict:
        ready = {}
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                raise _NeedsReference
            ready[key] = _jcs_ready(item)
        return ready
    if kind is int:
        if -_SAFE_INT <= value <= _SAFE_INT:
            return value
        raise _NeedsReference
    if kind is float:
        text = repr(value)
        if "e" in text or "n" in text:  # exponent, nan, inf
            raise _NeedsReference
        return int(value) if text.endswith(".0") else value
    if kind is list or kind is tuple:
        return [_jcs_ready(item) for item in value]
    raise _NeedsReference


def canonical(event: Mapping[str, Any]) -> bytes:
    """RFC 8785 canonical JSON of an event.

    Raises:
        CanonicalizationError: When the event has no canonical form.
    """
    try:
        return _COMPACT_SORTED.encode(_jcs_ready(dict(event))).encode("utf-8")
    except (_NeedsReference, UnicodeEncodeError, ValueError):
        pass
    try:
        return rfc8785.dumps(dict(event))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as error:
        raise CanonicalizationError(str(error)) from None


class _Exotic:
    """A number the fast path will not serialize; makes the encoder fail over to the reference."""

    __slots__ = ()


_EXOTIC = _Exotic()


def _float_for_jcs(text: str) -> float | int | _Exotic:
    value = float(text)
    shown = repr(value)
    if "e" in shown or "n" in shown:  # exponent form, inf, nan
        return _EXOTIC
    if shown.endswith(".0"):
        return int(value) if -_SAFE_INT <= value <= _SAFE_INT else _EXOTIC
    return value


def _int_for_jcs(text: str) -> int | _Exotic:
    value = int(text)
    return value if -_SAFE_INT <= value <= _SAFE_INT else _EXOTIC


def _constant_for_jcs(text: str) -> _Exotic:
    return _EXOTIC


_JCS_DECODER = json.JSONDecoder(parse_float=_float_for_jcs, parse_int=_int_for_jcs, parse_constant=_constant_for_jcs)


def parse_canonical(raw: bytes) -> tuple[dict[str, Any], bytes]:
    r"""Parse a JSON object and return it with its RFC 8785 canonical bytes.

    The fast path serves plain ASCII JSON without ``\u`` escapes (what the stages publish):
    keys then sort the same by code point as by UTF-16 unit, strings need no re-escaping
    decisions, and numbers are vetted while parsing. Anything else takes the general path.

    Raises:
        ValueError: When ``raw`` is not a JSON object within bounds (``NotJSON``,
            ``UnicodeDecodeError`` and :class:`CanonicalizationError` included).
    """
    # Bounds first (nesting, lone surrogates: see airlock.core.jsondoc), in pydantic-core's
    # parser: the decoders below recurse per level and take "\\ud800" for a string.
    parse_json(raw)
    if raw.isascii() and b"\\u" not in raw:
        document = _JCS_DECODER.decode(raw.decode("ascii"))
        if type(document) is not dict:
            raise ValueError("not a JSON object")
        try:
            return document, _COMPACT_SORTED.encode(document).encode("ascii")
        except TypeError:
            pass  # an exotic number: let the reference implementation judge it
    document = json.loads(raw)
    if type(document) is not dict:
        raise ValueError("not a JSON object")
    return document, canonical(document)


def canonical_reference(event: Mapping[str, Any]) -> bytes:
    """RFC 8785 canonical JSON by the reference implementation (slow; for tests and fallbacks)."""
    return rfc8785.dumps(dict(event))


def chain_hash(prev_hash: str, canonical_event: bytes) -> str:
    """``SHA-256(prev_hash ‖ canonical_event)`` as lowercase hex (``prev_hash`` as its 32 bytes)."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_event).hexdigest()


def link_hash(prev_hash: str, event: Mapping[str, Any]) -> str:
    """``SHA-256(prev_hash ‖ JCS(event))`` as lowercase hex."""
    return chain_hash(prev_hash, canonical(event))


def format_time(moment: datetime) -> str:
    """ISO 8601 with microseconds, ``Z`` for UTC (the form pydantic writes)."""
    text = moment.isoformat(timespec="microseconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class Source(BaseModel):
    """Where in the audit topic the sealed event came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str
    partition: int
    offset: int


_RECORD = (
    b'{"schema_version":1,"partition":%d,"seq":%d,"prev_hash":"%s","hash":"%s",'
    b'"source":{"topic":%s,"partition":%d,"offset":%d},"sealed_at":"%s","event":%s}'
)


def encode_record(
    *,
    partition: int,
    seq: int,
    prev_hash: str,
    hash: str,
    source: tuple[str, int, int],
    sealed_at: str,
    canonical_event: bytes,
) -> bytes:
    """The wire form of a ledger record: compact JSON, the canonical event as last member.

    Args:
        partition: The chain's partition.
        seq: The record's position.
        prev_hash: The previous record's hash.
        hash: This record's hash.
        source: ``(topic, partition, offset)`` of the audit record sealed.
        sealed_at: When it was sealed, as :func:`format_time` writes it.
        canonical_event: The event's RFC 8785 bytes.
    """
    topic, source_partition, offset = source
    return _RECORD % (
        partition,
        seq,
        prev_hash.encode("ascii"),
        hash.encode("ascii"),
        json.dumps(topic).encode("utf-8"),
        source_partition,
        offset,
        sealed_at.encode("ascii"),
        canonical_event,
    )


class LedgerRecord(BaseModel):
    """One sealed audit event on the ledger topic.

    Attributes:
        partition: The ledger (and audit) partition this chain belongs to.
        seq: Position in the chain, from 1, without gaps.
        prev_hash: Hash of the previous record (``GENESIS`` for seq 1).
        hash: ``SHA-256(prev_hash ‖ JCS(event))``.
        source: The audit record sealed.
        sealed_at: When the auditor sealed it (not covered by the hash).
        event: The audit event, as published.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    partition: int
    seq: int
    prev_hash: str
    hash: str
    source: Source
    sealed_at: datetime
    event: dict[str, Any]

    def to_bytes(self) -> bytes:
        """The JSON wire form (see :func:`encode_record`)."""
        return encode_record(
            partition=self.partition,
            seq=self.seq,
            prev_hash=self.prev_hash,
            hash=self.hash,
            source=(self.source.topic, self.source.partition, self.source.offset),
            sealed_at=format_time(self.sealed_at),
            canonical_event=canonical(self.event),
        )


@dataclass(slots=True)
class ParsedRecord:
    """A ledger record as a verifier reads it, with what its hash covers.

    Attributes:
        partition: The partition the record claims.
        seq: Its claimed position.
        prev_hash: Its claimed predecessor hash.
        hash: Its claimed hash.
        event: The audit event.
        sealed_at: When it was sealed (text, as stored).
        source: The ``{topic, partition, offset}`` of the audit record, as stored.
        content_ok: Whether ``hash`` is the chain hash of ``prev_hash`` and the event.
        stored: Bytes holding the canonical event at ``start:end`` (the record itself, or the
            event canonicalized afresh): kept by reference, sliced only when needed.
    """

    partition: int
    seq: int
    prev_hash: str
    hash: str
    event: dict[str, Any]
    sealed_at: str
    source: Any
    content_ok: bool
    stored: bytes
    start: int
    end: int

    @property
    def event_bytes(self) -> bytes:
        """The canonical event bytes the hash is computed over."""
        return self.stored[self.start : self.end]

    @property
    def origin(self) -> str:
        """``topic/partition/offset`` of the audit record sealed."""
        source = self.source if isinstance(self.source, dict) else {}
        return f"{source.get('topic')}/{source.get('partition')}/{source.get('offset')}"


def _head_fields(document: dict[str, Any]) -> tuple[int, int, str, str, dict[str, Any]] | None:
    """The typed head fields of a parsed record, or ``None`` when they are not a ledger record's."""
    if len(document) != len(_RECORD_KEYS) or not _RECORD_KEYS.issuperset(document) or document["schema_version"] != 1:
        return None
    partition, seq, prev_hash, hash_, event = (
        document["partition"],
        document["seq"],
        document["prev_hash"],
        document["hash"],
        document["event"],
    )
    if type(partition) is not int or type(seq) is not int or seq < 1 or type(event) is not dict:
        return None
    if not (type(prev_hash) is str and type(hash_) is str and _HEX64.fullmatch(prev_hash) and _HEX64.fullmatch(hash_)):
        return None
    return partition, seq, prev_hash, hash_, event


def parse_record(raw: bytes) -> ParsedRecord | None:
    """Read a ledger record for verification; ``None`` when it is not one.

    The fast path parses the record once and hashes the stored event bytes as they are (the
    bytes between the first ``,"event":`` and the closing brace). That is sound: a stored
    hash can only match bytes that are the original canonical event — one JSON object — and
    then the record parses only if that member is the top-level object's last, so the event
    interpreted is exactly the event hashed. Records in any other layout, or whose fast
    check fails, have their event canonicalized afresh, so a record re-serialized by another
    tool is judged on its content.
    """
    try:
        document = from_json(raw, cache_strings="keys")
    except ValueError:
        try:
            document = json.loads(raw)
        except ValueError:
            return None
    if type(document) is not dict:
        return None
    fields = _head_fields(document)
    if fields is None:
        return None
    partition, seq, prev_hash, hash_, event = fields
    sealed_at, source = str(document["sealed_at"]), document["source"]
    start, end = raw.find(_EVENT_MEMBER) + len(_EVENT_MEMBER), len(raw) - 1
    fast = start > len(_EVENT_MEMBER) and raw[end] == _CLOSE
    if fast and hashlib.sha256(bytes.fromhex(prev_hash) + raw[start:end]).hexdigest() == hash_:
        return ParsedRecord(partition, seq, prev_hash, hash_, event, sealed_at, source, True, raw, start, end)
    try:
        event_bytes = canonical(event)
    except CanonicalizationError:
        event_bytes = b""  # no canonical form: cannot match any hash
    intact = chain_hash(prev_hash, event_bytes) == hash_
    return ParsedRecord(
        partition, seq, prev_hash, hash_, event, sealed_at, source, intact, event_bytes, 0, len(event_bytes)
    )


@dataclass(frozen=True)
class ChainHead:
    """The last sealed position of a partition's chain (``seq`` 0 means empty)."""

    seq: int = 0
    hash: str = GENESIS

    def extend(self, partition: int, event: Mapping[str, Any], source: Source, sealed_at: datetime) -> LedgerRecord:
        """The record that appends ``event`` to this chain."""
        return LedgerRecord(
            partition=partition,
            seq=self.seq + 1,
            prev_hash=self.hash,
            hash=link_hash(self.hash, event),
            source=source,
            sealed_at=sealed_at,
            event=dict(event),
        )

    def seal(
        self, partition: int, canonical_event: bytes, source: tuple[str, int, int], sealed_at: str
    ) -> tuple[ChainHead, bytes]:
        """Append an already canonical event: the new head and the record's bytes.

        Args:
            partition: The chain's partition.
            canonical_event: The event's RFC 8785 bytes.
            source: ``(topic, partition, offset)`` of the audit record.
            sealed_at: :func:`format_time` of the sealing time.
        """
        seq, digest = self.seq + 1, chain_hash(self.hash, canonical_event)
        record = encode_record(
            partition=partition,
            seq=seq,
            prev_hash=self.hash,
            hash=digest,
            source=source,
            sealed_at=sealed_at,
            canonical_event=canonical_event,
        )
        return ChainHead(seq, digest), record

    @staticmethod
    def after(record: LedgerRecord) -> ChainHead:
        """The head once ``record`` is sealed."""
        return ChainHead(record.seq, record.hash)
