"""Stage-to-stage authenticity: every record a stage writes is signed by that stage.

Kafka's ACLs decide who may write a topic; this is the second wall, for when they are wrong
or too wide. Each stage holds its own Ed25519 key (``AIRLOCK_MESH_SIGNING_KEYS_FILE``, a key
ring of 32-byte seeds) and every stage's public keys (``AIRLOCK_MESH_TRUST_FILE``). The stage
runtime signs every record it commits and, at the door of every internal input topic,
checks that the record was signed by a stage the topology says writes that topic; a record
that fails is dead-lettered and audited and never reaches the handler (no model call, no
restore, no seal). The auditor additionally requires an audit event's ``stage`` to be the
stage that signed it.

The signature covers a domain tag, the signing stage, the topic, the record key and a
digest of the value, so a genuine record cannot be moved to another topic, re-keyed, or
altered (an envelope's ``reply_to`` or vault with it). It is carried in one header,
``airlock-stage-signature: v1 <stage> <key id> <base64 signature>``. Public keys only are
needed to verify: a stage cannot forge another stage's records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka import ConsumerRecord
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from airlock.core import headers as h
from airlock.core.crypto import KeyRing, KeyRingError, b64, load_key_ring, unb64
from airlock.core.deadletters import DeadLetterSeal, dead_letter_seal
from airlock.core.deadletters import public_key as letter_public_key
from airlock.core.errors import ErrorCode, StageError
from airlock.core.settings import AirlockSettings
from airlock.core.stage import Incoming, Outcome, Processor, Result, StageContext
from airlock.core.topics import Topics
from airlock.core.topology import STAGES

_CONTEXT = b"airlock-stage-record/v1\x00"
TRUST_FORMAT = "airlock-mesh-trust/1"


class MeshSettings(AirlockSettings):
    """The stage's signing key and the mesh's public keys (``AIRLOCK_MESH_*``).

    Attributes:
        signing_keys: This stage's key ring (JSON; secret), or
        signing_keys_file: a file holding it (a mounted Secret).
        trust_file: Every stage's public keys (``airlock-mesh-trust/1`` JSON; not secret).
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="AIRLOCK_MESH_")

    signing_keys: SecretStr | None = None
    signing_keys_file: Path | None = None
    trust_file: Path | None = Field(default=None)


class RecordRefused(ValueError):
    """A record's stage signature is missing, malformed, unknown or wrong (the reason says which)."""


def _message(stage: str, topic: str, key: bytes | None, value: bytes) -> bytes:
    return b"".join(
        (
            _CONTEXT,
            stage.encode(),
            b"\x00",
            topic.encode(),
            b"\x00",
            hashlib.sha256(key or b"").digest(),
            hashlib.sha256(value).digest(),
        )
    )


@dataclass(frozen=True)
class Trust:
    """Every stage's public keys and the operators' dead-letter keys.

    Attributes:
        keys: ``stage → key id → Ed25519 public key``.
        dead_letters: ``key id → base64 X25519 public key``; letters are sealed to
        dead_letter_active: this one.
    """

    keys: Mapping[str, Mapping[str, Ed25519PublicKey]]
    dead_letters: Mapping[str, str] = dataclasses.field(default_factory=dict)
    dead_letter_active: str | None = None

    @classmethod
    def from_json(cls, text: str) -> Trust:
        """Parse the trust file.

        Its form: ``{"format": "airlock-mesh-trust/1", "stages": {stage: {key_id: base64}},
        "dead_letters": {"active": key_id, "keys": {key_id: base64}}}``.
        """
        try:
            raw = json.loads(text)
            if raw.get("format") != TRUST_FORMAT:
                raise ValueError
            keys = {
                str(stage): {str(kid): Ed25519PublicKey.from_public_bytes(unb64(pub)) for kid, pub in ids.items()}
                for stage, ids in raw["stages"].items()
            }
            letters = raw.get("dead_letters") or {"keys": {}}
            dead_letters = {str(kid): str(pub) for kid, pub in letters["keys"].items()}
            active = letters.get("active")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise KeyRingError(f"the mesh trust file is not {TRUST_FORMAT} JSON") from None
        return cls(keys, dead_letters, str(active) if active is not None else None)

    @staticmethod
    def to_json(public: Mapping[str, Mapping[str, str]], dead_letters: KeyRing | None = None) -> str:
        """The trust file's JSON.

        Args:
            public: ``stage → key id → base64 public key``.
            dead_letters: The operators' dead-letter ring (only its public keys are written).
        """
        document: dict[str, object] = {"format": TRUST_FORMAT, "stages": public}
        if dead_letters is not None:
            document["dead_letters"] = {
                "active": dead_letters.active,
                "keys": {kid: b64(letter_public_key(seed)) for kid, seed in dead_letters.keys.items()},
            }
        return json.dumps(document, indent=2, sort_keys=True)


