"""Looking for things that must never be written down: secrets, prompts, answers, PII values."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path

from airlock.devstack.stack import LocalStack, ensure_signing_keys, ensure_vault_keys
from airlock.ingest.clients import ClientsFile


def service_logs(stack: LocalStack) -> list[Path]:
    """Every service replica's log file of ``stack`` (the fake model server's is not ours)."""
    return sorted(p for p in (stack.state / "logs").glob("*.log") if not p.name.startswith("fake-openai"))


def stack_secrets(stack: LocalStack) -> list[str]:
    """The stack's key material in the forms it could leak in: base64 and hex.

    Clients' signing keys, the redactor's vault keys, the auditor's ledger signing seeds and
    every Kafka principal's password (as is: they are not base64).
    """
    secrets = [
        key.secret.get_secret_value()
        for policy in ClientsFile.load(stack.clients_file).clients.values()
        for key in policy.keys.values()
    ]
    for ring in (ensure_vault_keys(stack.state), ensure_signing_keys(stack.state)):
        secrets += list(json.loads(ring.read_text())["keys"].values())
    forms = [form for secret in secrets for form in (secret, base64.b64decode(secret).hex())]
    assert stack.kafka is not None
    passwords = json.loads(stack.kafka.credentials_file.read_text())
    return [*forms, *passwords.values()]


def assert_absent(paths: Iterable[Path], forbidden: Iterable[str], *, what: str = "a secret") -> None:
    """Fail naming the file if any ``forbidden`` string appears in any of ``paths``."""
    values = [value for value in forbidden if value]
    checked = 0
    for path in paths:
        text = path.read_text(errors="replace")
        checked += 1
        for value in values:
            assert value not in text, f"{what} leaked into {path.name}: {value[:4]}…"
    assert checked, "no file to check"
