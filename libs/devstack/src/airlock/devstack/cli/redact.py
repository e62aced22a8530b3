"""``airlock redact``: what a redaction policy makes of some text (a tool for policy authors)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from airlock.core.settings import SettingsError, load
from airlock.devstack.cli.common import fail


def redact(
    policy_file: Annotated[
        Path | None,
        typer.Option("--policy", help="Apply this policy file (default: the policy the redactor would select)."),
    ] = None,
    jsonl: Annotated[
        bool, typer.Option("--jsonl", help='Each input line is {"text": ...}; one JSON result per line.')
    ] = False,
    explain: Annotated[
        bool, typer.Option("--explain", help="Add the recognizer and score behind each entity.")
    ] = False,
    tenant: Annotated[str, typer.Option(help="Select the policy as for this tenant.")] = "*",
    use_case: Annotated[str, typer.Option(help="Select the policy as for this use case.")] = "*",
) -> None:
    """Read text on stdin and print what the redactor makes of it, as JSON.

    The output is {"policy", "redacted", "entities": [{type, start, end, placeholder}]};
    a text the policy blocks gives {"policy", "redacted": null, "blocked": [types]}.
    """
    from airlock.redactor.policy import PolicyError, PolicySet, load_policy
    from airlock.redactor.recognizers import UnsupportedEntity
    from airlock.redactor.redaction import build_redactor
    from airlock.redactor.settings import RedactorSettings

    try:
        settings = load(RedactorSettings)
        chosen = load_policy(policy_file) if policy_file else None
        policies = PolicySet.load(files=[policy_file]) if policy_file else PolicySet.load(settings.policy_dir)
        redactor = build_redactor(settings, policies)
    except (PolicyError, UnsupportedEntity, SettingsError) as error:
        fail(str(error))
    policy = chosen or redactor.policy_for(tenant, use_case)

    def result(text: str) -> dict[str, Any]:
        outcome = redactor.redact([text], policy)
        if outcome.blocked:
            return {"policy": policy.label, "redacted": None, "blocked": list(outcome.blocked)}
        entities = outcome.explain(0)
        if not explain:
            entities = [{key: e[key] for key in ("type", "start", "end", "placeholder")} for e in entities]
        return {"policy": policy.label, "redacted": outcome.texts[0], "entities": entities}

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
