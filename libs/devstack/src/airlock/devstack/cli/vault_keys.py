"""``airlock vault-keys``: the redactor's vault key ring — generate, rotate, list, retire.

The ring (``AIRLOCK_REDACTOR_VAULT_KEYS_FILE``, a Secret in the chart) seals each request's
placeholder map with AES-256-GCM. Its ``active`` key seals; every key in it opens. The
redactor reads the file again when it changes, so a rotation needs no restart: rotate (the
new key seals from the next reload on), and retire the old key only after the transit
topics' retention has passed, when no sealed map that needs it can still be in flight.
Key material is written to the file only (mode 0600), never printed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from airlock.devstack.cli.common import fail, read_key_ring

app = typer.Typer(help="The redactor's vault key ring: generate, rotate, list, retire.", no_args_is_help=True)

#: Key ids as they appear in sealed vaults and logs.
KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

RingFile = Annotated[Path, typer.Argument(help="The key ring file (AIRLOCK_REDACTOR_VAULT_KEYS_FILE).")]


def _valid_id(key_id: str) -> str:
    if not KEY_ID.match(key_id):
        fail(f"key id {key_id[:64]!r} must match {KEY_ID.pattern}")
    return key_id


@app.command("generate")
def vault_keys_generate(
    ring: RingFile,
    key_id: Annotated[str, typer.Option(help="Id of the first key.")] = "vault-1",
    force: Annotated[
        bool, typer.Option(help="Replace an existing ring (every sealed map becomes unreadable).")
    ] = False,
) -> None:
    """Write a new ring with one random 256-bit key."""
    from airlock.core.crypto import KeyRing
    from airlock.devstack.stack import write_secret

    if ring.exists() and not force:
        fail(f"{ring} exists; rotate it, or pass --force to replace it")
    write_secret(ring, KeyRing.generate(_valid_id(key_id)).to_json())
    typer.echo(f"wrote {ring}: active key {key_id}")


@app.command("rotate")
def vault_keys_rotate(
    ring: RingFile,
    key_id: Annotated[str, typer.Option(help="Id of the new active key.")],
) -> None:
    """Add a new active key; the old ones stay to open maps sealed before."""
    from airlock.devstack.stack import write_secret

    current = read_key_ring(ring)
    if _valid_id(key_id) in current.keys:
        fail(f"key id {key_id!r} is already in the ring")
    write_secret(ring, current.rotated(key_id).to_json())
    typer.echo(f"active key is now {key_id}; kept {', '.join(sorted(current.keys))}")


@app.command("list")
def vault_keys_list(ring: RingFile) -> None:
    """The ring's key ids, the active one marked (no key material)."""
    current = read_key_ring(ring)
    for key_id in sorted(current.keys):
        typer.echo(f"{key_id}{'  (active)' if key_id == current.active else ''}")


@app.command("retire")
def vault_keys_retire(
    ring: RingFile,
    key_id: Annotated[str, typer.Argument(help="The key to remove (not the active one).")],
) -> None:
    """Remove a key that no longer seals: maps it sealed can no longer be opened.

    Wait until the transit topics' retention has passed since the rotation.
    """
    from airlock.core.crypto import KeyRing
    from airlock.devstack.stack import write_secret

    current = read_key_ring(ring)
    if key_id not in current.keys:
        fail(f"no key {key_id[:64]!r} in the ring")
    if key_id == current.active:
        fail(f"{key_id!r} is the active key; rotate first")
    write_secret(ring, KeyRing(current.active, {k: v for k, v in current.keys.items() if k != key_id}).to_json())
    typer.echo(f"retired {key_id}; the ring holds {', '.join(sorted(k for k in current.keys if k != key_id))}")
