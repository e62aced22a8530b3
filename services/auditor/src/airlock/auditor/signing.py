"""Signed checkpoints: Ed25519 keys with ids and rotation, and the checkpoint statement.

A checkpoint says "ledger L, partition p, has ``seq`` records and its head hash is ``hash``",
at a time, signed by key ``key_id``. Because every chain hash covers all records before it,
one valid checkpoint vouches for the whole prefix of its partition.

The signing key ring has the same JSON form as the other key rings
(``{"active": "sig-2", "keys": {"sig-1": "<base64 32-byte seed>", "sig-2": "…"}}``): the
active key signs; verifiers only ever need the public keys, which are published as
:class:`PublicKeys` (in the witness directory, in every export, by ``airlock audit keys``), so
a private key can be retired from the ring and its checkpoints stay verifiable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airlock.auditor.chain import canonical, format_time
from airlock.core.crypto import KeyRing, KeyRingError, b64, load_key_ring, unb64

#: Domain separation: a checkpoint signature can never be replayed as any other signed statement.
CHECKPOINT_CONTEXT = b"airlock-ledger-checkpoint/v1\n"
KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
KEYS_FORMAT = "airlock-ledger-keys/1"


class SigningKeys:
    """The auditor's Ed25519 signing keys; ``active`` signs.

    Prints as its key ids only: key material never reaches a log.

    Args:
        ring: Key ids → 32-byte Ed25519 seeds, with the active id.

    Raises:
        KeyRingError: When a key id is unusable (it names files in the witness directory).
    """

    def __init__(self, ring: KeyRing) -> None:
        for key_id in ring.keys:
            if not KEY_ID.match(key_id):
                raise KeyRingError(f"signing key id {key_id[:64]!r} must match {KEY_ID.pattern}")
        self.active = ring.active
        self._keys = {key_id: Ed25519PrivateKey.from_private_bytes(seed) for key_id, seed in ring.keys.items()}

    def __repr__(self) -> str:
        return f"SigningKeys(active={self.active!r}, key_ids={sorted(self._keys)!r})"

    @classmethod
    def load(cls, value: str | None, path: Path | None, *, variable: str) -> SigningKeys:
        """Read the ring from an inline secret or a mounted file (see :func:`load_key_ring`)."""
        return cls(load_key_ring(value, path, variable=variable))

    def sign(self, message: bytes) -> tuple[str, bytes]:
        """Sign with the active key: ``(key_id, signature)``."""
        return self.active, self._keys[self.active].sign(message)

    def public_keys(self) -> PublicKeys:
        """The public halves of every key in the ring."""
        return PublicKeys(
            {
                key_id: key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
                for key_id, key in self._keys.items()
            }
        )


class KeyConflict(ValueError):
    """Two sources publish different public keys under the same key id."""


@dataclass(frozen=True)
class PublicKeys:
    """Trusted Ed25519 public keys by key id (raw 32 bytes each)."""

    keys: dict[str, bytes] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def merged(self, other: PublicKeys) -> PublicKeys:
        """Both sets; raises :class:`KeyConflict` when an id maps to two different keys."""
        for key_id, key in other.keys.items():
            if key_id in self.keys and self.keys[key_id] != key:
                raise KeyConflict(f"key id {key_id!r} names two different public keys")
        return PublicKeys({**self.keys, **other.keys})

    def entry(self, key_id: str) -> dict[str, str]:
        """The JSON entry of one key."""
        return {"algorithm": "Ed25519", "public_key": b64(self.keys[key_id])}

    def to_json(self) -> str:
        """``{"format": …, "keys": {id: {"algorithm": "Ed25519", "public_key": b64}}}``."""
        return json.dumps({"format": KEYS_FORMAT, "keys": {k: self.entry(k) for k in sorted(self.keys)}}, indent=2)

    @classmethod
    def from_entries(cls, entries: Mapping[str, object]) -> PublicKeys:
        """Parse ``{id: {"algorithm": "Ed25519", "public_key": b64}}``.

        Raises:
            KeyRingError: When an entry is not an Ed25519 public key.
        """
        keys: dict[str, bytes] = {}
        for key_id, entry in entries.items():
            problem = KeyRingError(f"public key {str(key_id)[:64]!r} is not an Ed25519 key entry")
            if not isinstance(entry, Mapping) or entry.get("algorithm") != "Ed25519" or not KEY_ID.match(str(key_id)):
                raise problem
            try:
                raw = unb64(str(entry.get("public_key", "")))
                Ed25519PublicKey.from_public_bytes(raw)
            except ValueError:
                raise problem from None
            keys[str(key_id)] = raw
        return cls(keys)

    @classmethod
    def from_json(cls, text: str) -> PublicKeys:
        """Parse :meth:`to_json`'s form."""
        try:
            entries = json.loads(text)["keys"]
        except (ValueError, KeyError, TypeError):
            entries = None
        if not isinstance(entries, dict):
            raise KeyRingError("public keys must be JSON of the form {format, keys: {id: entry}}")
        return cls.from_entries(entries)

    def check(self, key_id: str, signature: bytes, message: bytes) -> str | None:
        """``None`` when ``signature`` is ``key_id``'s over ``message``, else why not."""
        if not self.keys:
            return f"signed with key {key_id!r}, but no public key is trusted (pass --keys or --witness)"
        raw = self.keys.get(key_id)
        if raw is None:
            return f"signed with unknown key id {key_id!r}"
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(signature, message)
        except InvalidSignature:
            return f"signature does not verify under key {key_id!r}"
        return None


