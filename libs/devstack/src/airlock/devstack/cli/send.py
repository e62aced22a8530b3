"""``airlock send``: one request through the running stack."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from airlock.devstack.cli.common import fail, kafka_settings


def send(
    text: Annotated[str, typer.Argument(help="The user message.")],
    tenant: Annotated[str, typer.Option(help="Tenant billed.")] = "demo",
    model: Annotated[str, typer.Option(help="Logical model name.")] = "gpt-4o-mini",
    use_case: Annotated[str, typer.Option(help="Use case (selects policies).")] = "default",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the reply.")] = 60.0,
    client_id: Annotated[str, typer.Option(help="This client's id.")] = "airlock-cli",
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole reply as JSON.")] = False,
) -> None:
    """Publish a request to the running stack, wait for the reply and print it."""
    from airlock.client import AirlockClient, ReplyTimeout
    from airlock.core.models import ErrorReply

    kafka = kafka_settings()

    async def run() -> Any:
        async with AirlockClient(kafka, client_id) as client:
            request = client.build(text, tenant=tenant, model=model, use_case=use_case)
            return await client.ask(request, timeout=timeout)

    try:
        reply = asyncio.run(run())
    except ReplyTimeout as error:
        fail(str(error), code=3)
    except Exception as error:  # connection problems: one clear line
        fail(f"cannot reach Kafka at {kafka.bootstrap}: {type(error).__name__}: {error}")
    if as_json:
        typer.echo(reply.model_dump_json(indent=2))
    elif isinstance(reply, ErrorReply):
        typer.echo(f"error {reply.code} ({reply.stage}): {reply.message}  [request {reply.request_id}]", err=True)
    else:
        typer.echo(reply.content)
    if isinstance(reply, ErrorReply):
        raise typer.Exit(1)