class StageSigner:
    """Signs what one stage writes, with the active key of its ring; prints no key material."""

    def __init__(self, stage: str, ring: KeyRing) -> None:
        self.stage = stage
        self.key_id = ring.active
        self._key = Ed25519PrivateKey.from_private_bytes(ring.keys[ring.active])

    def __repr__(self) -> str:
        return f"StageSigner(stage={self.stage!r}, key_id={self.key_id!r})"

    def header(self, topic: str, key: bytes | None, value: bytes) -> tuple[str, bytes]:
        """The signature header for one record."""
        signature = self._key.sign(_message(self.stage, topic, key, value))
        return h.STAGE_SIGNATURE, f"v1 {self.stage} {self.key_id} {b64(signature)}".encode()


def public_keys(ring: KeyRing) -> dict[str, str]:
    """``key id → base64 public key`` of a signing ring (for the trust file)."""
    return {
        kid: b64(Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        for kid, seed in ring.keys.items()
    }


class DoorCheck:
    """Verifies records at the door of a stage's internal input topics.

    Args:
        trust: Every stage's public keys.
        writers: ``topic → stages allowed to sign records on it``; topics not listed are not
            checked here (the request topic, whose records clients sign and ingest verifies).
    """

    def __init__(self, trust: Trust, writers: Mapping[str, frozenset[str]]) -> None:
        self._trust = trust
        self._writers = dict(writers)

    def guards(self, topic: str) -> bool:
        """Whether records of ``topic`` must carry a stage signature."""
        return topic in self._writers

    def signer(self, topic: str, key: bytes | None, value: bytes, headers: Iterable[tuple[str, bytes]]) -> str:
        """The stage that signed this record.

        Raises:
            RecordRefused: No valid signature by a stage that writes ``topic``.
        """
        found = [v for k, v in headers if k == h.STAGE_SIGNATURE]
        if len(found) != 1:
            raise RecordRefused("no stage signature" if not found else "more than one stage signature")
        try:
            version, stage, key_id, signature = found[0].decode("ascii").split(" ")
            raw = unb64(signature)
        except (UnicodeDecodeError, ValueError):
            raise RecordRefused("malformed stage signature") from None
        if version != "v1":
            raise RecordRefused(f"unknown stage signature version {version[:16]!r}")
        if stage not in self._writers.get(topic, frozenset()):
            raise RecordRefused(f"stage {stage[:32]!r} does not write {topic}")
        public = self._trust.keys.get(stage, {}).get(key_id)
        if public is None:
            raise RecordRefused(f"unknown key {key_id[:64]!r} of stage {stage}")
        try:
            public.verify(raw, _message(stage, topic, key, value))
        except InvalidSignature:
            raise RecordRefused(f"signature of stage {stage} does not match the record") from None
        return stage

    def signed_by(
        self, stage: str, topic: str, key: bytes | None, value: bytes, headers: Iterable[tuple[str, bytes]]
    ) -> bool:
        """Whether ``stage`` signed this record, whoever the topology says writes ``topic``.

        For a stage's own control records on a topic others write (ingest's nudges on the
        request topic): only that stage's signature makes them control records.
        """
        try:
            return DoorCheck(self._trust, {topic: frozenset({stage})}).signer(topic, key, value, headers) == stage
        except RecordRefused:
            return False

    def record_signer(self, record: ConsumerRecord) -> str:
        """:meth:`signer` of a record read from Kafka (side channels and feeds read these).

        Raises:
            RecordRefused: No valid signature by a stage that writes the record's topic.
        """
        headers = [(name, value or b"") for name, value in record.headers or ()]
        return self.signer(record.topic, record.key, record.value or b"", headers)


Door = Callable[[], DoorCheck]
"""Gives the mesh's door check once the stage has started (its keys load at start-up)."""

Signer = Callable[[], "StageSigner | None"]
"""Gives the stage's signer once started (``None`` where the mesh is not configured)."""


def writers_of(topics: Topics) -> dict[str, frozenset[str]]:
    """``topic → stages that write it``, for every topic some stage writes (from the topology)."""
    writers: dict[str, set[str]] = {}
    for spec in STAGES:
        for base in spec.writes:
            writers.setdefault(getattr(topics, base), set()).add(spec.service)
    # Ingest moves a request to its home partition, but the client's own signature is what
    # vouches for a request: the request topic is checked by ingest, not at the door.
    writers.pop(topics.requests, None)
    return {topic: frozenset(stages) for topic, stages in writers.items()}


@dataclass(frozen=True)
class MeshAuthenticity:
    """One stage's signer, door check and dead-letter seal."""

    signer: StageSigner
    door: DoorCheck
    dead_letters: DeadLetterSeal

    @classmethod
    def load(cls, stage: str, topics: Topics, settings: MeshSettings) -> MeshAuthenticity:
        """From settings; raises :class:`KeyRingError` naming the variable that is missing or bad."""
        inline = settings.signing_keys.get_secret_value() if settings.signing_keys else None
        ring = load_key_ring(inline, settings.signing_keys_file, variable="AIRLOCK_MESH_SIGNING_KEYS")
        if settings.trust_file is None:
            raise KeyRingError("AIRLOCK_MESH_TRUST_FILE must be set (every stage's public keys)")
        try:
            trust = Trust.from_json(settings.trust_file.read_text())
        except OSError as error:
            raise KeyRingError(
                f"AIRLOCK_MESH_TRUST_FILE: cannot read {settings.trust_file}: {error.strerror}"
            ) from None
        signer = StageSigner(stage, ring)
        mine = trust.keys.get(stage, {}).get(signer.key_id)
        if mine is None or public_keys(ring)[signer.key_id] != b64(mine.public_bytes(Encoding.Raw, PublicFormat.Raw)):
            raise KeyRingError(f"the trust file does not hold stage {stage}'s active key {signer.key_id!r}")
        seal = dead_letter_seal(trust.dead_letters, trust.dead_letter_active)
        return cls(signer, DoorCheck(trust, writers_of(topics)), seal)


class DoorCheckedProcessor:
    """A processor behind the door check: refused records never reach it.

    Records that verify are handed on with ``signed_by`` set; each one that does not ends as
    its own dead letter and ``poison`` notice (an unauthentic record has no trustworthy
    request to answer), in its place in the batch.

    Args:
        inner: The stage's processor.
        door: Gives the door check (keys are loaded when the stage starts).
        context: Builds the refusals.
    """

    def __init__(self, inner: Processor, door: Callable[[], DoorCheck], context: StageContext) -> None:
        self._inner = inner
        self._door = door
        self._context = context

    async def process(self, batch: Sequence[Incoming]) -> Sequence[Result]:
        """Verify each record, process those that pass, keep the batch's order."""
        results: list[Result | None] = []
        passed: list[Incoming] = []
        for incoming in batch:
            try:
                stage = self._door().signer(incoming.topic, incoming.key, incoming.value, incoming.headers)
            except RecordRefused as refused:
                error = StageError(ErrorCode.UNAUTHENTIC_RECORD, str(refused))
                results.append(self._context.poison(incoming, error))
                continue
            passed.append(dataclasses.replace(incoming, signed_by=stage))
            results.append(None)
        processed = iter(await self._inner.process(passed) if passed else ())
        return [result if result is not None else next(processed) for result in results]

    def give_up(self, incoming: Incoming, error: BaseException) -> Outcome:
        """As the wrapped processor gives up."""
        return self._inner.give_up(incoming, error)

    def on_reset(self, partition: int) -> None:
        """As the wrapped processor resets, if it keeps per-partition state."""
        reset = getattr(self._inner, "on_reset", None)
        if reset is not None:
            reset(partition)


#: The operators' dead-letter ring in the mesh keys directory (never mounted into a stage).
DEAD_LETTER_RING = "dead-letters.json"


def write_mesh_keys(directory: Path, stages: Iterable[str] | None = None) -> Path:
    """Make every stage's signing ring and the operators' dead-letter ring; write ``trust.json``.

    Rings are ``<stage>.json`` and ``dead-letters.json`` (mode 0600).

    Existing rings are kept, so the call is idempotent and the trust file follows rotations.
    Each stage's ring goes into that stage's own Secret; the dead-letter ring stays with the
    operators (``airlock dlq read --keys``); the trust file (public keys only) goes into a
    ConfigMap every stage mounts, and to client teams (they verify replies with it).

    Returns:
        The trust file.
    """
    import os

    directory.mkdir(parents=True, exist_ok=True)

    def ring(name: str, key_id: str) -> KeyRing:
        path = directory / name
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(KeyRing.generate(key_id).to_json())
        return KeyRing.from_json(path.read_text())

    names = stages or [spec.service for spec in STAGES]
    public = {stage: public_keys(ring(f"{stage}.json", f"{stage}-1")) for stage in names}
    trust = directory / "trust.json"
    text = Trust.to_json(public, ring(DEAD_LETTER_RING, "dead-letters-1"))
    if not trust.exists() or trust.read_text() != text:
        trust.write_text(text)
    return trust
