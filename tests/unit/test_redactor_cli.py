"""``airlock redact``: what a policy does to text, for policy authors (real Presidio, no network)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from airlock.devstack.cli import app

POLICY = """
schema_version: 1
name: tickets
version: "5"
applies_to: [{tenant: acme, use_case: tickets}]
entities: {PERSON: mask, EMAIL_ADDRESS: redact, US_SSN: block, TICKET_OWNER_ID: mask}
recognizers:
  - name: owner_id
    entity: TICKET_OWNER_ID
    patterns: [{regex: 'OWN-\\d{5}', score: 0.9}]
"""


def run(*args: str, stdin: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["redact", *args], input=stdin)
    return result.exit_code, result.output


def test_policy_file_is_applied_and_explain_names_recognizer_and_score(tmp_path: Path) -> None:
    policy = tmp_path / "tickets.yaml"
    policy.write_text(POLICY)

    code, output = run("--policy", str(policy), "--explain", stdin="Jane Roe (OWN-12345) mailed jane@example.com")

    assert code == 0, output
    result = json.loads(output)
    assert result["policy"] == "tickets@5"
    assert result["redacted"] == "<PERSON_1> (<TICKET_OWNER_ID_1>) mailed <EMAIL_ADDRESS_REDACTED>"
    by_type = {e["type"]: e for e in result["entities"]}
    assert by_type["TICKET_OWNER_ID"]["recognizer"] == "owner_id" and by_type["TICKET_OWNER_ID"]["score"] == 0.9
    assert by_type["EMAIL_ADDRESS"]["recognizer"] == "OfflineEmailRecognizer"
    assert by_type["PERSON"]["start"] == 0 and by_type["PERSON"]["end"] == 8


def test_jsonl_lines_and_blocked_texts(tmp_path: Path) -> None:
    policy = tmp_path / "tickets.yaml"
    policy.write_text(POLICY)
    lines = json.dumps({"text": "SSN 536-90-4372 of Jane Roe"}) + "\n\n" + json.dumps({"text": "No PII here."}) + "\n"

    code, output = run("--policy", str(policy), "--jsonl", stdin=lines)

    assert code == 0, output
    first, second = (json.loads(line) for line in output.splitlines())
    assert first == {"policy": "tickets@5", "redacted": None, "blocked": ["US_SSN"]}
    assert second == {"policy": "tickets@5", "redacted": "No PII here.", "entities": []}
    assert set(json.loads(run(stdin="Jane Roe")[1])["entities"][0]) == {"type", "start", "end", "placeholder"}


def test_invalid_policy_file_is_one_clear_error(tmp_path: Path) -> None:
    policy = tmp_path / "broken.yaml"
    policy.write_text(POLICY.replace("score: 0.9", "score: 9"))

    code, output = run("--policy", str(policy), stdin="x")

    assert code == 2
    assert "broken.yaml" in output and "recognizers.0.patterns.0.score" in output
