"""Stage signatures and the door check (pure: keys made here, no Kafka)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from airlock.core import headers as h
from airlock.core.authenticity import (
    DoorCheck,
    DoorCheckedProcessor,
    MeshAuthenticity,
    MeshSettings,
    RecordRefused,
    StageSigner,
    Trust,
    public_keys,
    writers_of,
)
from airlock.core.crypto import KeyRing, KeyRingError
from airlock.core.stage import Incoming, Outcome, Result, StageContext
from airlock.core.topics import Topics

TOPICS = Topics("t.")
RINGS = {stage: KeyRing.generate(f"{stage}-1") for stage in ("ingest", "redactor", "llm-worker", "auditor")}
TRUST = Trust.from_json(Trust.to_json({stage: public_keys(ring) for stage, ring in RINGS.items()}))


def door() -> DoorCheck:
    return DoorCheck(TRUST, writers_of(TOPICS))


def signed(stage: str, topic: str, value: bytes = b'{"x":1}', key: bytes | None = b"k") -> list[tuple[str, bytes]]:
    return [StageSigner(stage, RINGS[stage]).header(topic, key, value)]


def test_writers_come_from_the_topology() -> None:
    writers = writers_of(TOPICS)
    assert writers[TOPICS.accepted] == {"ingest"}
    assert writers[TOPICS.redacted] == {"redactor"}
    assert writers[TOPICS.completions] == {"llm-worker"}
    assert writers[TOPICS.ledger] == writers[TOPICS.checkpoints] == {"auditor"}
    assert writers[TOPICS.audit] == {"ingest", "redactor", "llm-worker", "auditor"}
    assert TOPICS.requests not in writers  # clients sign requests; ingest checks them


def test_a_genuine_record_names_its_stage() -> None:
    assert door().signer(TOPICS.redacted, b"k", b'{"x":1}', signed("redactor", TOPICS.redacted)) == "redactor"


@pytest.mark.parametrize(
    ("topic", "key", "value", "headers", "reason"),
    [
        (TOPICS.redacted, b"k", b'{"x":1}', [], "no stage signature"),
        (TOPICS.redacted, b"k", b'{"x":1}', signed("redactor", TOPICS.redacted) * 2, "more than one"),
        (TOPICS.redacted, b"k", b'{"x":2}', signed("redactor", TOPICS.redacted), "does not match"),  # altered
        (TOPICS.redacted, b"k2", b'{"x":1}', signed("redactor", TOPICS.redacted), "does not match"),  # re-keyed
        (TOPICS.completions, b"k", b'{"x":1}', signed("redactor", TOPICS.redacted), "does not write"),  # moved
        (TOPICS.redacted, b"k", b'{"x":1}', signed("ingest", TOPICS.redacted), "does not write"),  # skipped a stage
        (TOPICS.redacted, b"k", b'{"x":1}', [(h.STAGE_SIGNATURE, b"v1 redactor")], "malformed"),
        (TOPICS.redacted, b"k", b'{"x":1}', [(h.STAGE_SIGNATURE, b"v2 redactor redactor-1 AAAA")], "version"),
        (TOPICS.redacted, b"k", b'{"x":1}', [(h.STAGE_SIGNATURE, b"v1 redactor other-9 AAAA")], "unknown key"),
    ],
)
def test_anything_else_is_refused_with_a_reason(
    topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]], reason: str
) -> None:
    with pytest.raises(RecordRefused, match=reason):
        door().signer(topic, key, value, headers)


def test_a_stage_with_another_stages_key_cannot_sign_in_its_name() -> None:
    impostor = StageSigner("redactor", RINGS["ingest"])  # ingest's seed, the redactor's name
    headers = [impostor.header(TOPICS.redacted, b"k", b"v")]
    with pytest.raises(RecordRefused):
        door().signer(TOPICS.redacted, b"k", b"v", headers)


def test_signer_and_settings_never_print_key_material() -> None:
    ring = RINGS["redactor"]
    signer = StageSigner("redactor", ring)
    secret = ring.to_json()
    settings = MeshSettings(signing_keys=secret)
    for text in (repr(signer), str(signer), repr(settings), str(settings)):
        for seed in ring.keys.values():
            assert seed.hex() not in text
        assert secret not in text


def test_loading_checks_the_trust_file_holds_the_stage_key(tmp_path: object) -> None:
    from pathlib import Path

    directory = Path(str(tmp_path))
    trust = directory / "trust.json"
    trust.write_text(Trust.to_json({"redactor": public_keys(RINGS["redactor"])}))
    settings = MeshSettings(signing_keys=RINGS["redactor"].to_json(), trust_file=trust)
    with pytest.raises(KeyRingError, match="no dead-letter key"):
        MeshAuthenticity.load("redactor", TOPICS, settings)
    trust.write_text(Trust.to_json({"redactor": public_keys(RINGS["redactor"])}, KeyRing.generate("dead-letters-1")))
    loaded = MeshAuthenticity.load(
        "redactor", TOPICS, MeshSettings(signing_keys=RINGS["redactor"].to_json(), trust_file=trust)
    )
    assert loaded.signer.key_id == "redactor-1"
    with pytest.raises(KeyRingError, match="does not hold stage ingest"):
        MeshAuthenticity.load("ingest", TOPICS, MeshSettings(signing_keys=RINGS["ingest"].to_json(), trust_file=trust))
    with pytest.raises(KeyRingError, match="AIRLOCK_MESH_SIGNING_KEYS"):
        MeshAuthenticity.load("ingest", TOPICS, MeshSettings(trust_file=trust))
    with pytest.raises(KeyRingError, match="AIRLOCK_MESH_TRUST_FILE"):
        MeshAuthenticity.load("ingest", TOPICS, MeshSettings(signing_keys=RINGS["ingest"].to_json()))


class Recorder:
    """A processor that answers each record with an empty outcome and remembers what it saw."""

    def __init__(self) -> None:
        self.seen: list[Incoming] = []

    async def process(self, batch: Sequence[Incoming]) -> Sequence[Result]:
        self.seen.extend(batch)
        return [Outcome() for _ in batch]

    def give_up(self, incoming: Incoming, error: BaseException) -> Outcome:
        return Outcome()


async def test_refused_records_never_reach_the_handler_and_keep_their_place() -> None:
    inner = Recorder()
    checked = DoorCheckedProcessor(inner, door, StageContext("llm-worker", TOPICS))

    def record(offset: int, headers: list[tuple[str, bytes]], value: bytes = b'{"x":1}') -> Incoming:
        return Incoming(TOPICS.redacted, 0, offset, value, key=b"k", headers=(*headers, (h.AIRLOCK_ID, b"a-1")))

    batch = [
        record(0, signed("redactor", TOPICS.redacted)),
        record(1, []),
        record(2, signed("redactor", TOPICS.redacted), value=b'{"x":"forged"}'),
        record(3, signed("redactor", TOPICS.redacted)),
    ]
    results = await checked.process(batch)
    assert [r.offset for r in inner.seen] == [0, 3]
    assert {r.signed_by for r in inner.seen} == {"redactor"}
    refused = [results[1], results[2]]
    for outcome in refused:
        assert isinstance(outcome, Outcome)
        [letter] = outcome.records
        assert letter.topic == TOPICS.dlq
        assert dict(letter.headers)[h.ERROR_CODE] == b"unauthentic_record"
        [notice] = outcome.events
        assert notice.kind == "notice" and notice.details.error_code == "unauthentic_record"
    assert results[0] == results[3] == Outcome()


def usage_record(input_tokens: int, output_tokens: int = 0) -> bytes:
    import json

    return json.dumps(
        {
            "airlock_id": "a-1",
            "request_id": "r-1",
            "client_id": "billing",
            "tenant": "acme",
            "use_case": "default",
            "model": "gpt-4o-mini",
            "served_model": "gpt-4o-mini",
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            "cost_usd": 0.0,
        }
    ).encode()


@pytest.mark.parametrize("tokens", [-10_000_000, -1])
def test_usage_cannot_be_negative(tokens: int) -> None:
    from pydantic import ValidationError

    from airlock.core.models import UsageRecord

    with pytest.raises(ValidationError):
        UsageRecord.model_validate_json(usage_record(tokens))


def test_ingest_counts_only_the_admission_records_their_stage_signed() -> None:
    """Settlements count when the llm-worker signed them, intents when ingest did."""
    from aiokafka import ConsumerRecord, TopicPartition

    from airlock.core.models import Settlement
    from airlock.ingest.clients import Limits
    from airlock.ingest.feeds import QuotaFeed
    from airlock.ingest.quota import AdmissionIntent

    feed = QuotaFeed(kafka=None, topics=TOPICS, door=door)  # type: ignore[arg-type]
    topic = TOPICS.ingest_admissions
    tp = TopicPartition(topic, 0)

    def consumed(value: bytes, headers: list[tuple[str, bytes]], offset: int) -> ConsumerRecord:
        return ConsumerRecord(topic, 0, offset, 1_000 + offset, 1, b"acme", value, None, 0, 0, headers)

    def settlement(tokens: int) -> bytes:
        return Settlement(airlock_id=f"a-{tokens}", tenant="acme", client_id="c", total_tokens=tokens).to_bytes()

    genuine = settlement(120)
    feed._apply(tp, consumed(genuine, signed("llm-worker", topic, genuine, b"acme"), 0))
    forged = settlement(5_000)
    feed._apply(tp, consumed(forged, [], 1))  # unsigned
    feed._apply(tp, consumed(forged, signed("redactor", topic, forged, b"acme"), 2))  # not a writer of the log
    feed._apply(tp, consumed(forged, signed("ingest", topic, forged, b"acme"), 3))  # a writer, but not of settlements
    feed._apply(tp, consumed(forged, signed("llm-worker", topic, genuine, b"acme"), 4))  # a signature moved
    assert feed.arbiter.tokens_today("tenant", "acme") == 120

    capped = AdmissionIntent(airlock_id="x", tenant="acme", client_id="c", tenant_limits=Limits(max_in_flight=9))
    value = capped.to_bytes()
    feed._apply(tp, consumed(value, signed("llm-worker", topic, value, b"acme"), 5))  # intents are ingest's
    assert feed.arbiter.decision_for("x") is None
    feed._apply(tp, consumed(value, signed("ingest", topic, value, b"acme"), 6))
    assert feed.arbiter.in_flight("tenant", "acme") == 1
