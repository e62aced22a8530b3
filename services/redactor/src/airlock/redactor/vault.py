"""Sealing the placeholder map into the envelope, and opening it on the way back.

The map is encrypted with AES-256-GCM; the associated data binds it to its request — the
Airlock id, the client, the tenant, the caller's request id and the reply topic — so a
sealed map copied into another envelope (another reply topic, another client) does not open:
restoring cannot be turned into decrypting someone else's values.
"""

from __future__ import annotations

import json

from airlock.core.crypto import KeyRing, seal, unseal
from airlock.core.models import Envelope, SealedVault

_BINDING = b"airlock-vault/v2\x00"


def vault_binding(envelope: Envelope) -> bytes:
    """The associated data of ``envelope``'s map: who asked, for what, and where it goes back."""
    request = envelope.request
    fields = [envelope.airlock_id, request.client_id, request.tenant, request.request_id, request.reply_to]
    return _BINDING + json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()


def seal_map(ring: KeyRing, binding: bytes, by_placeholder: dict[str, str]) -> SealedVault:
    """Encrypt ``placeholder → value`` with the ring's active key, bound to ``binding``."""
    plaintext = json.dumps(by_placeholder, ensure_ascii=False, sort_keys=True).encode()
    key_id, nonce, ciphertext = seal(ring, plaintext, binding)
    return SealedVault(key_id=key_id, nonce=nonce, ciphertext=ciphertext)


def open_map(ring: KeyRing, binding: bytes, vault: SealedVault) -> dict[str, str]:
    """Decrypt a sealed map; fails if it was sealed for another request or tampered with."""
    plaintext = unseal(ring, vault.key_id, vault.nonce, vault.ciphertext, binding)
    mapping = json.loads(plaintext)
    return {str(k): str(v) for k, v in mapping.items()}
