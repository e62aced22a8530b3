import pytest
from cryptography.exceptions import InvalidTag

from airlock.core.crypto import KeyRing, KeyRingError
from airlock.core.settings import KafkaSettings, SettingsError, load
from airlock.redactor.vault import open_map, seal_map


def test_vault_round_trip_and_binding_to_request() -> None:
    ring = KeyRing.generate("k1")
    vault = seal_map(ring, b"airlock-1", {"<PERSON_1>": "Jane Roe"})

    assert "Jane" not in vault.model_dump_json()
    assert open_map(ring, b"airlock-1", vault) == {"<PERSON_1>": "Jane Roe"}
    with pytest.raises(InvalidTag):
        open_map(ring, b"airlock-2", vault)  # sealed for another request


def test_rotation_keeps_old_maps_readable() -> None:
    old = KeyRing.generate("k1")
    vault = seal_map(old, b"a", {"<X_1>": "v"})
    rotated = old.rotated("k2")

    assert seal_map(rotated, b"a", {}).key_id == "k2"
    assert open_map(rotated, b"a", vault) == {"<X_1>": "v"}
    with pytest.raises(KeyRingError):
        open_map(KeyRing.generate("k3"), b"a", vault)


def test_key_ring_never_prints_key_material() -> None:
    ring = KeyRing.generate("k1")
    material = ring.to_json().split('"k1": "')[1].split('"')[0]
    assert material not in repr(ring) and material not in str(ring)


def test_bad_key_ring_error_has_no_key_material() -> None:
    with pytest.raises(KeyRingError) as caught:
        KeyRing.from_json('{"active": "k1", "keys": {"k1": "c2hvcnQ="}}')
    assert "c2hvcnQ" not in str(caught.value)


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRLOCK_KAFKA_SECURITY_PROTOCOL", "CARRIER_PIGEON")
    with pytest.raises(SettingsError) as caught:
        load(KafkaSettings)
    assert "AIRLOCK_KAFKA_SECURITY_PROTOCOL" in str(caught.value)


def test_secret_settings_do_not_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRLOCK_KAFKA_SASL_PASSWORD", "hunter2-very-secret")
    settings = load(KafkaSettings)
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
