"""Helpers shared by the ``airlock`` commands."""

from __future__ import annotations

from typing import NoReturn

import typer

from airlock.core.settings import KafkaSettings, SettingsError, load


def kafka_settings() -> KafkaSettings:
    """Kafka settings from ``AIRLOCK_KAFKA_*``, or a one-line error and exit 2."""
    try:
        return load(KafkaSettings)
    except SettingsError as error:
        fail(str(error))


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
