"""``airlock send``: one request through the running stack."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

from airlock.devstack.cli.common import fail, kafka_settings

if TYPE_CHECKING:
    from airlock.client import ClientCredentials
    from airlock.core.authenticity import Trust


def send(
    text: Annotated[str, typer.Argument(help="The user message.")],
    tenant: Annotated[str, typer.Option(help="Tenant billed.")] = "demo",
    model: Annotated[str, typer.Option(help="Logical model name.")] = "gpt-4o-mini",
    use_case: Annotated[str, typer.Option(help="Use case (selects policies).")] = "default",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the reply.")] = 60.0,
    client_id: Annotated[
        str | None,
        typer.Option(help="Sign as this client (default: the credentials' client, or the dev stack's airlock-cli)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole reply as JSON.")] = False,
) -> None:
    """Publish a signed request to the running stack, wait for the reply and print it.

    Credentials come from AIRLOCK_CLIENT_CREDENTIALS_FILE (or AIRLOCK_CLIENT_ID,
    AIRLOCK_CLIENT_KEY_ID, AIRLOCK_CLIENT_SECRET), else from the local stack's clients file;
    the mesh's public keys (to verify the reply) from AIRLOCK_CLIENT_TRUST_FILE, else the
    local stack's.
    """
    from airlock.client import AirlockClient, ReplyTimeout
    from airlock.core.access import client_principal
    from airlock.core.models import ErrorReply

    credentials = find_credentials(client_id)
    kafka = kafka_settings(client_principal(credentials.client_id))
    trust = find_trust()

    async def run() -> Any:
        async with AirlockClient(kafka, credentials=credentials, trust=trust) as client:
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
        hints = "".join(
            [
                f"  (retry after {reply.retry_after:g}s)" if reply.retry_after else "",
                f"  (original: airlock id {reply.duplicate_of})" if reply.duplicate_of else "",
            ]
        )
        typer.echo(
            f"error {reply.code} ({reply.stage}): {reply.message}  [request {reply.request_id}]{hints}", err=True
        )
    else:
        typer.echo(reply.content)
    if isinstance(reply, ErrorReply):
        raise typer.Exit(1)


def find_credentials(client_id: str | None) -> ClientCredentials:
    """The signing credentials for ``client_id``: the environment's, else the dev stack's."""
    from airlock.client import ClientCredentials, CredentialsError
    from airlock.devstack.paths import state_dir
    from airlock.devstack.stack import DEV_CLIENT_ID, clients_file_path, dev_credentials

    try:
        configured = ClientCredentials.from_env()
    except CredentialsError as error:
        fail(str(error))
    if configured is not None and client_id in (None, configured.client_id):
        return configured
    wanted = client_id or DEV_CLIENT_ID
    state = state_dir()
    if not clients_file_path(state).exists():
        fail(
            f"no credentials for client {wanted!r}: set AIRLOCK_CLIENT_CREDENTIALS_FILE, or start the "
            f"local stack (`airlock dev up`) whose clients file is {clients_file_path(state)}"
        )
    try:
        return dev_credentials(state, wanted)
    except (LookupError, ValueError) as error:
        fail(f"{error}; add the client with `airlock clients add {wanted} ...`")


def find_trust() -> Trust | None:
    """The mesh's public keys: ``None`` when the environment names them (the SDK reads them), else the dev stack's."""
    from airlock.client.sdk import TRUST_FILE_VARIABLE
    from airlock.core.authenticity import Trust
    from airlock.devstack.paths import state_dir
    from airlock.devstack.stack import mesh_keys_dir

    if os.environ.get(TRUST_FILE_VARIABLE):
        return None
    local = mesh_keys_dir(state_dir()) / "trust.json"
    if not local.exists():
        fail(
            f"cannot verify replies: set {TRUST_FILE_VARIABLE} to the mesh's trust.json (`airlock ops mesh-keys`), "
            "or start the local stack (`airlock dev up`)"
        )
    return Trust.from_json(local.read_text())
