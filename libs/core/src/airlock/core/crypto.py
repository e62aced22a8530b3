"""Key rings and the two primitives Airlock uses: AES-GCM sealing and Ed25519 signatures.

Key material is only ever read from a file or an environment variable (a Kubernetes Secret
in the chart) and never logged: key rings print as their key ids.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("airlock.crypto")


class KeyRingError(ValueError):
    """A key ring is missing, malformed, or lacks the requested key."""


def b64(data: bytes) -> str:
    """Standard base64 text of ``data``."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """Bytes from standard base64 ``text``."""
    return base64.b64decode(text.encode("ascii"), validate=True)


@dataclass(frozen=True, repr=False)
class KeyRing:
    """Named symmetric keys; ``active`` encrypts, all of them decrypt (rotation).

    The JSON form is ``{"active": "k2", "keys": {"k1": "<base64>", "k2": "<base64>"}}``.
    """

    active: str
    keys: dict[str, bytes]

    def __repr__(self) -> str:
        return f"KeyRing(active={self.active!r}, key_ids={sorted(self.keys)!r})"

    @classmethod
    def from_json(cls, text: str) -> KeyRing:
        """Parse the JSON form; raises :class:`KeyRingError` with no key material in it."""
        try:
            raw = json.loads(text)
            keys = {str(k): unb64(v) for k, v in raw["keys"].items()}
            active = str(raw["active"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise KeyRingError("key ring is not valid JSON of the form {active, keys}") from None
        if active not in keys:
            raise KeyRingError(f"active key {active!r} is not in the key ring")
        for key_id, key in keys.items():
            if len(key) != 32:
                raise KeyRingError(f"key {key_id!r} must be 32 bytes")
        return cls(active, keys)

    @classmethod
    def generate(cls, key_id: str = "k1") -> KeyRing:
        """A fresh ring with one random 256-bit key."""
        return cls(key_id, {key_id: AESGCM.generate_key(bit_length=256)})

    def to_json(self) -> str:
        """The JSON form (contains key material: write it only to a secret store)."""
        return json.dumps({"active": self.active, "keys": {k: b64(v) for k, v in self.keys.items()}})

    def rotated(self, key_id: str) -> KeyRing:
        """A ring with a new active key, keeping the old ones for decryption."""
        fresh = AESGCM.generate_key(bit_length=256)
        return KeyRing(key_id, {**self.keys, key_id: fresh})


def load_key_ring(value: str | None, path: Path | None, *, variable: str) -> KeyRing:
    """Read a key ring from an inline secret or a file.

    Args:
        value: The ring's JSON, from an environment variable.
        path: A file holding the ring's JSON (a mounted Secret).
        variable: The variable's name, for the error message.
    """
    if value:
        return KeyRing.from_json(value)
    if path is not None:
        try:
            return KeyRing.from_json(path.read_text())
        except OSError as error:
            raise KeyRingError(f"{variable}_FILE: cannot read {path}: {error.strerror}") from None
    raise KeyRingError(f"{variable} or {variable}_FILE must be set")


def seal(ring: KeyRing, plaintext: bytes, associated: bytes) -> tuple[str, str, str]:
    """Encrypt with the active key. Returns ``(key_id, nonce_b64, ciphertext_b64)``."""
    nonce = os.urandom(12)
    ciphertext = AESGCM(ring.keys[ring.active]).encrypt(nonce, plaintext, associated)
    return ring.active, b64(nonce), b64(ciphertext)


def unseal(ring: KeyRing, key_id: str, nonce: str, ciphertext: str, associated: bytes) -> bytes:
    """Decrypt; raises :class:`KeyRingError` for an unknown key and ``InvalidTag`` on tampering."""
    key = ring.keys.get(key_id)
    if key is None:
        raise KeyRingError(f"unknown key id {key_id!r}")
    return AESGCM(key).decrypt(unb64(nonce), unb64(ciphertext), associated)


class WatchedKeyRing:
    """A key ring read from a file, and read again when the file changes (a rotated Secret).

    A change that does not parse is refused: the ring in force stays, :attr:`refused` says
    why (readiness shows it), and the next good version is taken. Key material is never
    logged; only key ids are.

    Args:
        path: The file (a mounted Secret: Kubernetes replaces it in place).
        variable: The setting's name, for messages.
    """

    def __init__(self, path: Path, *, variable: str) -> None:
        self._path = path
        self._variable = variable
        self._text = self._read()
        self.current = KeyRing.from_json(self._text)
        #: Why the newest version of the file is not in force (``None``: it is).
        self.refused: str | None = None

    def _read(self) -> str:
        try:
            return self._path.read_text()
        except OSError as error:
            raise KeyRingError(f"{self._variable}_FILE: cannot read {self._path}: {error.strerror}") from None

    def reload(self) -> bool:
        """Read the file again; whether a new ring came into force."""
        try:
            text = self._read()
            if text == self._text:
                return False
            ring = KeyRing.from_json(text)
        except KeyRingError as error:
            if self.refused != str(error):
                log.error("key ring change refused (%s); the previous ring stays in force", error)
            self.refused = str(error)
            return False
        self._text, self.current, self.refused = text, ring, None
        log.info("key ring reloaded from %s: active %s, keys %s", self._path, ring.active, ", ".join(sorted(ring.keys)))
        return True

    async def follow(self, interval_s: float) -> None:
        """Reload every ``interval_s`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            self.reload()


def current_ring(source: KeyRing | WatchedKeyRing) -> KeyRing:
    """The ring in force: a fixed ring itself, or a watched file's latest good version."""
    return source.current if isinstance(source, WatchedKeyRing) else source
