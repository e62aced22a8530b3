"""The SDK's credentials: where they come from, and that the secret never shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from airlock.client import AirlockClient, ClientCredentials, CredentialsError
from airlock.core.settings import KafkaSettings
from airlock.core.signing import generate_secret

SECRET = generate_secret()


def test_from_env_variables_and_file(tmp_path: Path) -> None:
    env = {"AIRLOCK_CLIENT_ID": "billing", "AIRLOCK_CLIENT_KEY_ID": "k1", "AIRLOCK_CLIENT_SECRET": SECRET}
    from_vars = ClientCredentials.from_env(env)
    assert from_vars is not None and (from_vars.client_id, from_vars.key_id) == ("billing", "k1")

    path = tmp_path / "creds.json"
    path.write_text(from_vars.to_json())
    from_file = ClientCredentials.from_env({"AIRLOCK_CLIENT_CREDENTIALS_FILE": str(path)})
    assert from_file == from_vars
    assert ClientCredentials.from_env({}) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AIRLOCK_CLIENT_ID": "billing"}, "AIRLOCK_CLIENT_KEY_ID, AIRLOCK_CLIENT_SECRET not set"),
        (
            {"AIRLOCK_CLIENT_ID": "billing", "AIRLOCK_CLIENT_KEY_ID": "k1", "AIRLOCK_CLIENT_SECRET": "dG9vLXNob3J0"},
            "32 bytes",
        ),
        ({"AIRLOCK_CLIENT_CREDENTIALS_FILE": "/nonexistent/creds.json"}, "cannot read"),
    ],
)
def test_bad_credentials_are_named_not_shown(env: dict[str, str], message: str) -> None:
    with pytest.raises(CredentialsError, match=message) as caught:
        ClientCredentials.from_env(env)
    assert "dG9vLXNob3J0" not in str(caught.value)


def test_secret_is_hidden_in_repr() -> None:
    credentials = ClientCredentials(client_id="billing", key_id="k1", secret=SECRET)
    assert SECRET not in repr(credentials) and SECRET not in str(credentials)
    assert SECRET in credentials.to_json()


def test_client_id_must_match_the_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRLOCK_CLIENT_CREDENTIALS_FILE", raising=False)
    credentials = ClientCredentials(client_id="billing", key_id="k1", secret=SECRET)
    kafka = KafkaSettings()
    assert AirlockClient(kafka, credentials=credentials, verify_replies=False).client_id == "billing"
    with pytest.raises(ValueError, match="does not match"):
        AirlockClient(kafka, "crm", credentials=credentials, verify_replies=False)
    with pytest.raises(ValueError, match="client id is needed"):
        AirlockClient(kafka, verify_replies=False)


def test_a_client_that_cannot_verify_replies_does_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRLOCK_CLIENT_TRUST_FILE", raising=False)
    credentials = ClientCredentials(client_id="billing", key_id="k1", secret=SECRET)
    with pytest.raises(ValueError, match="replies cannot be verified"):
        AirlockClient(KafkaSettings(), credentials=credentials)
    monkeypatch.setenv("AIRLOCK_CLIENT_TRUST_FILE", "/nonexistent/trust.json")
    with pytest.raises(ValueError, match="cannot read"):
        AirlockClient(KafkaSettings(), credentials=credentials)
