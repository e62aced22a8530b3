"""``airlock topics``: provisioning."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer

from airlock.core.settings import TopicSettings, load
from airlock.devstack.cli.common import fail, kafka_settings

app = typer.Typer(help="Topic provisioning.", no_args_is_help=True)


@app.command("provision")
def topics_provision(
    client: Annotated[list[str] | None, typer.Option(help="Also create this client's reply topic (repeat).")] = None,
    clients_file: Annotated[
        Path | None,
        typer.Option(help="Also create each client's reply topic (default: $AIRLOCK_INGEST_CLIENTS_FILE, if set)."),
    ] = None,
) -> None:
    """Create missing topics and grow partitions (idempotent); AIRLOCK_TOPICS_* set counts and retention."""
    from airlock.core.admin import provision
    from airlock.core.topics import Topics

    kafka = kafka_settings()
    settings = load(TopicSettings)
    topics = Topics(kafka.topic_prefix)
    specs = topics.specs(settings)
    clients_file = clients_file or (Path(v) if (v := os.environ.get("AIRLOCK_INGEST_CLIENTS_FILE")) else None)
    if clients_file is not None:
        from airlock.ingest.clients import ClientsFile

        try:
            clients = ClientsFile.load(clients_file).clients
        except (OSError, ValueError) as error:
            fail(f"cannot read the clients file {clients_file}: {error}")
        specs += [topics.reply_spec(client_id, settings) for client_id in sorted(clients)]
    specs += [topics.reply_spec(client_id, settings) for client_id in client or []]
    created = asyncio.run(provision(kafka, specs))
    typer.echo(f"created {len(created)} topic(s): {', '.join(created) or '-'}")
