"""The vault key ring: the CLI that keeps it (generate, rotate, list, retire) and its reload."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from airlock.core.crypto import KeyRing, WatchedKeyRing, current_ring
from airlock.devstack.cli import app
from airlock.redactor.vault import open_map, seal_map


def airlock(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["vault-keys", *args])
    return result.exit_code, result.output


def material(ring_file: Path) -> list[str]:
    return list(json.loads(ring_file.read_text())["keys"].values())


def test_generate_rotate_list_retire_keep_the_material_in_the_file_only(tmp_path: Path) -> None:
    ring_file = tmp_path / "vault-keys.json"
    outputs = []
    code, out = airlock("generate", str(ring_file), "--key-id", "v1")
    outputs.append(out)
    assert code == 0 and stat.S_IMODE(ring_file.stat().st_mode) == 0o600
    assert airlock("generate", str(ring_file))[0] != 0, "an existing ring is never replaced silently"
    code, out = airlock("rotate", str(ring_file), "--key-id", "v2")
    outputs.append(out)
    assert code == 0 and KeyRing.from_json(ring_file.read_text()).active == "v2"
    code, out = airlock("list", str(ring_file))
    outputs.append(out)
    assert out.splitlines() == ["v1", "v2  (active)"]
    assert airlock("retire", str(ring_file), "v2")[0] != 0, "the active key cannot be retired"
    assert airlock("rotate", str(ring_file), "--key-id", "v1")[0] != 0, "key ids are never reused"
    assert airlock("rotate", str(ring_file), "--key-id", "../x")[0] != 0
    code, out = airlock("retire", str(ring_file), "v1")
    outputs.append(out)
    ring = KeyRing.from_json(ring_file.read_text())
    assert code == 0 and sorted(ring.keys) == ["v2"]
    for key in material(ring_file):
        assert all(key not in text for text in outputs)


def test_a_watched_ring_takes_a_rotation_and_opens_what_the_old_key_sealed(tmp_path: Path) -> None:
    ring_file = tmp_path / "vault-keys.json"
    ring_file.write_text(KeyRing.generate("v1").to_json())
    watched = WatchedKeyRing(ring_file, variable="AIRLOCK_REDACTOR_VAULT_KEYS")
    sealed_before = seal_map(current_ring(watched), b"a-1", {"<PERSON_1>": "Jane"})
    assert not watched.reload(), "an unchanged file is not a new ring"

    ring_file.write_text(KeyRing.from_json(ring_file.read_text()).rotated("v2").to_json())
    assert watched.reload()

    sealed_after = seal_map(current_ring(watched), b"a-2", {"<PERSON_1>": "John"})
    assert (sealed_before.key_id, sealed_after.key_id) == ("v1", "v2")
    assert open_map(current_ring(watched), b"a-1", sealed_before) == {"<PERSON_1>": "Jane"}


def test_a_broken_ring_file_is_refused_loudly_and_the_previous_ring_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ring_file = tmp_path / "vault-keys.json"
    good = KeyRing.generate("v1")
    ring_file.write_text(good.to_json())
    watched = WatchedKeyRing(ring_file, variable="AIRLOCK_REDACTOR_VAULT_KEYS")
    broken = json.dumps({"active": "v9", "keys": json.loads(good.to_json())["keys"]})
    ring_file.write_text(broken)

    with caplog.at_level(logging.INFO):
        assert not watched.reload()

    assert watched.current.active == "v1" and watched.refused and "v9" in watched.refused
    assert all(key not in caplog.text for key in material(ring_file))
    ring_file.write_text(good.rotated("v2").to_json())
    assert watched.reload() and watched.refused is None and watched.current.active == "v2"
