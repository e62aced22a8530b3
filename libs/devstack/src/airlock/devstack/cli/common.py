"""Helpers shared by the ``airlock`` commands."""

from __future__ import annotations

from typing import NoReturn

import typer

from airlock.core.settings import KafkaSettings, SettingsError, load


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
