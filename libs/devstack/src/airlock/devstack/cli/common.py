"""Helpers shared by the ``airlock`` commands."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from airlock.core.settings import KafkaSettings, SettingsError, load

if TYPE_CHECKING:
    from airlock.core.crypto import KeyRing


def kafka_settings(principal: str | None = None) -> KafkaSettings:
    """Kafka settings from ``AIRLOCK_KAFKA_*``, or a one-line error and exit 2.

    Without a SASL user in the environment, a command run beside the local stack (``make
    run``) logs in as that stack's ``principal`` (default: its admin), whose password the
    stack keeps in its state directory; elsewhere the settings are the environment's alone.
    """
    try:
        settings = load(KafkaSettings)
    except SettingsError as error:
        fail(str(error))
    if settings.sasl_username:
        return settings
    from airlock.devstack.stack import local_principal_settings

    return local_principal_settings(settings, principal) or settings


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def read_key_ring(path: Path) -> KeyRing:
    """The key ring in ``path``, or a one-line error (never key material) and exit 2."""
    from airlock.core.crypto import KeyRing, KeyRingError

    try:
        return KeyRing.from_json(path.read_text())
    except OSError as error:
        fail(f"cannot read {path}: {error.strerror}")
    except KeyRingError as error:
        fail(f"{path}: {error}")
