"""``airlock clients``: manage ingest's clients file (who may sign requests, for what).

The file is a secret (it holds every client's signing keys): in Kubernetes it is the
Secret ingest mounts, so edit a local copy and apply it (``kubectl create secret generic
... --from-file=clients.yaml --dry-run=client -o yaml | kubectl apply -f -``); ingest
reloads it without a restart. New keys are shown once, when they are made; ``list``
never shows a secret.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from airlock.devstack.cli.common import fail, kafka_settings

if TYPE_CHECKING:
    from airlock.ingest.clients import ClientsFile

app = typer.Typer(help="Ingest's clients file: signing keys, grants and tenant limits.", no_args_is_help=True)

FileOption = Annotated[
    Path | None,
    typer.Option("--file", help="The clients file (default: $AIRLOCK_INGEST_CLIENTS_FILE, else the dev stack's)."),
]
CredentialsOut = Annotated[
    Path | None,
    typer.Option(help="Write the new key's credentials JSON here (mode 0600) instead of printing them."),
]


def clients_path(file: Path | None) -> Path:
    """The clients file to manage."""
    if file is not None:
        return file
    configured = os.environ.get("AIRLOCK_INGEST_CLIENTS_FILE")
    if configured:
        return Path(configured)
    from airlock.devstack.paths import state_dir
    from airlock.devstack.stack import clients_file_path

    return clients_file_path(state_dir())


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``24h``, ``7d`` or ``0``."""
    match = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if not match:
        raise typer.BadParameter(f"{text!r}: expected a duration like 30m, 24h, 7d or 0")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "": "seconds"}[match.group(2)]
    return timedelta(**{unit: int(match.group(1))})


def _load(path: Path, *, create: bool = False) -> ClientsFile:
    from airlock.ingest.clients import ClientsFile, ClientsFileError

    if create and not path.exists():
        return ClientsFile()
    try:
        return ClientsFile.load(path)
    except ClientsFileError as error:
        fail(str(error))


def _with_client(path: Path, client_id: str) -> ClientsFile:
    clients = _load(path)
    if client_id not in clients.clients:
        fail(f"no client {client_id!r} in {path}")
    return clients


def _hand_over(client_id: str, key_id: str, secret: str, out: Path | None) -> None:
    from airlock.client import ClientCredentials
    from airlock.devstack.stack import write_secret

    credentials = ClientCredentials.model_validate({"client_id": client_id, "key_id": key_id, "secret": secret})
    if out is not None:
        write_secret(out, credentials.to_json())
        typer.echo(f"credentials of {client_id} (key {key_id}) written to {out}", err=True)
        return
    typer.echo(f"new key {key_id} for {client_id}; store these credentials now, they are not shown again:", err=True)
    typer.echo(credentials.to_json())


@app.command("add")
def clients_add(
    client_id: Annotated[str, typer.Argument(help="The internal system's id.")],
    tenant: Annotated[list[str], typer.Option(help="A tenant it may bill (repeat; * = any declared).")],
    model: Annotated[list[str], typer.Option(help="A model it may use (repeat; globs allowed).")],
    use_case: Annotated[list[str] | None, typer.Option(help="A use case it may name (repeat).")] = None,
    reply_topic: Annotated[
        list[str] | None,
        typer.Option(help="Another reply topic it may name, besides its own <prefix>responses.<client> (repeat)."),
    ] = None,
    max_prompt_chars: Annotated[int, typer.Option(min=1, help="Largest prompt it may send.")] = 20_000,
    max_tokens: Annotated[int, typer.Option(min=1, help="Largest max_tokens it may ask for.")] = 1024,
    rpm: Annotated[int | None, typer.Option(min=0, help="Its own requests-per-minute limit.")] = None,
    tokens_per_day: Annotated[int | None, typer.Option(min=0, help="Its own tokens-per-day quota.")] = None,
    cost_per_month: Annotated[float | None, typer.Option(min=0, help="Its own monthly budget (USD).")] = None,
    max_in_flight: Annotated[int | None, typer.Option(min=0, help="Its own cap on requests in flight.")] = None,
    description: Annotated[str, typer.Option(help="What the system is.")] = "",
    update: Annotated[bool, typer.Option(help="Replace the grants of an existing client (keeps its keys).")] = False,
    credentials_out: CredentialsOut = None,
    file: FileOption = None,
) -> None:
    """Register a client with its grants and a first key (or, with --update, change its grants)."""
    from airlock.ingest.clients import ClientPolicy, Limits, new_key

    path = clients_path(file)
    clients = _load(path, create=True)
    existing = clients.clients.get(client_id)
    if existing is not None and not update:
        fail(f"client {client_id!r} exists; use --update to change its grants or `rotate` for a new key")
    if existing is None and update:
        fail(f"client {client_id!r} does not exist")
    try:
        policy = ClientPolicy(
            keys=existing.keys if existing else {},
            tenants=tenant,
            models=model,
            use_cases=use_case or ["default"],
            reply_topics=reply_topic or [],
            max_prompt_chars=max_prompt_chars,
            max_tokens=max_tokens,
            limits=Limits(
                requests_per_minute=rpm,
                tokens_per_day=tokens_per_day,
                cost_per_month_usd=cost_per_month,
                max_in_flight=max_in_flight,
            ),
            description=description,
        )
    except ValueError as error:
        fail(str(error))
    key_id = secret = None
    if existing is None:
        key_id, key = new_key(client_id)
        policy = policy.model_copy(update={"keys": {key_id: key}})
        secret = key.secret.get_secret_value()
    clients = clients.with_client(client_id, policy)
    clients.save(path)
    undeclared = [t for t in tenant if t != "*" and clients.tenant_limits(t) is None]
    if undeclared:
        typer.echo(f"warning: tenant(s) {', '.join(undeclared)} not declared: `airlock clients tenant NAME`", err=True)
    typer.echo(f"{'updated' if existing else 'added'} client {client_id} in {path}", err=True)
    if key_id and secret:
        _hand_over(client_id, key_id, secret, credentials_out)


