"""``airlock topics``: provisioning."""

from __future__ import annotations

import asyncio

import typer

from airlock.core.settings import TopicSettings, load
from airlock.devstack.cli.common import kafka_settings

app = typer.Typer(help="Topic provisioning.", no_args_is_help=True)


@app.command("provision")
def topics_provision() -> None:
    """Create missing topics and grow partitions (idempotent); AIRLOCK_TOPICS_* set counts and retention."""
    from airlock.core.admin import provision
    from airlock.core.topics import Topics

    kafka = kafka_settings()
    settings = load(TopicSettings)
    created = asyncio.run(provision(kafka, Topics(kafka.topic_prefix).specs(settings)))
    typer.echo(f"created {len(created)} topic(s): {', '.join(created) or '-'}")
