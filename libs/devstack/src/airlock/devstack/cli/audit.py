"""``airlock audit``: the ledger."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from airlock.devstack.cli.common import fail, kafka_settings

app = typer.Typer(help="The audit ledger.", no_args_is_help=True)


def format_timeline(timelines: list[Any]) -> list[str]:
    """Human lines for request timelines: time, stage, transition, the notable details."""
    lines = []
    for timeline in timelines:
        tenant = timeline.events[0].get("tenant", "-")
        lines.append(f"airlock id {timeline.airlock_id}  request {timeline.request_id}  tenant {tenant}")
        for event in timeline.events:
            details = event.get("details", {})
            notes = []
            for key in ("model", "policy_version", "finish_reason", "error_code"):
                if details.get(key):
                    notes.append(f"{key}={details[key]}")
            if details.get("entity_counts"):
                notes.append("masked=" + ",".join(f"{k}:{v}" for k, v in details["entity_counts"].items()))
            if details.get("usage"):
                usage = details["usage"]
                notes.append(f"tokens={usage.get('input_tokens', 0)}+{usage.get('output_tokens', 0)}")
            if event.get("kind") == "notice":
                transition = "notice"
            else:
                transition = f"{event.get('from_state') or '∅'} → {event.get('to_state')}"
            lines.append(
                f"  {event.get('at', '')[:23]}  {event.get('stage', ''):<10} {transition:<24} {' '.join(notes)}"
            )
    return lines


@app.command("replay")
def audit_replay(
    request_id: Annotated[str | None, typer.Option(help="Only this request's timeline.")] = None,
    output_format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Read the ledger from Kafka, verify the hash chains, and print request timelines."""
    from airlock.auditor.reader import read_ledger
    from airlock.auditor.replay import replay
    from airlock.core.topics import Topics

    kafka = kafka_settings()
    ledger = asyncio.run(read_ledger(kafka, Topics(kafka.topic_prefix).ledger))
    report = replay({p: [v for _, v in records] for p, records in ledger.items()}, request_id=request_id)
    timelines = list(report.timelines.values())
    if output_format == "json":
        typer.echo(
            json.dumps(
                {
                    "records": report.records,
                    "valid": report.valid,
                    "findings": [f.__dict__ for f in report.findings],
                    "requests": [
                        {"airlock_id": t.airlock_id, "request_id": t.request_id, "events": t.events} for t in timelines
                    ],
                },
                indent=2,
                default=str,
            )
        )
    else:
        for line in format_timeline(timelines):
            typer.echo(line)
        typer.echo(f"{report.valid}/{report.records} ledger records valid; {len(timelines)} request(s)")
        for finding in report.findings:
            typer.echo(f"  {finding.kind}: partition {finding.partition} seq {finding.seq}: {finding.detail}")
    if request_id and not timelines:
        fail(f"no ledger records for request {request_id}", code=1)
    if not report.ok:
        raise typer.Exit(1)
