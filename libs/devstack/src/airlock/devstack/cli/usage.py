"""``airlock usage``: each tenant's (and client's) usage against its limits, read from Kafka."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from airlock.devstack.cli.clients import FileOption, clients_path
from airlock.devstack.cli.common import fail, kafka_settings


def _cell(used: float, limit: float | None, money: bool = False) -> str:
    shown = f"${used:.4f}" if money else f"{used:g}"
    if limit is None:
        return f"{shown} / -"
    cap = f"${limit:.2f}" if money else f"{limit:g}"
    percent = f" ({100 * used / limit:.0f}%)" if limit else ""
    return f"{shown} / {cap}{percent}"


def usage(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant (and its clients).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    file: FileOption = None,
) -> None:
    """Requests this minute, tokens today and cost this month, per tenant and client, against limits.

    Usage comes from the usage topic (written by the llm-worker with each completion) and
    the admission log; limits from ingest's clients file. Days and months are UTC.
    """
    from airlock.core.topics import Topics
    from airlock.ingest.clients import ANY, ClientsFile, ClientsFileError, Limits, allows
    from airlock.ingest.feeds import quota_snapshot

    kafka = kafka_settings()
    path = clients_path(file)
    try:
        clients = ClientsFile.load(path) if path.exists() else ClientsFile()
    except ClientsFileError as error:
        fail(str(error))
    try:
        feed = asyncio.run(quota_snapshot(kafka, Topics(kafka.topic_prefix)))
    except Exception as error:  # connection problems: one clear line
        fail(f"cannot read usage from Kafka at {kafka.bootstrap}: {type(error).__name__}: {error}")
    now = datetime.now(UTC)
    book, arbiter = feed.book, feed.arbiter
    tenants = sorted((set(clients.tenants) - {ANY}) | book.names("tenant"))
    client_ids = sorted(set(clients.clients) | book.names("client"))
    if tenant is not None:
        tenants = [t for t in tenants if t == tenant] or [tenant]
        client_ids = [c for c in client_ids if c in clients.clients and allows(clients.clients[c].tenants, tenant)]

    def row(scope: Any, name: str, limits: Limits | None) -> dict[str, Any]:
        limits = limits or Limits()
        return {
            scope: name,
            # The admission log's sliding window: requests admitted in the last 60 seconds.
            "requests_this_minute": arbiter.admitted(scope, name),
            "requests_per_minute": limits.requests_per_minute,
            "in_flight": arbiter.in_flight(scope, name),
            "max_in_flight": limits.max_in_flight,
            "requests_today": book.requests_today(scope, name, now),
            "tokens_today": book.tokens_today(scope, name, now),
            "tokens_per_day": limits.tokens_per_day,
            "cost_this_month_usd": round(book.cost_this_month(scope, name, now), 6),
            "cost_per_month_usd": limits.cost_per_month_usd,
        }

    tenant_rows = [row("tenant", name, clients.tenant_limits(name)) for name in tenants]
    client_rows = [
        row("client", name, clients.clients[name].limits if name in clients.clients else None) for name in client_ids
    ]
    if as_json:
        typer.echo(json.dumps({"at": now.isoformat(), "tenants": tenant_rows, "clients": client_rows}, indent=2))
        return
    typer.echo(f"usage at {now:%Y-%m-%d %H:%M:%S} UTC  (limits from {path})")
    header = f"{'':<24} {'requests this minute':<24} {'tokens today':<28} {'cost this month':<30}"
    for title, rows, key in (("tenant", tenant_rows, "tenant"), ("client", client_rows, "client")):
        if not rows:
            continue
        typer.echo(header.replace(" " * 24, f"{title:<24}", 1))
        for item in rows:
            typer.echo(
                f"{item[key]:<24} {_cell(item['requests_this_minute'], item['requests_per_minute']):<24} "
                f"{_cell(item['tokens_today'], item['tokens_per_day']):<28} "
                f"{_cell(item['cost_this_month_usd'], item['cost_per_month_usd'], money=True):<30}"
            )
