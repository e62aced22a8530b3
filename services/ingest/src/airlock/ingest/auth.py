"""Who sent a record: verify its signature against the clients file (pure; no Kafka).

The signing scheme is :mod:`airlock.core.signing` (specified in ``docs/signing.md``).
Every refusal is a :class:`~airlock.core.errors.StageError` whose message names ids and
header names, never a secret or a signature's expected value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from airlock.core import headers as h
from airlock.core.errors import ErrorCode, StageError
from airlock.core.signing import is_field, is_signature, is_timestamp, signature_matches
from airlock.core.stage import Incoming
from airlock.ingest.clients import ClientPolicy, ClientsFile

SIGNING_HEADERS = (h.CLIENT_ID, h.KEY_ID, h.TIMESTAMP, h.SIGNATURE, h.REQUEST_ID)


@dataclass(frozen=True)
class Sender:
    """An authenticated record's origin.

    Attributes:
        client_id: The client whose key verified the signature.
        key_id: That key's id.
        request_id: The signed request id.
        timestamp: The signed timestamp (Unix seconds).
        signature: The verified signature (identifies this exact signed record).
        policy: What the client may do.
    """

    client_id: str
    key_id: str
    request_id: str
    timestamp: int
    signature: str
    policy: ClientPolicy


def claimed_client(incoming: Incoming) -> str | None:
    """The client id a record claims in its header, if it is a well-formed id (for audit)."""
    value = incoming.safe_header(h.CLIENT_ID)
    return value if value is not None and is_field(value) else None


def authenticate(incoming: Incoming, clients: ClientsFile, *, now: datetime, tolerance_s: float) -> Sender:
    """Verify a record's signature headers.

    Checks, in order: every signing header present and well formed; the client and key
    known and the key not expired; the HMAC over the exact bytes; the timestamp within
    ``tolerance_s`` of ``now`` (checked after the HMAC, so a forger learns nothing).

    Raises:
        StageError: ``signature_missing``, ``bad_header``, ``signature_invalid``,
            ``unknown_client``, ``unknown_key``, ``key_expired`` or ``timestamp_out_of_window``.
    """
    values = {name: incoming.header(name) for name in SIGNING_HEADERS}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise StageError(ErrorCode.SIGNATURE_MISSING, f"request is not signed: missing {', '.join(missing)}")
    client_id, key_id = str(values[h.CLIENT_ID]), str(values[h.KEY_ID])
    request_id, stamp = str(values[h.REQUEST_ID]), str(values[h.TIMESTAMP])
    signature = str(values[h.SIGNATURE])
    for name in (h.CLIENT_ID, h.KEY_ID, h.REQUEST_ID):
        if not is_field(str(values[name])):
            raise StageError(ErrorCode.BAD_HEADER, f"header {name} is not a valid id")
    if not is_timestamp(stamp):
        raise StageError(ErrorCode.BAD_HEADER, f"header {h.TIMESTAMP} must be Unix seconds")
    if not is_signature(signature):
        raise StageError(ErrorCode.SIGNATURE_INVALID, f"header {h.SIGNATURE} must be v1= and 64 hex digits")
    policy = clients.clients.get(client_id)
    if policy is None:
        raise StageError(ErrorCode.UNKNOWN_CLIENT, f"client {client_id!r} is not registered")
    key = policy.keys.get(key_id)
    if key is None:
        raise StageError(ErrorCode.UNKNOWN_KEY, f"key {key_id!r} is not a key of client {client_id!r}")
    if not key.valid_at(now):
        raise StageError(ErrorCode.KEY_EXPIRED, f"key {key_id!r} of client {client_id!r} has expired; use a newer key")
    timestamp = int(stamp)
    if not signature_matches(
        key.material(),
        signature,
        client_id=client_id,
        key_id=key_id,
        timestamp=timestamp,
        request_id=request_id,
        body=incoming.value,
    ):
        raise StageError(ErrorCode.SIGNATURE_INVALID, f"signature does not match the request (key {key_id!r})")
    skew = now.timestamp() - timestamp
    if abs(skew) > tolerance_s:
        when = f"{skew:.0f}s old" if skew > 0 else f"{-skew:.0f}s in the future"
        raise StageError(
            ErrorCode.TIMESTAMP_OUT_OF_WINDOW,
            f"signature timestamp is {when}; the window is ±{tolerance_s:.0f}s",
        )
    return Sender(client_id, key_id, request_id, timestamp, signature, policy)


def utc(timestamp_s: float) -> datetime:
    """A Unix time as an aware UTC datetime."""
    return datetime.fromtimestamp(timestamp_s, UTC)