@app.command("rotate")
def clients_rotate(
    client_id: Annotated[str, typer.Argument(help="The client whose key to rotate.")],
    grace: Annotated[str, typer.Option(help="How long older keys keep working (e.g. 24h, 7d, 0).")] = "24h",
    credentials_out: CredentialsOut = None,
    file: FileOption = None,
) -> None:
    """Give a client a new key; its older keys expire after --grace (rotation without downtime)."""
    path = clients_path(file)
    clients = _with_client(path, client_id)
    rotated, key_id = clients.rotated(client_id, grace=parse_duration(grace))
    rotated.save(path)
    secret = rotated.clients[client_id].keys[key_id].secret.get_secret_value()
    typer.echo(f"rotated {client_id}: older keys valid for {grace} more", err=True)
    _hand_over(client_id, key_id, secret, credentials_out)


@app.command("prune")
def clients_prune(
    dry_run: Annotated[bool, typer.Option(help="Say what would be removed; change nothing.")] = False,
    file: FileOption = None,
) -> None:
    """Remove the keys whose rotation grace is over (they no longer verify anything)."""
    path = clients_path(file)
    pruned, removed = _load(path).pruned()
    for client_id, key_id in removed:
        typer.echo(f"{'would remove' if dry_run else 'removed'} expired key {key_id} of {client_id}")
    if removed and not dry_run:
        pruned.save(path)
    typer.echo(f"{len(removed)} expired key(s){' (dry run)' if dry_run else ''}", err=True)


@app.command("list")
def clients_list(file: FileOption = None) -> None:
    """Tenants, clients, grants and key ids with their validity (never a secret)."""
    path = clients_path(file)
    clients = _load(path)
    for line in clients.describe():
        typer.echo(line)


@app.command("tenant")
def clients_tenant(
    tenant: Annotated[str, typer.Argument(help="The tenant (* = every tenant not listed).")],
    rpm: Annotated[int | None, typer.Option(min=0, help="Requests in any 60 seconds.")] = None,
    tokens_per_day: Annotated[int | None, typer.Option(min=0, help="Tokens per day (UTC).")] = None,
    cost_per_month: Annotated[float | None, typer.Option(min=0, help="Budget per month (USD, UTC months).")] = None,
    max_in_flight: Annotated[int | None, typer.Option(min=0, help="Requests in flight at once.")] = None,
    file: FileOption = None,
) -> None:
    """Declare a tenant, or replace its limits (a limit left out is not enforced)."""
    from airlock.ingest.clients import Limits, describe_limits

    path = clients_path(file)
    clients = _load(path, create=True)
    limits = Limits(
        requests_per_minute=rpm,
        tokens_per_day=tokens_per_day,
        cost_per_month_usd=cost_per_month,
        max_in_flight=max_in_flight,
    )
    clients.with_tenant(tenant, limits).save(path)
    typer.echo(f"tenant {tenant}: {describe_limits(limits)}")


@app.command("remove")
def clients_remove(
    client_id: Annotated[str, typer.Argument(help="The client to remove (its keys stop working).")],
    file: FileOption = None,
) -> None:
    """Remove a client and all its keys."""
    path = clients_path(file)
    clients = _with_client(path, client_id)
    clients.without_client(client_id).save(path)
    typer.echo(f"removed client {client_id}")


@app.command("provision")
def clients_provision(
    client_id: Annotated[str, typer.Argument(help="The client to give a reply topic, a Kafka user and ACLs.")],
    password_out: Annotated[
        Path | None, typer.Option(help="Write the new Kafka password here (mode 0600) instead of printing it.")
    ] = None,
) -> None:
    """Create a client's reply topic, its Kafka principal and its ACLs (needs the admin's Kafka login).

    The client may then write the request topic and read its own reply topic, nothing else.
    Beside the local stack the password is kept in its state (``airlock send`` finds it);
    elsewhere a new one is made and shown once. With Strimzi, apply
    ``airlock ops acls --format strimzi --client ID`` instead.
    """
    import secrets

    from airlock.core import access
    from airlock.core.admin import AccessError, provision_blocking
    from airlock.core.settings import TopicSettings, load
    from airlock.core.topics import Topics
    from airlock.devstack.kafka import LocalKafka
    from airlock.devstack.paths import state_dir
    from airlock.devstack.stack import local_principal_settings, write_secret

    kafka = kafka_settings()
    topics = Topics(kafka.topic_prefix)
    principal = access.client_principal(client_id)
    local = local_principal_settings(kafka) is not None
    broker = LocalKafka(state_dir(create=False) / "kafka")
    password = broker.password(principal) if local else secrets.token_urlsafe(24)
    try:
        provision_blocking(
            kafka,
            [topics.reply_spec(client_id, load(TopicSettings))],
            users={principal: password},
            acls=access.client_acls(client_id, topics),
        )
    except AccessError as error:
        fail(str(error))
    typer.echo(f"{client_id}: Kafka user {principal}, reply topic {topics.reply_topic(client_id)}", err=True)
    if local:
        return
    if password_out is not None:
        write_secret(password_out, password)
        typer.echo(f"Kafka password of {principal} written to {password_out}", err=True)
    else:
        typer.echo(f"Kafka password of {principal} (shown once): {password}")
