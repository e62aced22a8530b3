import json
import logging
from pathlib import Path

import pytest

from airlock.auditor.checkpointing import load_signing_keys as signing_keys
from airlock.auditor.settings import AuditorSettings
from airlock.auditor.signing import Checkpoint, KeyConflict, PublicKeys, SigningKeys, sign_checkpoint
from airlock.auditor.witness import Witness, WitnessConflict, read_witness, write_once
from airlock.core.crypto import KeyRing, KeyRingError, b64

HASH = "ab" * 32


def checkpoint(keys: SigningKeys, seq: int = 10, digest: str = HASH, partition: int = 0) -> Checkpoint:
    return sign_checkpoint(keys, ledger="airlock.ledger", partition=partition, seq=seq, hash=digest)


def test_checkpoint_signature_verifies_and_covers_every_field() -> None:
    keys = SigningKeys(KeyRing.generate("sig-1"))
    signed = checkpoint(keys)
    trusted = keys.public_keys()
    assert signed.verify(trusted) is None
    assert signed.key_id == "sig-1"
    for field, value in [("seq", 11), ("hash", "cd" * 32), ("partition", 1), ("ledger", "other"), ("time", "x")]:
        forged = signed.model_copy(update={field: value})
        assert forged.verify(trusted) == "signature does not verify under key 'sig-1'", field


def test_checkpoint_signed_by_an_unknown_key_is_refused() -> None:
    ours, theirs = SigningKeys(KeyRing.generate("sig-1")), SigningKeys(KeyRing.generate("evil-1"))
    assert checkpoint(theirs).verify(ours.public_keys()) == "signed with unknown key id 'evil-1'"
    # The same id does not help a forger: the key behind it differs.
    impostor = SigningKeys(KeyRing.generate("sig-1"))
    assert checkpoint(impostor).verify(ours.public_keys()) == "signature does not verify under key 'sig-1'"


def test_rotation_signs_with_the_new_key_and_keeps_old_checkpoints_verifiable() -> None:
    first = KeyRing.generate("sig-1")
    old = checkpoint(SigningKeys(first))
    rotated = SigningKeys(first.rotated("sig-2"))
    new = checkpoint(rotated, seq=20)
    assert new.key_id == "sig-2"
    published = rotated.public_keys()
    assert old.verify(published) is None and new.verify(published) is None
    # Verifiers only need the public half: a private key can be retired from the ring.
    retired = PublicKeys.from_json(published.to_json())
    assert old.verify(retired) is None


def test_public_keys_round_trip_and_conflicting_ids_are_refused() -> None:
    keys = SigningKeys(KeyRing.generate("sig-1")).public_keys()
    assert PublicKeys.from_json(keys.to_json()) == keys
    other = SigningKeys(KeyRing.generate("sig-1")).public_keys()
    with pytest.raises(KeyConflict):
        keys.merged(other)
    with pytest.raises(KeyRingError):
        PublicKeys.from_json(json.dumps({"keys": {"sig-1": {"algorithm": "RSA", "public_key": "AAAA"}}}))


def test_key_ids_that_cannot_name_a_file_are_refused() -> None:
    with pytest.raises(KeyRingError, match="must match"):
        SigningKeys(KeyRing("../x", {"../x": b"\x01" * 32}))


def test_signing_keys_come_from_the_secret_or_its_file_and_never_print(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ring = KeyRing.generate("sig-9")
    material = b64(ring.keys["sig-9"])
    path = tmp_path / "ring.json"
    path.write_text(ring.to_json())
    from_file = signing_keys(AuditorSettings(signing_keys_file=path))
    from_env = signing_keys(AuditorSettings(signing_keys=ring.to_json()))
    assert from_file.public_keys() == from_env.public_keys()
    caplog.set_level(logging.DEBUG)
    logging.getLogger("test").info("keys %s %r", from_file, from_env)
    assert material not in repr(from_file) + str(from_env) + caplog.text
    assert "sig-9" in repr(from_file)
    assert material not in repr(AuditorSettings(signing_keys=ring.to_json()))
    with pytest.raises(KeyRingError, match="AIRLOCK_AUDITOR_SIGNING_KEYS or AIRLOCK_AUDITOR_SIGNING_KEYS_FILE"):
        signing_keys(AuditorSettings(signing_keys=None, signing_keys_file=None))


def test_witness_files_are_written_once_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "a" / "1.json"
    assert write_once(path, b"first")
    assert not write_once(path, b"second")
    assert path.read_bytes() == b"first"
    assert [p.name for p in path.parent.iterdir()] == ["1.json"]  # no temporary files left behind


def test_witness_keeps_each_checkpoint_once_and_keeps_a_fork_as_evidence(tmp_path: Path) -> None:
    keys = SigningKeys(KeyRing.generate("sig-1"))
    witness = Witness(tmp_path, "airlock.ledger")
    first = checkpoint(keys)
    path = witness.record(first)
    assert path == tmp_path / "airlock.ledger" / "0" / f"{10:016d}.json"
    # Re-sealing after a crash re-creates the same position and hash: already witnessed.
    assert witness.record(checkpoint(keys)) == path
    with pytest.raises(WitnessConflict):
        witness.record(checkpoint(keys, digest="cd" * 32))
    contents = read_witness(witness.directory)
    assert sorted(name for name, _ in contents.checkpoints) == [f"0/{10:016d}-{'cd' * 8}.json", f"0/{10:016d}.json"]
    assert Checkpoint.parse(path.read_bytes()) == first


def test_witness_publishes_public_keys_once_and_refuses_a_different_key_under_the_same_id(tmp_path: Path) -> None:
    witness = Witness(tmp_path, "airlock.ledger")
    keys = SigningKeys(KeyRing.generate("sig-1"))
    witness.publish_keys(keys.public_keys())
    witness.publish_keys(keys.public_keys())
    assert read_witness(witness.directory).keys == keys.public_keys()
    with pytest.raises(KeyConflict):
        witness.publish_keys(SigningKeys(KeyRing.generate("sig-1")).public_keys())
