"""Sealed dead letters: what a stage could not process, kept for operators and nobody else.

A dead letter is the record a stage gave up on — often a refused request, with its prompt in
clear (cards, names, whatever the caller sent). On the DLQ topic only its metadata stays
readable (the stage, the source position, the error code and reason, the Airlock and request
ids); the original key, value and headers are sealed to the operators' dead-letter key:
X25519 with an ephemeral key per letter, HKDF-SHA256, AES-256-GCM, the clear metadata bound
as associated data so a sealed body cannot be moved under another letter's reason.

Stages hold only the public key (in the mesh's trust file, which every stage mounts), so a
stage that is broken into cannot read the DLQ even if it could fetch it; the private ring
(``dead-letters.json`` from ``airlock ops mesh-keys``) stays with the operators, and
``airlock dlq read --keys`` opens letters with it.

Wire form of a sealed value::

    b"ADL1" | len(key id) (1 byte) | key id | ephemeral public key (32) | nonce (12) | ciphertext

and of its plaintext: ``len(meta) (4 bytes, big-endian) | meta JSON | original value``, where
``meta`` holds the original key and headers (base64).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from airlock.core import headers as h
from airlock.core.crypto import KeyRing, KeyRingError, b64, unb64

MAGIC = b"ADL1"
_INFO = b"airlock-dead-letter/v1"

#: Headers that stay readable on a sealed letter: what operators triage by. Everything else
#: the original record carried (its own headers may hold anything a caller put there) is sealed.
CLEAR_HEADERS = (h.DLQ_STAGE, h.DLQ_SOURCE, h.ERROR_CODE, h.DLQ_REASON, h.AIRLOCK_ID, h.REQUEST_ID)

#: The clear headers the seal binds (a letter's body cannot be moved under another's metadata).
_BOUND = (h.DLQ_STAGE, h.DLQ_SOURCE, h.ERROR_CODE, h.AIRLOCK_ID)


class DeadLetterError(ValueError):
    """A dead letter that is not sealed, sealed to another key, or altered."""


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter's original record, opened."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def public_key(seed: bytes) -> bytes:
    """The raw X25519 public key of a 32-byte private key."""
    return X25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _derive(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO + ephemeral + recipient).derive(shared)


def _bound(clear: Mapping[str, bytes]) -> bytes:
    return b"\x00".join([_INFO, *(clear.get(name, b"") for name in _BOUND)])


@dataclass(frozen=True)
class DeadLetterSeal:
    """Seals letters to the operators' public key (all a stage holds).

    Attributes:
        key_id: Which key of the operators' ring the letters are sealed to.
        recipient: Its raw X25519 public key.
    """

    key_id: str
    recipient: bytes

    def seal(
        self, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> tuple[bytes, list[tuple[str, bytes]]]:
        """The sealed value and the clear headers of the letter for ``key``/``value``/``headers``."""
        clear = [(name, v) for name, v in headers if name in CLEAR_HEADERS]
        meta = json.dumps(
            {"key": b64(key) if key is not None else None, "headers": [[name, b64(v)] for name, v in headers]},
            separators=(",", ":"),
        ).encode()
        plaintext = len(meta).to_bytes(4, "big") + meta + value
        ephemeral = X25519PrivateKey.generate()
        mine = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        secret = _derive(ephemeral.exchange(X25519PublicKey.from_public_bytes(self.recipient)), mine, self.recipient)
        nonce = os.urandom(12)
        sealed = AESGCM(secret).encrypt(nonce, plaintext, _bound(dict(clear)))
        kid = self.key_id.encode()
        return MAGIC + bytes([len(kid)]) + kid + mine + nonce + sealed, clear


class DeadLetterOpener:
    """Opens sealed letters with the operators' private ring (every key in it opens).

    Args:
        ring: The ring of 32-byte X25519 private keys (``dead-letters.json``).
    """

    def __init__(self, ring: KeyRing) -> None:
        self._keys = {kid: X25519PrivateKey.from_private_bytes(seed) for kid, seed in ring.keys.items()}

    def __repr__(self) -> str:
        return f"DeadLetterOpener(key_ids={sorted(self._keys)!r})"

    def open(self, value: bytes, headers: Iterable[tuple[str, bytes | None]]) -> DeadLetter:
        """The original record of a sealed letter.

        Raises:
            DeadLetterError: Not a sealed letter, sealed to a key not in the ring, or altered.
        """
        if not value.startswith(MAGIC) or len(value) < len(MAGIC) + 1:
            raise DeadLetterError("not a sealed dead letter")
        at = len(MAGIC)
        length = value[at]
        kid = value[at + 1 : at + 1 + length].decode("utf-8", "replace")
        at += 1 + length
        ephemeral, nonce, sealed = value[at : at + 32], value[at + 32 : at + 44], value[at + 44 :]
        private = self._keys.get(kid)
        if private is None:
            raise DeadLetterError(f"sealed to key {kid[:64]!r}, which is not in the ring")
        if len(ephemeral) != 32 or len(nonce) != 12:
            raise DeadLetterError("truncated dead letter")
        recipient = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        secret = _derive(private.exchange(X25519PublicKey.from_public_bytes(ephemeral)), ephemeral, recipient)
        clear = {name: v or b"" for name, v in headers}
        try:
            plaintext = AESGCM(secret).decrypt(nonce, sealed, _bound(clear))
            size = int.from_bytes(plaintext[:4], "big")
            meta = json.loads(plaintext[4 : 4 + size])
            key = unb64(meta["key"]) if meta["key"] is not None else None
            original = [(str(name), unb64(v)) for name, v in meta["headers"]]
        except InvalidTag:
            raise DeadLetterError("the dead letter was altered or its metadata changed") from None
        except (ValueError, KeyError, TypeError):
            raise DeadLetterError("the dead letter's sealed part is malformed") from None
        return DeadLetter(key=key, value=plaintext[4 + size :], headers=original)


def dead_letter_seal(public: Mapping[str, str], active: str | None) -> DeadLetterSeal:
    """The seal for the trust file's dead-letter keys (``key id → base64 public key``).

    Raises:
        KeyRingError: No dead-letter key, or the active one is missing.
    """
    if not public or active is None or active not in public:
        raise KeyRingError("the mesh trust file has no dead-letter key: run `airlock ops mesh-keys` again")
    return DeadLetterSeal(active, unb64(public[active]))
