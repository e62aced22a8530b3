"""``airlock dlq read``: what the stages gave up on, from the dead-letter topic.

Dead letters are sealed (:mod:`airlock.core.deadletters`): without keys this prints what
operators triage by — stage, source, code, reason, Airlock and request ids. With the
operators' ring (``--keys dead-letters.json``) it opens the letters too; their bodies are
often prompts in clear, so open only the ones you need (``--airlock-id``).
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from airlock.devstack.cli.common import fail, kafka_settings, read_key_ring

if TYPE_CHECKING:
    from aiokafka import ConsumerRecord

    from airlock.core.deadletters import DeadLetterOpener

app = typer.Typer(help="Read the dead-letter topic.", no_args_is_help=True)


async def _dead_letters(limit: int) -> list[ConsumerRecord]:
    """The newest ``limit`` committed records of each DLQ partition."""
    from aiokafka import TopicPartition

    from airlock.core.admin import partition_counts
    from airlock.core.reading import committed_reader
    from airlock.core.topics import Topics

    kafka = kafka_settings()
    topic = Topics(kafka.topic_prefix).dlq
    count = (await partition_counts(kafka, [topic])).get(topic, 0)
    if not count:
        fail(f"{topic} does not exist (or this principal may not read it)")
    consumer = committed_reader(kafka)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        records: list[ConsumerRecord] = []
        for tp in tps:
            consumer.seek(tp, max(starts[tp], ends[tp] - limit))
            while await consumer.position(tp) < ends[tp]:
                records.extend((await consumer.getmany(tp, timeout_ms=1000)).get(tp, []))
        return sorted(records, key=lambda r: r.timestamp)
    finally:
        await consumer.stop()


def _entry(record: ConsumerRecord, opener: DeadLetterOpener | None) -> dict[str, Any]:
    from airlock.core import headers as h
    from airlock.core.deadletters import DeadLetterError

    clear = {name: (value or b"").decode("utf-8", "replace") for name, value in record.headers or ()}
    entry: dict[str, Any] = {
        "at_ms": record.timestamp,
        "stage": clear.get(h.DLQ_STAGE),
        "source": clear.get(h.DLQ_SOURCE),
        "code": clear.get(h.ERROR_CODE),
        "reason": clear.get(h.DLQ_REASON),
        "airlock_id": clear.get(h.AIRLOCK_ID),
        "request_id": clear.get(h.REQUEST_ID),
    }
    if opener is not None:
        try:
            letter = opener.open(record.value or b"", record.headers or ())
        except DeadLetterError as error:
            entry["body_error"] = str(error)
        else:
            try:
                entry["body"] = letter.value.decode("utf-8")
            except UnicodeDecodeError:
                entry["body_base64"] = base64.b64encode(letter.value).decode("ascii")
            entry["headers"] = {name: value.decode("utf-8", "replace") for name, value in letter.headers}
    return entry


@app.command("read")
def dlq_read(
    keys: Annotated[
        Path | None, typer.Option(help="The operators' dead-letter ring (dead-letters.json): open the letters.")
    ] = None,
    airlock_id: Annotated[str | None, typer.Option(help="Only this request's letters.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many newest letters per partition.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per letter.")] = False,
) -> None:
    """The newest dead letters: reason and ids; with --keys, the sealed original too."""
    from airlock.core.deadletters import DeadLetterOpener

    opener = DeadLetterOpener(read_key_ring(keys)) if keys is not None else None
    entries = [
        _entry(record, opener)
        for record in asyncio.run(_dead_letters(limit))
        if airlock_id is None or _header(record, "airlock-id") == airlock_id
    ]
    for entry in entries:
        if as_json:
            typer.echo(json.dumps(entry, sort_keys=True))
            continue
        typer.echo(
            f"{entry['stage']} {entry['code']} {entry['source']} airlock {entry['airlock_id']} "
            f"request {entry['request_id']}: {entry['reason']}"
        )
        for field in ("body", "body_base64", "body_error"):
            if field in entry:
                typer.echo(f"    {field}: {entry[field]}")
    if not entries:
        typer.echo("no dead letters", err=True)


def _header(record: ConsumerRecord, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return (value or b"").decode("utf-8", "replace")
    return None
