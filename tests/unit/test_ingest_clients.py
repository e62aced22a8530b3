"""The clients file: parsing, saving, reloading, rotation, and never showing a secret."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from airlock.client import ClientCredentials
from airlock.devstack.cli import app
from airlock.ingest.clients import (
    ClientKey,
    ClientPolicy,
    ClientRegistry,
    ClientsFile,
    ClientsFileError,
    Limits,
    allows,
    new_key,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def sample() -> ClientsFile:
    key_id, key = new_key("billing", NOW)
    policy = ClientPolicy(
        keys={key_id: key},
        tenants=["acme"],
        models=["gpt-4o-mini"],
        use_cases=["default"],
        reply_topics=["airlock.responses"],
        max_prompt_chars=1000,
        max_tokens=100,
    )
    return ClientsFile(tenants={"acme": Limits(requests_per_minute=5)}, clients={"billing": policy})


def secrets_of(file: ClientsFile) -> list[str]:
    return [key.secret.get_secret_value() for p in file.clients.values() for key in p.keys.values()]


def test_save_and_load_round_trip_with_owner_only_permissions(tmp_path: Path) -> None:
    path = tmp_path / "clients.yaml"
    original = sample()
    original.save(path)

    assert ClientsFile.load(path) == original
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary file left behind"


def test_repr_and_describe_never_show_secrets() -> None:
    file = sample()
    [secret] = secrets_of(file)
    assert secret not in repr(file) and secret not in str(file)
    assert secret not in "\n".join(file.describe(NOW))
    assert secret in file.to_yaml()  # only the file itself holds it


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["clients"]["billing"]["keys"].__setitem__(
            "k", {"secret": "c2hvcnQtc2VjcmV0LXZhbHVl", "created_at": "2025-01-01T00:00:00Z"}
        ),
        lambda d: d["clients"]["billing"].__setitem__("surprise", "c2hvcnQtc2VjcmV0LXZhbHVl"),
        lambda d: d["clients"]["billing"].pop("max_tokens"),
        lambda d: d["tenants"].__setitem__("acme", {"requests_per_minute": -1}),
    ],
)
def test_invalid_files_are_refused_without_echoing_values(mutate: object) -> None:
    document = json.loads(json.dumps(__import__("yaml").safe_load(sample().to_yaml())))
    mutate(document)  # type: ignore[operator]
    with pytest.raises(ClientsFileError) as caught:
        ClientsFile.parse(json.dumps(document))
    message = str(caught.value)
    assert "c2hvcnQtc2VjcmV0LXZhbHVl" not in message
    for secret in secrets_of(sample()):
        assert secret not in message
    assert message.startswith("invalid clients file: clients.") or "tenants.acme" in message


def test_yaml_errors_report_position_not_content() -> None:
    with pytest.raises(ClientsFileError) as caught:
        ClientsFile.parse("clients:\n  billing: {keys: [unclosed, secret-ish-value\n")
    assert "line" in str(caught.value) and "secret-ish-value" not in str(caught.value)


def test_registry_reloads_on_change_and_keeps_the_last_good_version(tmp_path: Path) -> None:
    path = tmp_path / "clients.yaml"
    sample().save(path)
    registry = ClientRegistry(path)
    registry.load()
    first = registry.version

    assert not registry.refresh()  # unchanged
    updated = registry.current.with_tenant("globex", Limits())
    updated.save(path)
    assert registry.refresh()
    assert "globex" in registry.current.tenants and registry.version != first

    path.write_text("clients: [this is not a mapping")
    os.utime(path, ns=(1, 1))
    with pytest.raises(ClientsFileError):
        registry.refresh()
    assert "globex" in registry.current.tenants, "the last good version stays in force"
    assert not registry.refresh(), "a bad version is reported once"


def test_registry_follows_a_symlink_swap_like_a_kubernetes_secret(tmp_path: Path) -> None:
    one, two = tmp_path / "v1", tmp_path / "v2"
    one.mkdir(), two.mkdir()
    sample().save(one / "clients.yaml")
    sample().with_tenant("globex", Limits()).save(two / "clients.yaml")
    (tmp_path / "..data").symlink_to(one)
    path = tmp_path / "clients.yaml"
    path.symlink_to(tmp_path / "..data" / "clients.yaml")
    registry = ClientRegistry(path)
    registry.load()

    (tmp_path / "..data_tmp").symlink_to(two)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")

    assert registry.refresh() and "globex" in registry.current.tenants


def test_missing_setting_is_named() -> None:
    with pytest.raises(ClientsFileError, match="AIRLOCK_INGEST_CLIENTS_FILE"):
        ClientRegistry(None).load()


def test_rotation_keeps_old_keys_valid_for_the_grace_period() -> None:
    file = sample()
    [old_id] = file.clients["billing"].keys
    rotated, new_id = file.rotated("billing", grace=timedelta(hours=24), now=NOW)

    keys = rotated.clients["billing"].keys
    assert set(keys) == {old_id, new_id}
    assert keys[old_id].not_after == NOW + timedelta(hours=24)
    assert keys[old_id].valid_at(NOW + timedelta(hours=23)) and not keys[old_id].valid_at(NOW + timedelta(hours=25))
    assert keys[new_id].not_after is None
    assert rotated.clients["billing"].newest_key(NOW + timedelta(hours=1))[0] == new_id  # type: ignore[index]


def test_rotation_never_extends_an_earlier_expiry() -> None:
    file = sample()
    [old_id] = file.clients["billing"].keys
    once, _ = file.rotated("billing", grace=timedelta(hours=1), now=NOW)
    twice, _ = once.rotated("billing", grace=timedelta(days=7), now=NOW)
    assert twice.clients["billing"].keys[old_id].not_after == NOW + timedelta(hours=1)


def test_a_refused_edit_is_reported_until_a_good_version_arrives(tmp_path: Path) -> None:
    path = tmp_path / "clients.yaml"
    sample().save(path)
    registry = ClientRegistry(path)
    registry.load()
    good = registry.version

    path.write_text("clients: [this is not a mapping\n")
    with pytest.raises(ClientsFileError):
        registry.refresh()
    assert registry.refused and good in registry.refused and registry.version == good

    sample().without_client("billing").save(path)
    assert registry.refresh() and registry.refused is None


def test_prune_removes_only_keys_whose_grace_is_over() -> None:
    file = sample()
    [old_id] = file.clients["billing"].keys
    rotated, new_id = file.rotated("billing", grace=timedelta(hours=1), now=NOW)

    during, removed_during = rotated.pruned(NOW + timedelta(minutes=30))
    after, removed_after = rotated.pruned(NOW + timedelta(hours=2))

    assert removed_during == [] and set(during.clients["billing"].keys) == {old_id, new_id}
    assert removed_after == [("billing", old_id)] and set(after.clients["billing"].keys) == {new_id}
    assert after.clients["billing"].tenants == file.clients["billing"].tenants


@pytest.mark.parametrize(
    ("patterns", "value", "allowed"),
    [
        ([], "acme", False),
        (["*"], "acme", True),
        (["acme"], "acme", True),
        (["acme"], "acme2", False),
        (["airlock.responses.billing.*"], "airlock.responses.billing.eu", True),
        (["airlock.responses.billing.*"], "airlock.responses.payroll", False),
        (["gpt-4o*"], "gpt-4o-mini", True),
    ],
)
def test_grants_are_exact_names_or_globs(patterns: list[str], value: str, allowed: bool) -> None:
    assert allows(patterns, value) is allowed


def test_key_material_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        ClientKey(secret="c2hvcnQ=", created_at=NOW)


# -- airlock clients -----------------------------------------------------------------------


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_cli_add_rotate_list_tenant_remove(tmp_path: Path) -> None:
    path = tmp_path / "clients.yaml"
    file = ["--file", str(path)]

    code, out, err = run("clients", "tenant", "acme", "--rpm", "60", "--tokens-per-day", "1000", *file)
    assert code == 0, err
    code, out, err = run("clients", "add", "billing", "--tenant", "acme", "--model", "gpt-4o-mini", *file)
    assert code == 0, err
    issued = ClientCredentials.model_validate_json(out)
    assert issued.client_id == "billing" and len(issued.material()) == 32
    stored = ClientsFile.load(path).clients["billing"]
    assert stored.keys[issued.key_id].secret.get_secret_value() == issued.secret.get_secret_value()
    assert stored.reply_topics == [] and stored.use_cases == ["default"]

    out_file = tmp_path / "billing.json"
    code, _, err = run("clients", "rotate", "billing", "--grace", "1h", "--credentials-out", str(out_file), *file)
    assert code == 0, err
    rotated = ClientCredentials.from_file(out_file)
    assert rotated.key_id != issued.key_id and oct(out_file.stat().st_mode & 0o777) == "0o600"

    code, listing, _ = run("clients", "list", *file)
    assert code == 0
    assert "client billing" in listing and issued.key_id in listing and rotated.key_id in listing
    assert "tenant acme: rpm 60, tokens/day 1000" in listing
    for secret in (issued.secret.get_secret_value(), rotated.secret.get_secret_value()):
        assert secret not in listing
    assert path.read_text().count("secret:") == 2

    code, _, err = run("clients", "add", "billing", "--tenant", "acme", "--model", "x", *file)
    assert code == 2 and "exists" in err
    code, _, err = run("clients", "add", "billing", "--tenant", "acme", "--model", "gpt-4o", "--update", *file)
    assert code == 0 and ClientsFile.load(path).clients["billing"].models == ["gpt-4o"]
    assert len(ClientsFile.load(path).clients["billing"].keys) == 2, "--update keeps the keys"

    code, out, _ = run("clients", "prune", *file)
    assert code == 0 and "expired key" not in out, "the old key is still in its grace period"
    code, _, _ = run("clients", "rotate", "billing", "--grace", "0", *file)
    code, out, err = run("clients", "prune", "--dry-run", *file)
    assert code == 0 and out.count("would remove expired key") == 2
    assert len(ClientsFile.load(path).clients["billing"].keys) == 3, "a dry run changes nothing"
    code, out, _ = run("clients", "prune", *file)
    assert code == 0 and issued.key_id in out and rotated.key_id in out
    assert len(ClientsFile.load(path).clients["billing"].keys) == 1

    code, _, _ = run("clients", "remove", "billing", *file)
    assert code == 0 and "billing" not in ClientsFile.load(path).clients


def test_cli_rejects_a_bad_grace_and_unknown_client(tmp_path: Path) -> None:
    path = tmp_path / "clients.yaml"
    sample().save(path)
    code, _, _ = run("clients", "rotate", "billing", "--grace", "soon", "--file", str(path))
    assert code == 2
    code, _, err = run("clients", "rotate", "nobody", "--file", str(path))
    assert code == 2 and "nobody" in err
