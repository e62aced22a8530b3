"""Request signing: HMAC-SHA256 over the exact record bytes, a timestamp and the request id.

Shared by the SDK (which signs) and ingest (which verifies). The wire rules, with test
vectors for implementations in other languages, are in ``docs/signing.md``:

* string to sign = the lines ``AIRLOCK-HMAC-SHA256-V1``, client id, key id, timestamp and
  request id, each ended by a line feed, followed by the record value, byte for byte;
* ``airlock-signature: v1=<lowercase hex HMAC-SHA256(secret, string to sign)>``;
* the other inputs travel in the ``airlock-client-id``, ``airlock-key-id``,
  ``airlock-timestamp`` (Unix seconds) and ``airlock-request-id`` headers.

A request is published to partition :func:`request_partition` of the request topic so that
every record of one ``(client, request id)`` reaches the same ingest partition (where
replays and duplicates are detected); ingest re-routes records that arrive elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets

from airlock.core import headers as h

SCHEME = "AIRLOCK-HMAC-SHA256-V1"
"""First line of the string to sign; names the algorithm and its version."""
SIGNATURE_PREFIX = "v1="
"""The ``airlock-signature`` value is this prefix plus 64 lowercase hex digits."""
SECRET_BYTES = 32
"""Length of a signing secret (256 bits)."""

_FIELD = re.compile(r"^[A-Za-z0-9._:@/-]{1,128}$")
_SIGNATURE = re.compile(r"^v1=[0-9a-f]{64}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


def is_field(value: str) -> bool:
    """Whether ``value`` may be a client id, key id or request id (no separators, ≤128 chars)."""
    return bool(_FIELD.match(value))


def is_signature(value: str) -> bool:
    """Whether ``value`` has the form of an ``airlock-signature`` header."""
    return bool(_SIGNATURE.match(value))


def is_timestamp(value: str) -> bool:
    """Whether ``value`` has the form of an ``airlock-timestamp`` header (Unix seconds)."""
    return bool(_TIMESTAMP.match(value))


def string_to_sign(*, client_id: str, key_id: str, timestamp: int, request_id: str, body: bytes) -> bytes:
    """The exact bytes the HMAC covers.

    Raises:
        ValueError: A field is empty, too long, or holds a character outside the allowed set
            (which could otherwise shift the field boundaries).
    """
    for name, value in (("client_id", client_id), ("key_id", key_id), ("request_id", request_id)):
        if not is_field(value):
            raise ValueError(f"{name} must be 1-128 characters of A-Z a-z 0-9 . _ : @ / -")
    if timestamp < 0:
        raise ValueError("timestamp must be non-negative Unix seconds")
    head = "\n".join((SCHEME, client_id, key_id, str(timestamp), request_id))
    return head.encode("ascii") + b"\n" + body


def sign(secret: bytes, *, client_id: str, key_id: str, timestamp: int, request_id: str, body: bytes) -> str:
    """The ``airlock-signature`` header value for a record."""
    message = string_to_sign(client_id=client_id, key_id=key_id, timestamp=timestamp, request_id=request_id, body=body)
    return SIGNATURE_PREFIX + hmac.new(secret, message, hashlib.sha256).hexdigest()


def signature_matches(
    secret: bytes, presented: str, *, client_id: str, key_id: str, timestamp: int, request_id: str, body: bytes
) -> bool:
    """Constant-time comparison of ``presented`` with the expected signature."""
    expected = sign(secret, client_id=client_id, key_id=key_id, timestamp=timestamp, request_id=request_id, body=body)
    return hmac.compare_digest(expected.encode("ascii"), presented.encode("ascii", "replace"))


def signing_headers(
    secret: bytes, *, client_id: str, key_id: str, timestamp: int, request_id: str, body: bytes
) -> list[tuple[str, bytes]]:
    """Every header a signed record carries (request id included)."""
    signature = sign(secret, client_id=client_id, key_id=key_id, timestamp=timestamp, request_id=request_id, body=body)
    return [
        (h.REQUEST_ID, request_id.encode()),
        (h.CLIENT_ID, client_id.encode()),
        (h.KEY_ID, key_id.encode()),
        (h.TIMESTAMP, str(timestamp).encode()),
        (h.SIGNATURE, signature.encode()),
    ]


def request_partition(client_id: str, request_id: str, partitions: int) -> int:
    """The request-topic partition of a ``(client, request id)``.

    The first 8 bytes of ``SHA-256(client_id "/" request_id)`` as a big-endian unsigned
    integer, modulo the partition count: simple to reproduce in any language.
    """
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    digest = hashlib.sha256(f"{client_id}/{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % partitions


def request_key(client_id: str, request_id: str) -> bytes:
    """The record key a signed request is published with."""
    return f"{client_id}/{request_id}".encode()


def generate_secret() -> str:
    """A new random signing secret, as standard base64 text (what clients files hold)."""
    return base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def decode_secret(text: str) -> bytes:
    """The secret's bytes from its base64 text.

    Raises:
        ValueError: Not base64 of :data:`SECRET_BYTES` bytes (the message never echoes it).
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("secret is not standard base64") from None
    if len(raw) != SECRET_BYTES:
        raise ValueError(f"secret must decode to {SECRET_BYTES} bytes")
    return raw
