"""``airlock redact``: what the redactor makes of some text."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from airlock.core.settings import load
from airlock.devstack.cli.common import fail


def redact(
    jsonl: Annotated[
        bool, typer.Option("--jsonl", help='Each input line is {"text": ...}; one JSON result per line.')
    ] = False,
) -> None:
    """Read text on stdin and print what the redactor makes of it, as JSON."""
    from airlock.redactor.redaction import build_redactor
    from airlock.redactor.settings import RedactorSettings

    redactor = build_redactor(load(RedactorSettings))

    def result(text: str) -> dict[str, Any]:
        outcome = redactor.redact([text])
        return {
            "redacted": outcome.texts[0],
            "entities": [
                {"type": s.entity_type, "start": s.start, "end": s.end, "placeholder": s.placeholder}
                for s in outcome.spans[0]
            ],
        }

    if not jsonl:
        typer.echo(json.dumps(result(sys.stdin.read()), ensure_ascii=False))
        return
    for number, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"]
            if not isinstance(text, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            fail(f'line {number}: expected a JSON object {{"text": "..."}}')
        typer.echo(json.dumps(result(text), ensure_ascii=False))
