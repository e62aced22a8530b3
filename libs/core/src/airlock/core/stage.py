"""What a stage handler works with: incoming records, outcomes, and the builders for them.

Nothing here talks to Kafka. A handler turns each :class:`Incoming` record into an
:class:`Outcome` — the records to publish and the audit events to record — and the stage
runtime (:mod:`airlock.core.runtime`) commits each outcome atomically with the input offset.
"""

from __future__ import annotations

import hashlib
import inspect
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from pydantic import ValidationError

from airlock.core import headers as h
from airlock.core.errors import ErrorCode, StageError
from airlock.core.lanes import lane_key
from airlock.core.lifecycle import State, check_transition
from airlock.core.models import (
    AuditDetails,
    AuditEvent,
    CompletionReply,
    Envelope,
    ErrorReply,
    LLMRequest,
    utcnow,
)
from airlock.core.topics import Topics

_NAMESPACE = uuid.UUID("6f1c1a52-3f0e-4b8e-9a57-0c4c1d0a1a7e")

Header = tuple[str, bytes]


@dataclass(frozen=True)
class Incoming:
    """One input record, as the handler sees it.

    Attributes:
        topic: Source topic.
        partition: Source partition.
        offset: Source offset.
        key: Record key, if any.
        value: The exact bytes published.
        headers: Record headers, in order.
        timestamp_ms: The record's timestamp.
        signed_by: The stage whose signature the runtime verified at the door, if the
            topic is one that stages write (see :mod:`airlock.core.authenticity`).
    """

    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None
    headers: tuple[Header, ...] = ()
    timestamp_ms: int = 0
    signed_by: str | None = None

    @property
    def source(self) -> str:
        """``topic/partition/offset``: where this record came from."""
        return f"{self.topic}/{self.partition}/{self.offset}"

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` as text, or ``None`` when absent.

        Raises:
            StageError: ``bad_header`` when the value is not UTF-8.
        """
        raw = self.header_bytes(name)
        if raw is None:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise StageError(ErrorCode.BAD_HEADER, f"header {name} is not valid UTF-8") from None

    def header_bytes(self, name: str) -> bytes | None:
        """The last raw value of header ``name``, or ``None``."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found

    def safe_header(self, name: str) -> str | None:
        """Like :meth:`header`, but ``None`` for a value that is not UTF-8."""
        try:
            return self.header(name)
        except StageError:
            return None


@dataclass(frozen=True)
class Outgoing:
    """A record to publish as part of an outcome."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: tuple[Header, ...] = ()
    partition: int | None = None


@dataclass
class Outcome:
    """What processing one input record produced; committed atomically with its offset."""

    records: list[Outgoing] = field(default_factory=list)
    events: list[AuditEvent] = field(default_factory=list)

    def __add__(self, other: Outcome) -> Outcome:
        return Outcome(self.records + other.records, self.events + other.events)


Result = Outcome | BaseException


class Processor(Protocol):
    """A stage's handler for one input topic.

    ``process`` returns one result per record, in order. An exception in place of an
    outcome means "not done, try again": the runtime commits the outcomes before it,
    rewinds to it and retries it with backoff; after the configured attempts it asks
    ``give_up`` for the record's terminal outcome (an audited failure).
    """

    async def process(self, batch: Sequence[Incoming]) -> Sequence[Result]:
        """Process a batch of records from one partition, in offset order."""
        ...

    def give_up(self, incoming: Incoming, error: BaseException) -> Outcome:
        """The terminal outcome of a record that kept failing."""
        ...


class PartitionAware(Protocol):
    """Optional hooks for processors that keep per-partition state (the auditor's chain).

    ``on_reset`` is called when the runtime takes a partition, gives it up, or discards
    work not yet committed on it: state derived from uncommitted work must be dropped.
    """

    def on_reset(self, partition: int) -> None:
        """Forget in-memory state of ``partition``; reload it from Kafka when next needed."""
        ...


class RecordProcessor:
    """Adapts a per-record handler to :class:`Processor`, isolating failures per record.

    Args:
        handle: Turns one record into an outcome; may raise to ask for a retry.
        give_up: Builds the terminal outcome after the last failed attempt.
    """

    def __init__(
        self,
        handle: Callable[[Incoming], Outcome | Awaitable[Outcome]],
        give_up: Callable[[Incoming, BaseException], Outcome],
    ) -> None:
        self._handle = handle
        self._give_up = give_up

    async def process(self, batch: Sequence[Incoming]) -> Sequence[Result]:
        """Handle each record in turn; an exception stands in for its outcome."""
        results: list[Result] = []
        for incoming in batch:
            try:
                outcome = self._handle(incoming)
                if inspect.isawaitable(outcome):
                    outcome = await outcome
                results.append(outcome)
            except Exception as error:
                results.append(error)
        return results

    def give_up(self, incoming: Incoming, error: BaseException) -> Outcome:
        """Delegate to the configured ``give_up``."""
        return self._give_up(incoming, error)


def airlock_id_for(incoming: Incoming) -> str:
    """Airlock's id for a request record: stable for the record, unique across records.

    The record's position and timestamp identify it; reprocessing the same record after a
    crash yields the same id, so every event derived from it deduplicates.
    """
    name = f"{incoming.topic}/{incoming.partition}/{incoming.offset}/{incoming.timestamp_ms}"
    return str(uuid.uuid5(_NAMESPACE, name))


def event_id_for(airlock_id: str, kind: str) -> str:
    """Deterministic audit event id for one transition (or notice) of one request."""
    return str(uuid.uuid5(_NAMESPACE, f"{airlock_id}|{kind}"))


def prompt_digest(request: LLMRequest) -> str:
    """SHA-256 over the messages (role and content), for audit without the text."""
    digest = hashlib.sha256()
    for message in request.messages:
        digest.update(message.role.encode())
        digest.update(b"\x00")
        digest.update(message.content.encode())
        digest.update(b"\x01")
    return digest.hexdigest()


def _trace_headers(incoming: Incoming | None) -> tuple[Header, ...]:
    if incoming is None:
        return ()
    return tuple((k, v) for k, v in incoming.headers if k in h.TRACE_HEADERS)


@dataclass(frozen=True)
class StageContext:
    """The builders a stage uses to express its outcomes.

    Attributes:
        stage: The service name written into audit events and DLQ records.
        topics: Topic names under the configured prefix.
    """

    stage: str
    topics: Topics

    # -- audit ---------------------------------------------------------------------------

    def transition(
        self,
        airlock_id: str,
        source: State | None,
        target: State,
        *,
        request: LLMRequest | None = None,
        request_id: str | None = None,
        details: AuditDetails | None = None,
        at: datetime | None = None,
    ) -> AuditEvent:
        """The audit event for ``source → target``; illegal transitions raise (a bug)."""
        check_transition(source, target)
        return AuditEvent(
            event_id=event_id_for(airlock_id, target.value),
            airlock_id=airlock_id,
            request_id=request.request_id if request else request_id,
            client_id=request.client_id if request else None,
            tenant=request.tenant if request else None,
            stage=self.stage,
            kind="transition",
            from_state=source,
            to_state=target,
            at=at or utcnow(),
            details=details or AuditDetails(),
        )

    def notice(self, airlock_id: str, name: str, *, request_id: str | None, details: AuditDetails) -> AuditEvent:
        """An audit event that is not a lifecycle transition (poison record, anomaly…)."""
        return AuditEvent(
            event_id=event_id_for(airlock_id, f"notice:{self.stage}:{name}"),
            airlock_id=airlock_id,
            request_id=request_id,
            stage=self.stage,
            kind="notice",
            from_state=None,
            to_state=None,
            details=details,
        )

    # -- records ------------------------------------------------------------------------

    def forward(self, topic: str, envelope: Envelope, incoming: Incoming | None) -> Outgoing:
        """Pass ``envelope`` on to the next stage's topic, keeping the trace context, in its lane."""
        request = envelope.request
        value = envelope.to_bytes()
        return Outgoing(
            topic=topic,
            value=value,
            key=lane_key(envelope.airlock_id, len(value)),
            headers=(
                (h.AIRLOCK_ID, envelope.airlock_id.encode()),
                (h.REQUEST_ID, request.request_id.encode()),
                *_trace_headers(incoming),
            ),
        )

    def reply(self, reply_to: str, reply: CompletionReply | ErrorReply, incoming: Incoming | None) -> Outgoing:
        """Publish ``reply`` to the caller's reply topic, keyed by its request id."""
        request_id = reply.request_id or ""
        return Outgoing(
            topic=reply_to,
            value=reply.to_bytes(),
            key=request_id.encode() or None,
            headers=(
                (h.AIRLOCK_ID, reply.airlock_id.encode()),
                (h.REQUEST_ID, request_id.encode()),
                (h.REPLY_KIND, reply.kind.encode()),
                *_trace_headers(incoming),
            ),
        )

    def dead_letter(self, incoming: Incoming, code: ErrorCode, reason: str, airlock_id: str) -> Outgoing:
        """The original record, byte for byte, with the reason in ``airlock-dlq-*`` headers."""
        return Outgoing(
            topic=self.topics.dlq,
            value=incoming.value,
            key=incoming.key,
            headers=(
                *incoming.headers,
                (h.DLQ_STAGE, self.stage.encode()),
                (h.DLQ_SOURCE, incoming.source.encode()),
                (h.ERROR_CODE, code.value.encode()),
                (h.DLQ_REASON, reason.encode()),
                (h.AIRLOCK_ID, airlock_id.encode()),
            ),
        )

    # -- terminal failures ----------------------------------------------------------------

    def fail(
        self,
        incoming: Incoming,
        error: StageError,
        *,
        airlock_id: str,
        source: State | None,
        target: State,
        request: LLMRequest | None = None,
        request_id: str | None = None,
        reply_to: str | None = None,
        client_id: str | None = None,
        details: AuditDetails | None = None,
        preceding: Sequence[AuditEvent] = (),
    ) -> Outcome:
        """End a request with a structured error: reply (if addressable), DLQ, audit.

        Args:
            incoming: The record being processed (goes to the DLQ as is).
            error: Code and human message for the caller.
            airlock_id: The request's Airlock id.
            source: The request's state before the failure.
            target: The terminal state (REJECTED, BLOCKED or FAILED).
            request: The decoded request, when it could be decoded.
            request_id: The caller's id when the request could not be decoded.
            reply_to: Where to send the error; ignored unless it is an allowed reply topic.
            client_id: The authenticated client when the request could not be decoded.
            details: Extra audit facts.
            preceding: Audit events to record before the failure (e.g. RECEIVED).
        """
        request_id = request.request_id if request else request_id
        reply_to = request.reply_to if request else reply_to
        client_id = request.client_id if request else client_id
        base = details or AuditDetails()
        details = base.model_copy(update={"error_code": error.code.value, "error_message": error.message})
        records = [self.dead_letter(incoming, error.code, error.message, airlock_id)]
        if reply_to and self.topics.is_reply_topic(reply_to):
            reply = ErrorReply(
                request_id=request_id,
                airlock_id=airlock_id,
                client_id=client_id,
                code=error.code.value,
                message=error.message,
                stage=self.stage,
                retry_after=error.retry_after,
                duplicate_of=error.duplicate_of,
            )
            records.insert(0, self.reply(reply_to, reply, incoming))
        event = self.transition(airlock_id, source, target, request=request, request_id=request_id, details=details)
        return Outcome(records=records, events=[*preceding, event])

    def poison(self, incoming: Incoming, error: StageError) -> Outcome:
        """An internal record that cannot be read: DLQ it and record a notice.

        Internal topics are written only by Airlock's stages, so this means a bug or a
        foreign writer; the request (if any) cannot be moved along its lifecycle from here.
        """
        airlock_id = incoming.safe_header(h.AIRLOCK_ID) or airlock_id_for(incoming)
        details = AuditDetails(error_code=error.code.value, error_message=error.message, source=incoming.source)
        return Outcome(
            records=[self.dead_letter(incoming, error.code, error.message, airlock_id)],
            events=[
                self.notice(
                    airlock_id,
                    f"poison:{incoming.source}",
                    request_id=incoming.safe_header(h.REQUEST_ID),
                    details=details,
                )
            ],
        )


def read_envelope(incoming: Incoming, *states: State) -> Envelope:
    """Decode an internal record into an :class:`Envelope` in one of ``states``.

    Raises:
        StageError: ``schema_invalid`` when the record is not an envelope in those states.
    """
    try:
        envelope = Envelope.model_validate_json(incoming.value)
    except ValueError as error:
        first = error.errors()[0] if isinstance(error, ValidationError) and error.errors() else None
        where = ".".join(str(p) for p in first["loc"]) if first else "(root)"
        raise StageError(ErrorCode.SCHEMA_INVALID, f"not an envelope (at {where})") from None
    if states and envelope.state not in states:
        expected = ", ".join(states)
        raise StageError(ErrorCode.SCHEMA_INVALID, f"envelope in state {envelope.state}; expected {expected}")
    return envelope


def deadline_after(received_at: datetime, seconds: float) -> datetime:
    """The instant ``seconds`` after ``received_at``."""
    return received_at + timedelta(seconds=seconds)