class Checkpoint(BaseModel):
    """A signed statement of a ledger partition's head.

    Attributes:
        ledger: The ledger topic, so a checkpoint cannot be passed off for another ledger.
        partition: The ledger partition.
        seq: Records in the partition's chain when signed.
        hash: The chain hash of record ``seq``.
        time: When it was signed (ISO 8601, exactly as signed).
        key_id: The signing key.
        signature: Base64 Ed25519 signature over :meth:`signed_bytes`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    ledger: str
    partition: int = Field(ge=0)
    seq: int = Field(ge=1)
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    time: str
    key_id: str
    signature: str

    def signed_bytes(self) -> bytes:
        """What the signature covers: a context string and the JCS of every other field."""
        statement = self.model_dump(exclude={"signature"})
        return CHECKPOINT_CONTEXT + canonical(statement)

    @property
    def at(self) -> datetime | None:
        """``time`` as a datetime (``None`` when unreadable)."""
        try:
            moment = datetime.fromisoformat(self.time)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    def to_bytes(self) -> bytes:
        """The JSON wire form (one line)."""
        return self.model_dump_json().encode()

    def verify(self, trusted: PublicKeys) -> str | None:
        """``None`` when the signature is valid under a trusted key, else why not."""
        try:
            signature = unb64(self.signature)
        except ValueError:
            return "signature is not base64"
        return trusted.check(self.key_id, signature, self.signed_bytes())

    @classmethod
    def parse(cls, raw: bytes) -> Checkpoint | None:
        """Read one checkpoint; ``None`` when it is not one."""
        try:
            return cls.model_validate_json(raw)
        except (ValidationError, ValueError):
            return None


def sign_checkpoint(
    keys: SigningKeys, *, ledger: str, partition: int, seq: int, hash: str, at: datetime | None = None
) -> Checkpoint:
    """A checkpoint of ``(partition, seq, hash)`` signed with the active key."""
    unsigned = Checkpoint(
        ledger=ledger,
        partition=partition,
        seq=seq,
        hash=hash,
        time=format_time(at or datetime.now(UTC)),
        key_id=keys.active,
        signature="",
    )
    key_id, signature = keys.sign(unsigned.signed_bytes())
    return unsigned.model_copy(update={"key_id": key_id, "signature": b64(signature)})
