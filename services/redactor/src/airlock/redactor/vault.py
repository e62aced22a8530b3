"""Sealing the placeholder map into the envelope, and opening it on the way back."""

from __future__ import annotations

import json

from airlock.core.crypto import KeyRing, seal, unseal
from airlock.core.models import SealedVault


def seal_map(ring: KeyRing, airlock_id: str, by_placeholder: dict[str, str]) -> SealedVault:
    """Encrypt ``placeholder → value`` with the ring's active key, bound to ``airlock_id``."""
    plaintext = json.dumps(by_placeholder, ensure_ascii=False, sort_keys=True).encode()
    key_id, nonce, ciphertext = seal(ring, plaintext, airlock_id.encode())
    return SealedVault(key_id=key_id, nonce=nonce, ciphertext=ciphertext)


def open_map(ring: KeyRing, airlock_id: str, vault: SealedVault) -> dict[str, str]:
    """Decrypt a sealed map; fails if it was sealed for another request or tampered with."""
    plaintext = unseal(ring, vault.key_id, vault.nonce, vault.ciphertext, airlock_id.encode())
    mapping = json.loads(plaintext)
    return {str(k): str(v) for k, v in mapping.items()}
