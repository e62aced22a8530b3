"""The ``airlock`` command line.

Every command that talks to Kafka honours ``AIRLOCK_KAFKA_BOOTSTRAP`` (default
``127.0.0.1:9092``) and ``AIRLOCK_KAFKA_TOPIC_PREFIX``. Each command group lives in its own
module here and is registered below.
"""

from __future__ import annotations

import typer

from airlock.devstack.cli import audit, bench, clients, dev, dlq, ops, redact, send, topics, usage, vault_keys

app = typer.Typer(
    help="Airlock: a Kafka-native gateway to the OpenAI API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(dev.app, name="dev")
app.add_typer(topics.app, name="topics")
app.add_typer(audit.app, name="audit")
app.command("send")(send.send)
app.command("redact")(redact.redact)
app.command("bench")(bench.bench)
app.add_typer(clients.app, name="clients")
app.command("usage")(usage.usage)
app.add_typer(ops.app, name="ops")
app.add_typer(vault_keys.app, name="vault-keys")
app.add_typer(dlq.app, name="dlq")


def main() -> None:
    """Console entry point."""
    app()
