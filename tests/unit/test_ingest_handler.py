"""Ingest's processor on pure inputs: every check, every refusal path, and what each emits."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from airlock.core import headers as h
from airlock.core.lifecycle import State
from airlock.core.models import Envelope, ErrorReply, Settlement, Usage
from airlock.core.pricing import DEFAULT_PRICES
from airlock.core.signing import generate_secret, request_partition, signing_headers
from airlock.core.stage import Incoming, Outcome, StageContext
from airlock.core.topics import Topics
from airlock.ingest.clients import ClientKey, ClientPolicy, ClientRegistry, ClientsFile, Limits
from airlock.ingest.handlers import IngestHandler
from airlock.ingest.noise import NOISE_FLUSH, NoiseTally, counts_by_code, read_seen_entry
from airlock.ingest.quota import Admission, AdmissionArbiter, AdmissionIntent
from airlock.ingest.replay import SeenRecord
from airlock.ingest.settings import IngestSettings

TOPICS = Topics("t.")
NOW = datetime(2025, 6, 1, 12, 0, 30, tzinfo=UTC)
SECRET = generate_secret()
OTHER_SECRET = generate_secret()
KEY = "billing-k1"
PARTITIONS = 3


def policy(**changes: object) -> ClientPolicy:
    base = {
        "keys": {KEY: ClientKey(secret=SECRET, created_at=NOW - timedelta(days=1))},
        "tenants": ["acme"],
        "models": ["gpt-4o-mini"],
        "use_cases": ["default"],
        "reply_topics": ["t.responses.billing", "t.responses.billing.*"],
        "max_prompt_chars": 100,
        "max_tokens": 500,
    }
    return ClientPolicy.model_validate({**base, **changes})


def clients(**changes: object) -> ClientsFile:
    return ClientsFile(tenants={"acme": Limits(), "globex": Limits()}, clients={"billing": policy(**changes)})


class Gate:
    """The admission log in memory: the real arbiter, one log timestamp per call."""

    def __init__(self) -> None:
        self.arbiter = AdmissionArbiter()
        self.log_ms = int(NOW.timestamp() * 1000)
        self.intents: list[AdmissionIntent] = []
        self.fail: Exception | None = None

    async def wait_ready(self, timeout_s: float) -> None:
        return None

    async def admit(self, intents: Sequence[AdmissionIntent], timeout_s: float) -> list[Admission]:
        if self.fail:
            raise self.fail
        self.intents.extend(intents)
        return [decision for intent in intents if (decision := self.arbiter.apply(intent, self.log_ms))]

    def settle(self, tenant: str, tokens: int, cost: float) -> None:
        """What the llm-worker appends to the log with a completion."""
        self.arbiter.apply(
            Settlement(
                airlock_id=f"s-{tokens}-{cost}", tenant=tenant, client_id="billing", total_tokens=tokens, cost_usd=cost
            ),
            self.log_ms,
        )


class ReplyTopicsSeen:
    """Reply topics as a TopicWatch would report them: all exist but those named ``missing``."""

    def __init__(self) -> None:
        self.missing: set[str] = set()
        self.looked_up: list[list[str]] = []

    def exists(self, topic: str) -> bool:
        return topic not in self.missing

    async def look_up(self, names: Sequence[str]) -> None:
        self.looked_up.append(list(names))


class Harness:
    def __init__(self, tmp_path: Path, file: ClientsFile | None = None) -> None:
        self.path = tmp_path / "clients.yaml"
        (file or clients()).save(self.path)
        self.registry = ClientRegistry(self.path)
        self.registry.load()
        self.gate = Gate()
        self.reply_topics = ReplyTopicsSeen()
        self.stored: list[SeenRecord | NoiseTally] = []
        self.offset = 0
        self.now = NOW
        self.handler = IngestHandler(
            StageContext("ingest", TOPICS),
            IngestSettings(max_message_bytes=4096),
            self.registry,
            load_seen=self.load_seen,
            quota=self.gate,
            reply_topics=self.reply_topics,
            partitions=lambda: PARTITIONS,
            clock=lambda: self.now,
            # Every record with the control header counts as ingest's own here; the app
            # checks ingest's signature (tests/security plays a forged one).
            is_control=lambda incoming: True,
        )

    async def flush_noise(self, partition: int = 0) -> Outcome:
        """What ingest's nudge does once the partition's noise window has passed."""
        self.now += timedelta(seconds=IngestSettings().noise_window_s)
        nudge = self.incoming(b'{"control":"noise-flush"}', [(h.CONTROL, NOISE_FLUSH.encode())], partition)
        [outcome] = await self.run(nudge)
        return outcome

    async def load_seen(self, partition: int, since: datetime) -> list[SeenRecord | NoiseTally]:
        return list(self.stored)

    def commit(self, outcomes: Sequence[object]) -> None:
        """Keep the seen records written, as Kafka would, for a later reload."""
        for outcome in outcomes:
            assert isinstance(outcome, Outcome), outcome
            for record in outcome.records:
                if record.topic == TOPICS.ingest_seen:
                    self.stored.append(read_seen_entry(record.value))

    async def run(self, *records: Incoming) -> list[Outcome]:
        results = await self.handler.process(records)
        self.commit(results)
        return list(results)  # type: ignore[arg-type]

    def request(self, request_id: str | None = None, **changes: object) -> dict:
        self.offset += 1
        document = {
            "request_id": request_id or f"r-{self.offset}",
            "client_id": "billing",
            "tenant": "acme",
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "My name is Jane Roe"}],
            "reply_to": "t.responses.billing",
        }
        return {**document, **changes}

    def signed(
        self,
        document: dict | bytes,
        *,
        request_id: str | None = None,
        client_id: str = "billing",
        key_id: str = KEY,
        secret: str = SECRET,
        timestamp: datetime = NOW,
        partition: int | None = None,
        extra_headers: tuple[tuple[str, bytes], ...] = (),
    ) -> Incoming:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        request_id = request_id or (document["request_id"] if isinstance(document, dict) else "raw-1")
        headers = signing_headers(
            base64.b64decode(secret),
            client_id=client_id,
            key_id=key_id,
            timestamp=int(timestamp.timestamp()),
            request_id=request_id,
            body=body,
        )
        home = request_partition(client_id, request_id, PARTITIONS)
        return self.incoming(body, (*headers, *extra_headers), partition=home if partition is None else partition)

    def incoming(self, body: bytes, headers: Sequence[tuple[str, bytes]] = (), partition: int = 0) -> Incoming:
        self.offset += 1
        return Incoming(
            topic="t.requests",
            partition=partition,
            offset=self.offset,
            value=body,
            headers=tuple(headers),
            timestamp_ms=1,
        )


@pytest.fixture
def ingest(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def topics_of(outcome: Outcome) -> list[str]:
    return [record.topic for record in outcome.records]


def error_of(outcome: Outcome) -> ErrorReply:
    [reply] = [r for r in outcome.records if r.topic.startswith("t.responses.billing")]
    return ErrorReply.model_validate_json(reply.value)


def code_of(outcome: Outcome) -> str | None:
    """The refusal's code: its REJECTED event's, or an unauthenticated record's dead letter's."""
    if not outcome.events:
        [dead] = [r for r in outcome.records if r.topic == TOPICS.dlq]
        return dict(dead.headers)[h.ERROR_CODE].decode()
    last = outcome.events[-1]
    assert last.to_state == State.REJECTED
    return last.details.error_code


async def test_signed_request_is_forwarded_remembered_and_audited(ingest: Harness) -> None:
    [outcome] = await ingest.run(ingest.signed(ingest.request("r-1")))

    assert topics_of(outcome) == ["t.accepted", "t.ingest.seen"]
    envelope = Envelope.model_validate_json(outcome.records[0].value)
    assert envelope.state == State.ACCEPTED and envelope.request.request_id == "r-1"
    seen = SeenRecord.model_validate_json(outcome.records[1].value)
    assert seen.accepted and seen.client_id == "billing" and seen.request_id == "r-1"
    assert outcome.records[1].partition == request_partition("billing", "r-1", PARTITIONS)
    assert [(e.from_state, e.to_state) for e in outcome.events] == [
        (None, State.RECEIVED),
        (State.RECEIVED, State.ACCEPTED),
    ]
    assert outcome.events[-1].client_id == "billing" and outcome.events[-1].tenant == "acme"
    audit = b"".join(e.to_bytes() for e in outcome.events)
    assert b"Jane" not in audit


async def test_same_record_gets_same_ids_when_reprocessed(ingest: Harness) -> None:
    record = ingest.signed(ingest.request())
    first = await ingest.handler.process([record])
    ingest.handler.on_reset(record.partition)  # a crash before the commit: nothing was stored
    second = await ingest.handler.process([record])
    assert [e.event_id for e in first[0].events] == [e.event_id for e in second[0].events]  # type: ignore[union-attr]
    assert topics_of(second[0]) == ["t.accepted", "t.ingest.seen"]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        ("unsigned", "signature_missing"),
        ("no-timestamp", "signature_missing"),
        ("wrong-secret", "signature_invalid"),
        ("body-changed", "signature_invalid"),
        ("malformed-signature", "signature_invalid"),
        ("unknown-key", "unknown_key"),
        ("unknown-client", "unknown_client"),
        ("expired-timestamp", "timestamp_out_of_window"),
        ("future-timestamp", "timestamp_out_of_window"),
        ("non-utf8-header", "bad_header"),
        ("bad-timestamp", "bad_header"),
    ],
)
async def test_unauthenticated_records_go_to_dlq_only_with_an_audit_event(
    ingest: Harness, tamper: str, code: str
) -> None:
    document = ingest.request("r-x")
    body = json.dumps(document).encode()
    good = ingest.signed(document)
    headers = dict(good.headers)
    if tamper == "unsigned":
        record = ingest.incoming(body, [(h.REQUEST_ID, b"r-x"), (h.REPLY_TO, b"t.responses.billing")])
    elif tamper == "no-timestamp":
        record = ingest.incoming(body, [(k, v) for k, v in good.headers if k != h.TIMESTAMP])
    elif tamper == "wrong-secret":
        record = ingest.signed(document, secret=OTHER_SECRET)
    elif tamper == "body-changed":
        record = ingest.incoming(body.replace(b"Jane", b"John"), good.headers, good.partition)
    elif tamper == "malformed-signature":
        record = ingest.incoming(body, [*good.headers, (h.SIGNATURE, b"v1=zz")], good.partition)
    elif tamper == "unknown-key":
        record = ingest.signed(document, key_id="billing-k9")
    elif tamper == "unknown-client":
        record = ingest.signed(document, client_id="stranger")
    elif tamper == "expired-timestamp":
        record = ingest.signed(document, timestamp=NOW - timedelta(seconds=301))
    elif tamper == "future-timestamp":
        record = ingest.signed(document, timestamp=NOW + timedelta(seconds=301))
    elif tamper == "non-utf8-header":
        record = ingest.incoming(body, [*good.headers, (h.KEY_ID, b"\xff")], good.partition)
    else:
        record = ingest.incoming(body, [*good.headers, (h.TIMESTAMP, b"yesterday")], good.partition)
    assert headers  # the good record had headers to tamper with

    [outcome] = await ingest.run(record)

    assert topics_of(outcome) == ["t.dlq", "t.ingest.seen"], "an unauthenticated sender is never answered"
    assert dict(outcome.records[0].headers)[h.ERROR_CODE] == code.encode()
    assert outcome.records[0].value == record.value
    assert code_of(outcome) == code
    assert outcome.events == [], "noise is counted in the partition's tally, not audited one by one"
    flushed = await ingest.flush_noise(record.partition)
    [notice] = flushed.events
    assert notice.kind == "notice" and notice.details.extra and notice.details.extra["count"] == 1
    assert counts_by_code(notice.details) == {code: 1}
    assert notice.request_id == "r-x" and notice.client_id is None
    emitted = b"".join(r.value for r in outcome.records) + b"".join(e.to_bytes() for e in flushed.events)
    emitted += b"".join(v for r in outcome.records for _, v in r.headers)
    for secret in (SECRET, OTHER_SECRET):
        assert secret.encode() not in emitted
        assert base64.b64decode(secret).hex().encode() not in emitted


async def test_expired_key_is_refused_and_a_valid_second_key_works(tmp_path: Path) -> None:
    keys = {
        KEY: ClientKey(secret=SECRET, created_at=NOW - timedelta(days=2), not_after=NOW - timedelta(seconds=1)),
        "billing-k2": ClientKey(secret=OTHER_SECRET, created_at=NOW - timedelta(hours=1)),
    }
    ingest = Harness(tmp_path, clients(keys=keys))

    old, new = await ingest.run(
        ingest.signed(ingest.request()), ingest.signed(ingest.request(), key_id="billing-k2", secret=OTHER_SECRET)
    )

    assert code_of(old) == "key_expired" and topics_of(old) == ["t.dlq", "t.ingest.seen"]
    assert b"billing-k1" in dict(old.records[0].headers)[h.DLQ_REASON], "the dead letter says which key"
    assert topics_of(new)[0] == "t.accepted"


async def test_signed_malformed_body_is_malformed_and_answered(ingest: Harness) -> None:
    record = ingest.signed(
        b"\xff\xfe not {json", request_id="bad-1", extra_headers=((h.REPLY_TO, b"t.responses.billing"),)
    )

    [outcome] = await ingest.run(record)

    assert topics_of(outcome) == ["t.responses.billing", "t.dlq", "t.ingest.seen"]
    reply = error_of(outcome)
    assert (reply.code, reply.request_id, reply.stage) == ("malformed", "bad-1", "ingest")
    assert outcome.events[-1].client_id == "billing"


async def test_signed_schema_invalid_body_is_answered_from_body_addressing(ingest: Harness) -> None:
    document = {"request_id": "inv-1", "reply_to": "t.responses.billing", "tenant": "acme", "messages": "no"}

    [outcome] = await ingest.run(ingest.signed(document))

    assert error_of(outcome).code == "schema_invalid"


async def test_replayed_record_is_refused_naming_the_original(ingest: Harness) -> None:
    original = ingest.signed(ingest.request("r-7"))
    replay = ingest.incoming(original.value, original.headers, original.partition)

    first, second = await ingest.run(original, replay)
    ingest.handler.on_reset(original.partition)  # also after a restart (state read back)
    [third] = await ingest.run(ingest.incoming(original.value, original.headers, original.partition))

    assert topics_of(first)[0] == "t.accepted"
    for refused in (second, third):
        reply = error_of(refused)
        assert reply.code == "replayed"
        assert reply.duplicate_of == first.events[0].airlock_id
        assert refused.events[-1].details.extra == {"key_id": KEY, "duplicate_of": reply.duplicate_of}
        assert "t.accepted" not in topics_of(refused)


async def test_duplicate_request_id_is_refused_and_survives_a_reload(ingest: Harness) -> None:
    [first] = await ingest.run(ingest.signed(ingest.request("r-8")))
    [again] = await ingest.run(ingest.signed(ingest.request("r-8"), timestamp=NOW - timedelta(seconds=5)))
    ingest.handler.on_reset(request_partition("billing", "r-8", PARTITIONS))
    [after_restart] = await ingest.run(ingest.signed(ingest.request("r-8"), timestamp=NOW - timedelta(seconds=9)))

    original = first.events[0].airlock_id
    for refused in (again, after_restart):
        reply = error_of(refused)
        assert (reply.code, reply.duplicate_of, reply.request_id) == ("duplicate_request", original, "r-8")
        assert "t.accepted" not in topics_of(refused)


async def test_duplicates_within_one_batch_reach_the_pipeline_once(ingest: Harness) -> None:
    outcomes = await ingest.run(
        ingest.signed(ingest.request("r-9")),
        ingest.signed(ingest.request("r-9"), timestamp=NOW - timedelta(seconds=1)),
    )
    assert [topics_of(o)[0] for o in outcomes] == ["t.accepted", "t.responses.billing"]
    assert error_of(outcomes[1]).code == "duplicate_request"


async def test_refused_request_id_may_be_retried(tmp_path: Path) -> None:
    ingest = Harness(tmp_path, clients(limits={"requests_per_minute": 0}))
    [refused] = await ingest.run(ingest.signed(ingest.request("r-10")))
    assert error_of(refused).code == "rate_limited"
    ingest.registry.current = clients()
    [retried] = await ingest.run(ingest.signed(ingest.request("r-10"), timestamp=NOW - timedelta(seconds=2)))
    assert topics_of(retried)[0] == "t.accepted"


async def test_body_must_match_the_signed_ids(ingest: Harness) -> None:
    document = ingest.request("r-11", client_id="someone-else")
    [outcome] = await ingest.run(ingest.signed(document, request_id="r-11"))
    assert error_of(outcome).code == "identity_mismatch"
    [outcome] = await ingest.run(ingest.signed(ingest.request("r-12"), request_id="r-13"))
    assert error_of(outcome).code == "identity_mismatch"


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"tenant": "initech"}, "unknown_tenant"),
        ({"tenant": "globex"}, "tenant_not_allowed"),
        ({"model": "gpt-4o"}, "model_not_allowed"),
        ({"use_case": "hr"}, "use_case_not_allowed"),
        ({"messages": [{"role": "user", "content": "x" * 101}]}, "too_large"),
        ({"params": {"max_tokens": 501}}, "param_not_allowed"),
        ({"reply_to": "t.responses.billing.eu"}, None),
        ({"params": {"max_tokens": 500}}, None),
    ],
)
async def test_authorization_is_deny_by_default(ingest: Harness, changes: dict, code: str | None) -> None:
    [outcome] = await ingest.run(ingest.signed(ingest.request(**changes)))

    if code is None:
        assert topics_of(outcome)[0] == "t.accepted"
        return
    reply = error_of(outcome)
    assert reply.code == code and reply.request_id and reply.message
    assert code_of(outcome) == code
    assert "t.dlq" in topics_of(outcome)
    assert outcome.events[-1].client_id == "billing"


@pytest.mark.parametrize("reply_to", ["t.responses.payroll", "t.dlq", "payments.secrets"])
async def test_reply_topic_outside_the_grant_is_refused_on_the_clients_own_topic(
    ingest: Harness, reply_to: str
) -> None:
    [outcome] = await ingest.run(ingest.signed(ingest.request(reply_to=reply_to)))

    assert topics_of(outcome) == ["t.responses.billing", "t.dlq", "t.ingest.seen"]
    assert code_of(outcome) == "reply_topic_not_allowed"


async def test_other_errors_of_a_client_naming_a_foreign_reply_topic_go_to_its_own(ingest: Harness) -> None:
    [outcome] = await ingest.run(ingest.signed(ingest.request(reply_to="t.responses.payroll", tenant="globex")))
    assert topics_of(outcome) == ["t.responses.billing", "t.dlq", "t.ingest.seen"]


async def test_a_reply_topic_that_does_not_exist_is_refused_up_front(ingest: Harness) -> None:
    """A reply to a missing topic could never be committed: the partition would wedge on it."""
    ingest.registry.current.clients["billing"].reply_topics.append("t.responses.*")
    ingest.reply_topics.missing = {"t.responses.nowhere"}

    [outcome] = await ingest.run(ingest.signed(ingest.request(reply_to="t.responses.nowhere")))

    assert code_of(outcome) == "reply_topic_not_allowed"
    assert topics_of(outcome) == ["t.responses.billing", "t.dlq", "t.ingest.seen"]
    assert ["t.responses.billing", "t.responses.nowhere"] in ingest.reply_topics.looked_up


async def test_no_reply_at_all_when_even_the_clients_own_topic_is_missing(ingest: Harness) -> None:
    ingest.reply_topics.missing = {"t.responses.billing"}
    [outcome] = await ingest.run(ingest.signed(ingest.request(tenant="globex")))
    assert topics_of(outcome) == ["t.dlq", "t.ingest.seen"]


async def test_an_unreadable_body_is_answered_on_the_clients_own_topic_never_the_unsigned_header(
    ingest: Harness,
) -> None:
    record = ingest.signed(b"{not json", request_id="raw-1", extra_headers=((h.REPLY_TO, b"t.responses.payroll"),))
    [outcome] = await ingest.run(record)
    assert code_of(outcome) == "malformed"
    assert topics_of(outcome)[0] == "t.responses.billing"


async def test_requests_per_minute_are_admitted_by_the_log(tmp_path: Path) -> None:
    file = clients().with_tenant("acme", Limits(requests_per_minute=2))
    ingest = Harness(tmp_path, file)

    outcomes = await ingest.run(*(ingest.signed(ingest.request()) for _ in range(4)))

    assert [topics_of(o)[0] for o in outcomes] == [
        "t.accepted",
        "t.accepted",
        "t.responses.billing",
        "t.responses.billing",
    ]
    refusal = error_of(outcomes[2])
    assert refusal.code == "rate_limited" and "tenant 'acme'" in refusal.message
    assert refusal.retry_after == pytest.approx(60.0)  # both admissions leave the window in 60 s
    assert [i.tenant_limits.requests_per_minute for i in ingest.gate.intents] == [2, 2, 2, 2]
    ingest.gate.log_ms += 60_000  # the window has passed
    [later] = await ingest.run(ingest.signed(ingest.request()))
    assert topics_of(later)[0] == "t.accepted"


async def test_client_rate_limit_applies_on_top_of_the_tenants(tmp_path: Path) -> None:
    ingest = Harness(tmp_path, clients(limits={"requests_per_minute": 1}))
    first, second = await ingest.run(ingest.signed(ingest.request()), ingest.signed(ingest.request()))
    assert topics_of(first)[0] == "t.accepted"
    assert error_of(second).code == "rate_limited" and "client 'billing'" in error_of(second).message


async def test_no_admission_round_trip_without_any_limit(ingest: Harness) -> None:
    await ingest.run(ingest.signed(ingest.request()))
    assert ingest.gate.intents == []


@pytest.mark.parametrize(
    ("limits", "code", "retry_after"),
    [
        (Limits(tokens_per_day=1000), "token_quota_exceeded", 11 * 3600 + 59 * 60 + 30),
        (Limits(cost_per_month_usd=0.5), "budget_exceeded", 29 * 86400 + 11 * 3600 + 59 * 60 + 30),
    ],
)
async def test_budgets_refuse_with_retry_after(tmp_path: Path, limits: Limits, code: str, retry_after: int) -> None:
    ingest = Harness(tmp_path, clients().with_tenant("acme", limits))
    ingest.gate.settle("acme", 999, 0.49)
    [allowed] = await ingest.run(ingest.signed(ingest.request()))
    ingest.gate.settle("acme", 1, 0.01)
    [refused] = await ingest.run(ingest.signed(ingest.request()))

    assert topics_of(allowed)[0] == "t.accepted"
    reply = error_of(refused)
    assert reply.code == code and reply.retry_after == pytest.approx(retry_after)
    assert code_of(refused) == code


async def test_the_intent_reserves_the_prompt_and_max_tokens_at_the_models_price(tmp_path: Path) -> None:
    ingest = Harness(tmp_path, clients(limits={"max_in_flight": 5}))
    document = ingest.request()
    await ingest.run(ingest.signed(document))
    [intent] = ingest.gate.intents
    prompt = sum(len(m["content"].encode()) for m in document["messages"])
    completion = document.get("params", {}).get("max_tokens") or 500  # else the client's max_tokens
    assert intent.tokens >= prompt + completion and intent.client_limits.max_in_flight == 5
    assert intent.cost_usd == pytest.approx(
        DEFAULT_PRICES.cost(document["model"], Usage(input_tokens=intent.tokens - completion, output_tokens=completion))
    )
    assert intent.cost_usd > 0 and intent.deadline_ms > int(NOW.timestamp() * 1000)


async def test_record_on_a_foreign_partition_is_moved_home_unchanged(ingest: Harness) -> None:
    document = ingest.request("r-20")
    home = request_partition("billing", "r-20", PARTITIONS)
    stray = ingest.signed(document, partition=(home + 1) % PARTITIONS)

    [outcome] = await ingest.run(stray)

    [moved] = outcome.records
    assert (moved.topic, moved.partition, moved.value) == ("t.requests", home, stray.value)
    assert dict(moved.headers)[h.REROUTED_FROM] == stray.source.encode()
    assert dict(moved.headers)[h.SIGNATURE] == dict(stray.headers)[h.SIGNATURE]
    assert outcome.events == []


async def test_unavailable_quota_state_means_retry_then_fail_closed(tmp_path: Path) -> None:
    ingest = Harness(tmp_path, clients().with_tenant("acme", Limits(requests_per_minute=5)))
    ingest.gate.fail = TimeoutError("admission log down")
    record = ingest.signed(ingest.request("r-30"))

    [result] = await ingest.handler.process([record])

    assert isinstance(result, TimeoutError)
    final = ingest.handler.give_up(record, result)
    assert error_of(final).code == "internal"
    assert "t.accepted" not in topics_of(final)
    unsigned = ingest.incoming(record.value, [(h.REPLY_TO, b"t.responses.billing")])
    assert topics_of(ingest.handler.give_up(unsigned, result)) == ["t.dlq"]


async def test_clients_file_change_applies_to_the_next_batch(ingest: Harness) -> None:
    [before] = await ingest.run(ingest.signed(ingest.request(model="gpt-4o")))
    clients(models=["gpt-4o-mini", "gpt-4o"]).save(ingest.path)
    assert ingest.registry.refresh()
    [after] = await ingest.run(ingest.signed(ingest.request(model="gpt-4o")))
    assert error_of(before).code == "model_not_allowed"
    assert topics_of(after)[0] == "t.accepted"


async def test_oversized_record_is_refused_after_authentication(ingest: Harness) -> None:
    big = ingest.request("r-40", metadata={"padding": "p" * 5000})
    [outcome] = await ingest.run(ingest.signed(big))
    reply = error_of(outcome)
    assert reply.code == "too_large" and "4096" in reply.message


async def test_a_trickle_of_noise_costs_one_notice_per_window_and_survives_a_rebalance(ingest: Harness) -> None:
    unsigned = [ingest.incoming(f"noise {n}".encode(), [(h.CLIENT_ID, f"claims-{n % 3}".encode())]) for n in range(30)]
    events = []
    for n, record in enumerate(unsigned):  # one record per poll, as a slow trickle arrives
        if n == 15:
            ingest.handler.on_reset(0)  # a rebalance: the tally is read back from ingest.seen
        ingest.now += timedelta(seconds=10)
        [outcome] = await ingest.run(record)
        assert topics_of(outcome)[0] == "t.dlq"
        events += outcome.events
    flushed = await ingest.flush_noise()
    events += flushed.events
    notices = [e for e in events if e.kind == "notice"]
    assert sum(n.details.extra["count"] for n in notices if n.details.extra) == 30, "every record counted once"
    # 30 records at 10 s apart span 300 s: within one 600 s window, so one notice for them all.
    [notice] = notices
    assert notice.details.extra and notice.details.extra["claimed.claims-0"] == 10
    assert notice.details.extra["first_offset"] == unsigned[0].offset
    assert notice.details.extra["last_offset"] == unsigned[-1].offset
    assert (await ingest.flush_noise()).events == [], "nothing pending after the notice"


async def test_a_long_trickle_is_sealed_window_by_window(ingest: Harness) -> None:
    window = IngestSettings().noise_window_s
    counted = 0
    notices = []
    for _ in range(25):
        ingest.now += timedelta(seconds=window / 10)
        [outcome] = await ingest.run(ingest.incoming(b"noise"))
        notices += [e for e in outcome.events if e.kind == "notice"]
        counted += 1
    notices += (await ingest.flush_noise()).events
    assert sum(n.details.extra["count"] for n in notices if n.details.extra) == counted
    assert 2 <= len(notices) <= 3, f"{len(notices)} notices for {counted} records over 2.5 windows"
