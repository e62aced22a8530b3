"""Ingest's processor: request record in; accepted envelope or structured refusal out.

Per record, in order: authenticate (signature) → move to its home partition if it arrived
elsewhere → replay → size and schema → identity (body vs signed headers) → authorization →
duplicate request id → admission (rate, in-flight, token and cost limits). The first five
need nothing but the record and the clients file; replays and duplicates need the
partition's :class:`~airlock.ingest.replay.SeenBook`; admission the shared
:class:`QuotaGate`, which reserves each admitted request's estimated spend (see
:mod:`airlock.ingest.quota`). A batch's admissions go to the admission log together, so a
batch costs one round trip, not one per record; requests without any limit skip it.

Who hears about a refusal: an unauthenticated record gets no reply (anyone could otherwise
make Airlock write errors into someone's reply topic); an authenticated one gets its error
on its reply topic when its client may use that topic. Every refusal goes to the DLQ. An
authenticated one is audited as its request's lifecycle (RECEIVED → REJECTED with the error
code); unauthenticated ones are summed up in one notice per partition and window
(:mod:`airlock.ingest.noise`), so noise costs the ledger a record per window rather than two
per record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from airlock.core import headers as h
from airlock.core.errors import ErrorCode, StageError
from airlock.core.jsondoc import NotJSON, parse_json
from airlock.core.lifecycle import State
from airlock.core.models import AuditDetails, AuditEvent, Envelope, LLMRequest, Usage, utcnow
from airlock.core.pricing import DEFAULT_PRICES, PriceTable
from airlock.core.signing import request_partition
from airlock.core.stage import (
    Incoming,
    Outcome,
    Outgoing,
    Result,
    StageContext,
    airlock_id_for,
    deadline_after,
    prompt_digest,
)
from airlock.ingest.auth import Sender, authenticate, claimed_client
from airlock.ingest.clients import ClientPolicy, ClientRegistry, ClientsFile, Limits
from airlock.ingest.noise import NOISE_FLUSH, NoiseTally, Unauthenticated
from airlock.ingest.policy import authorize, may_reply
from airlock.ingest.quota import Admission, AdmissionIntent, estimate_tokens
from airlock.ingest.replay import SeenBook, SeenRecord
from airlock.ingest.settings import IngestSettings
from airlock.ingest.validation import addressing, parse_request

log = logging.getLogger("airlock.ingest")

SeenLoader = Callable[[int, datetime], Awaitable[Sequence[SeenRecord | NoiseTally]]]
"""``(partition, since) → seen records`` (and noise tallies) of that request partition, oldest first."""

ControlCheck = Callable[[Incoming], bool]
"""Whether a record on the request topic is ingest's own control record (signed by ingest)."""


@dataclass(frozen=True)
class _Control:
    """Ingest's own nudge on a request partition (:data:`~airlock.ingest.noise.NOISE_FLUSH`)."""

    incoming: Incoming


class ReplyTopics(Protocol):
    """Which reply topics exist (:class:`~airlock.ingest.feeds.TopicWatch`)."""

    def exists(self, topic: str) -> bool:
        """Whether ``topic`` exists, as last read."""
        ...

    async def look_up(self, names: Sequence[str]) -> None:
        """Read the topics again if one of ``names`` is not known (rate-limited)."""
        ...


class QuotaGate(Protocol):
    """Shared quota state: the admission log (:class:`~airlock.ingest.feeds.QuotaFeed`)."""

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until the state is read up."""
        ...

    async def admit(self, intents: Sequence[AdmissionIntent], timeout_s: float) -> list[Admission]:
        """The admission log's decisions on ``intents``."""
        ...


def request_details(request: LLMRequest, source: str) -> AuditDetails:
    """What the audit log keeps about a request: its shape and a digest, never its text."""
    return AuditDetails(
        model=request.model,
        use_case=request.use_case,
        prompt_sha256=prompt_digest(request),
        prompt_chars=request.prompt_chars(),
        message_count=len(request.messages),
        source=source,
    )


@dataclass(frozen=True)
class _Candidate:
    """A record that passed every check but the requests-per-minute admission."""

    incoming: Incoming
    airlock_id: str
    sender: Sender
    request: LLMRequest
    seen: SeenRecord
    intent: AdmissionIntent | None
    received_at: datetime


class IngestHandler:
    """Authenticates, authorizes, deduplicates and meters each request; forwards or refuses it.

    Args:
        context: Audit and record builders.
        settings: Limits, windows and timeouts.
        registry: The clients file (reloaded by the app when it changes).
        load_seen: Reads a request partition's seen records back from Kafka.
        quota: Usage and admission state shared by all replicas.
        reply_topics: Which reply topics exist (a reply to any other could not be committed).
        partitions: The request topic's current partition count (``None`` while unknown).
        prices: The price table (estimates what a request may cost, for cost budgets).
        clock: The current time (tests pass a fixed one).
        is_control: Tells ingest's own signed control records from requests (``None``:
            every record is a request).
    """

    def __init__(
        self,
        context: StageContext,
        settings: IngestSettings,
        registry: ClientRegistry,
        *,
        load_seen: SeenLoader,
        quota: QuotaGate,
        reply_topics: ReplyTopics,
        partitions: Callable[[], int | None],
        prices: PriceTable = DEFAULT_PRICES,
        clock: Callable[[], datetime] = utcnow,
        is_control: ControlCheck | None = None,
    ) -> None:
        self._context = context
        self._settings = settings
        self._registry = registry
        self._load_seen = load_seen
        self._quota = quota
        self._reply_topics = reply_topics
        self._partitions = partitions
        self._prices = prices
        self._clock = clock
        self._books: dict[int, SeenBook] = {}
        self._tallies: dict[int, NoiseTally] = {}
        self._is_control = is_control
        self._noise_window = timedelta(seconds=settings.noise_window_s)
        self._epochs: dict[int, int] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._tolerance = timedelta(seconds=settings.signature_tolerance_s)
        self._window = timedelta(seconds=settings.idempotency_window_s)

    # -- partition state ------------------------------------------------------------------

    def on_reset(self, partition: int) -> None:
        """Forget the partition's seen book and noise tally; they are read back before next use."""
        self._books.pop(partition, None)
        self._tallies.pop(partition, None)
        self._epochs[partition] = self._epochs.get(partition, 0) + 1

    async def _book(self, partition: int, now: datetime) -> SeenBook:
        book = self._books.get(partition)
        if book is None:
            # A signature matters while its timestamp is inside the window (either side).
            book = SeenBook(signature_ttl=self._tolerance * 2, request_ttl=self._window)
            since = now - max(self._window, self._tolerance * 3)
            epoch = self._epochs.get(partition, 0)
            records = await self._load_seen(partition, since)
            tally = NoiseTally(partition=partition)
            for record in records:
                if isinstance(record, NoiseTally):
                    tally = record  # the last one written is the partition's pending noise
                else:
                    book.remember(record, now)
            log.info("request partition %d: %d seen records read back", partition, len(records))
            if self._epochs.get(partition, 0) == epoch:  # else reset meanwhile: read again next time
                self._books[partition] = book
                self._tallies[partition] = tally
        return book

    # -- processing -----------------------------------------------------------------------

    async def process(self, batch: Sequence[Incoming]) -> Sequence[Result]:
        """Decide a batch of one request partition, in offset order."""
        if not batch:
            return []
        partition = batch[0].partition
        async with self._locks.setdefault(partition, asyncio.Lock()):
            now = self._clock()
            book = await self._book(partition, now)
            await self._quota.wait_ready(self._settings.quota_timeout_s)
            await self._reply_topics.look_up(self._reply_topics_named(batch))
            book.expire(now)
            clients = self._registry.current
            examined = self._summed_up(
                partition,
                [self._contained(incoming, now, self._examine, incoming, book, clients, now) for incoming in batch],
                now,
            )
            intents = [item.intent for item in examined if isinstance(item, _Candidate) and item.intent]
            admissions: dict[str, Admission] = {}
            failure: Exception | None = None
            if intents:
                try:
                    decided = await self._quota.admit(intents, self._settings.quota_timeout_s)
                    admissions = {intent.airlock_id: d for intent, d in zip(intents, decided, strict=True)}
                except Exception as error:  # the runtime retries the first record that needs it
                    failure = error
            results: list[Result] = []
            for item in examined:
                if not isinstance(item, _Candidate):
                    results.append(item)
                elif item.intent is not None and failure is not None:
                    results.append(failure)
                else:
                    admission = admissions.get(item.airlock_id)
                    outcome = self._contained(item.incoming, now, self._decide, item, admission, book, now)
                    assert isinstance(outcome, Outcome)  # _decide and a refusal both end in one
                    results.append(outcome)
            return results

    def _reply_topics_named(self, batch: Sequence[Incoming]) -> list[str]:
        """The reply topics a batch's refusals or answers may go to (to look up missing ones)."""
        names = set()
        for incoming in batch:
            _, reply_to = _body_addressing(incoming)
            if reply_to and self._context.topics.is_reply_topic(reply_to):
                names.add(reply_to)
            claimed = claimed_client(incoming)
            if claimed:
                names.add(self._context.topics.reply_topic(claimed))
        return sorted(names)

    def _summed_up(
        self, partition: int, examined: list[Outcome | _Candidate | Unauthenticated | _Control], now: datetime
    ) -> list[Outcome | _Candidate]:
        """Unauthenticated records as dead letters, counted in the partition's noise tally.

        The last of them (or ingest's control record) carries what the tally needs: its
        notice when due — and then the closed tally — else the tally so far, to
        ``ingest.seen``, so the counts commit with the records they count.
        """
        refused = [item for item in examined if isinstance(item, Unauthenticated)]
        controls = [item for item in examined if isinstance(item, _Control)]
        if not refused and not controls:
            return [item for item in examined if isinstance(item, Outcome | _Candidate)]
        context = self._context
        before = self._tallies.get(partition, NoiseTally(partition=partition))
        tally = before.counting(refused, now)
        carrier = (refused or controls)[-1]
        carried = Outcome()
        if tally.due(now, self._noise_window):
            notice = context.notice(
                tally.sample_airlock_id, "unauthenticated", request_id=tally.sample_request_id, details=tally.details()
            )
            tally = tally.closed()
            carried = Outcome(records=[self._tally_record(tally)], events=[notice])
        elif tally is not before:
            carried = Outcome(records=[self._tally_record(tally)])
        self._tallies[partition] = tally
        done: list[Outcome | _Candidate] = []
        for item in examined:
            if isinstance(item, Unauthenticated):
                error = item.error
                dead = context.dead_letter(item.incoming, error.code, error.message, item.airlock_id)
                outcome = Outcome(records=[dead])
            elif isinstance(item, _Control):
                outcome = Outcome()
            else:
                done.append(item)
                continue
            if item is carrier:
                outcome.records.extend(carried.records)
                outcome.events.extend(carried.events)
            done.append(outcome)
        return done

    def _tally_record(self, tally: NoiseTally) -> Outgoing:
        return Outgoing(
            topic=self._context.topics.ingest_seen,
            value=tally.to_bytes(),
            key=b"noise-tally",
            partition=tally.partition,
        )

    def noise_due(self, partition: int, now: datetime) -> bool:
        """Whether the partition's noise notice is due (its owner should be nudged)."""
        tally = self._tallies.get(partition)
        return tally is not None and tally.due(now, self._noise_window)

    def _contained(
        self,
        incoming: Incoming,
        now: datetime,
        step: Callable[..., Outcome | _Candidate | Unauthenticated | _Control],
        *args: object,
    ) -> Outcome | _Candidate | Unauthenticated | _Control:
        """``step(*args)``, or this record's own refusal if it raised: no record fails another."""
        try:
            return step(*args)
        except Exception as error:
            log.exception("ingest: unexpected error on %s; refusing it alone", incoming.source)
            failure = StageError(ErrorCode.INTERNAL, f"ingest could not process the request ({type(error).__name__})")
            try:
                return self._refusal_of(incoming, failure, now)
            except Exception:  # the record cannot even be refused normally: DLQ and notice
                log.exception("ingest: cannot refuse %s; dead-lettering it", incoming.source)
                return self._context.poison(incoming, failure)

    def _examine(
        self, incoming: Incoming, book: SeenBook, clients: ClientsFile, now: datetime
    ) -> Outcome | _Candidate | Unauthenticated | _Control:
        if (
            self._is_control is not None
            and incoming.safe_header(h.CONTROL) == NOISE_FLUSH
            and self._is_control(incoming)
        ):
            return _Control(incoming)
        airlock_id = airlock_id_for(incoming)
        try:
            sender = authenticate(incoming, clients, now=now, tolerance_s=self._settings.signature_tolerance_s)
        except StageError as error:
            request_id = _body_addressing(incoming)[0] or incoming.safe_header(h.REQUEST_ID)
            return Unauthenticated(incoming, airlock_id, error, claimed_client(incoming), request_id)
        count = self._partitions()
        if count:
            home = request_partition(sender.client_id, sender.request_id, count)
            if home != incoming.partition:
                return self._reroute(incoming, home)
        seen = SeenRecord(
            client_id=sender.client_id,
            request_id=sender.request_id,
            signature=sender.signature,
            airlock_id=airlock_id,
            accepted=False,
            at=now,
            signed_at=sender.timestamp,
        )
        earlier = book.replay_of(sender.signature)
        if earlier is not None and earlier.airlock_id != airlock_id:
            replay = StageError(
                ErrorCode.REPLAYED,
                f"this signed request was already received as airlock id {earlier.airlock_id}",
                duplicate_of=earlier.airlock_id,
            )
            return self._refuse(incoming, airlock_id, sender, replay, now, seen=None)
        book.remember(seen, now)
        try:
            request = parse_request(
                incoming.value,
                max_bytes=self._settings.max_message_bytes,
                max_prompt_chars=self._settings.max_prompt_chars,
            )
        except StageError as error:
            return self._refuse(incoming, airlock_id, sender, error, now, seen=seen)
        try:
            if request.client_id != sender.client_id or request.request_id != sender.request_id:
                raise StageError(
                    ErrorCode.IDENTITY_MISMATCH,
                    "the body's client_id and request_id must equal the signed "
                    f"{h.CLIENT_ID} and {h.REQUEST_ID} headers",
                )
            tenant_limits = authorize(sender.policy, clients, request, self._context.topics)
            if not self._reply_topics.exists(request.reply_to):
                raise StageError(ErrorCode.REPLY_TOPIC_NOT_ALLOWED, f"reply topic {request.reply_to!r} does not exist")
            original = book.accepted(sender.client_id, sender.request_id)
            if original is not None:
                raise _duplicate(original)
        except StageError as error:
            return self._refuse(incoming, airlock_id, sender, error, now, seen=seen, request=request)
        intent = None
        if tenant_limits.any or sender.policy.limits.any:
            intent = self._intent(airlock_id, request, sender.policy, tenant_limits, now)
        return _Candidate(incoming, airlock_id, sender, request, seen, intent, now)

    def _intent(
        self, airlock_id: str, request: LLMRequest, policy: ClientPolicy, tenant_limits: Limits, now: datetime
    ) -> AdmissionIntent:
        """The admission intent of a request, with what it may spend at most."""
        completion = request.params.max_tokens or policy.max_tokens
        prompt_bytes = sum(len(m.content.encode("utf-8", "surrogatepass")) for m in request.messages)
        tokens = estimate_tokens(prompt_bytes, len(request.messages), completion)
        cost = self._prices.cost(request.model, Usage(input_tokens=tokens - completion, output_tokens=completion))
        deadline = deadline_after(now, self._settings.request_deadline_s)
        return AdmissionIntent(
            airlock_id=airlock_id,
            tenant=request.tenant,
            client_id=request.client_id,
            tenant_limits=tenant_limits,
            client_limits=policy.limits,
            tokens=tokens,
            cost_usd=cost,
            deadline_ms=int(deadline.timestamp() * 1000),
        )

    def _decide(self, item: _Candidate, admission: Admission | None, book: SeenBook, now: datetime) -> Outcome:
        """Accept a candidate unless the admission log refused it or its id was taken meanwhile."""
        refusal: StageError | None = None
        if item.intent is not None and admission is not None and not admission.admitted:
            refusal = admission.refusal()
        original = book.accepted(item.sender.client_id, item.sender.request_id)
        if original is not None:  # an earlier record of this batch took the id
            refusal = _duplicate(original)
        if refusal is not None:
            return self._refuse(item.incoming, item.airlock_id, item.sender, refusal, now, item.seen, item.request)
        context, request = self._context, item.request
        seen = item.seen.model_copy(update={"accepted": True})
        book.remember(seen, now)
        details = request_details(request, item.incoming.source)
        received = context.transition(
            item.airlock_id, None, State.RECEIVED, request=request, details=details, at=item.received_at
        )
        accepted = context.transition(item.airlock_id, State.RECEIVED, State.ACCEPTED, request=request, details=details)
        envelope = Envelope(
            airlock_id=item.airlock_id,
            state=State.ACCEPTED,
            request=request,
            received_at=item.received_at,
            deadline=deadline_after(item.received_at, self._settings.request_deadline_s),
        )
        return Outcome(
            records=[context.forward(context.topics.accepted, envelope, item.incoming), self._seen_record(seen, item)],
            events=[received, accepted],
        )

    # -- outcomes -------------------------------------------------------------------------

    def _seen_record(self, seen: SeenRecord, item: _Candidate | Incoming) -> Outgoing:
        incoming = item.incoming if isinstance(item, _Candidate) else item
        return Outgoing(
            topic=self._context.topics.ingest_seen,
            value=seen.to_bytes(),
            key=seen.key(),
            partition=incoming.partition,
        )

    def _reroute(self, incoming: Incoming, home: int) -> Outcome:
        """Move a record to its home partition, byte for byte (it enters the lifecycle there)."""
        log.debug("moving %s to partition %d", incoming.source, home)
        headers = tuple((k, v) for k, v in incoming.headers if k != h.REROUTED_FROM)
        return Outcome(
            records=[
                Outgoing(
                    topic=incoming.topic,
                    value=incoming.value,
                    key=incoming.key,
                    headers=(*headers, (h.REROUTED_FROM, incoming.source.encode())),
                    partition=home,
                )
            ]
        )

    def _refuse_unauthenticated(self, incoming: Incoming, airlock_id: str, error: StageError, now: datetime) -> Outcome:
        """DLQ and audit only: an unauthenticated sender is never answered."""
        request_id = _body_addressing(incoming)[0] or incoming.safe_header(h.REQUEST_ID)
        claimed = claimed_client(incoming)
        details = AuditDetails(source=incoming.source, extra={"claimed_client_id": claimed} if claimed else None)
        received = self._context.transition(
            airlock_id, None, State.RECEIVED, request_id=request_id, details=details, at=now
        )
        return self._context.fail(
            incoming,
            error,
            airlock_id=airlock_id,
            source=State.RECEIVED,
            target=State.REJECTED,
            request_id=request_id,
            reply_to=None,
            details=details,
            preceding=[received],
        )

    def _refuse(
        self,
        incoming: Incoming,
        airlock_id: str,
        sender: Sender,
        error: StageError,
        now: datetime,
        seen: SeenRecord | None,
        request: LLMRequest | None = None,
    ) -> Outcome:
        """Refuse an authenticated record: reply, DLQ, audit.

        The reply goes to the topic the signed body names when the client may use it and it
        exists, else to the client's own reply topic (if that exists): never to a topic from
        an unsigned header, and never to one whose write would fail the commit.
        """
        reply_to = request.reply_to if request else _body_addressing(incoming)[1]
        own = self._context.topics.reply_topic(sender.client_id)
        allowed = next(
            (
                topic
                for topic in (reply_to, own)
                if may_reply(sender.client_id, sender.policy, topic, self._context.topics)
                and topic
                and self._reply_topics.exists(topic)
            ),
            None,
        )
        details = request_details(request, incoming.source) if request else AuditDetails(source=incoming.source)
        extra = {"key_id": sender.key_id}
        if error.duplicate_of:
            extra["duplicate_of"] = error.duplicate_of
        details = details.model_copy(update={"extra": extra})
        received = self._context.transition(
            airlock_id, None, State.RECEIVED, request_id=sender.request_id, details=details, at=now
        )
        outcome = self._context.fail(
            incoming,
            error,
            airlock_id=airlock_id,
            source=State.RECEIVED,
            target=State.REJECTED,
            request_id=sender.request_id,
            reply_to=allowed,
            client_id=sender.client_id,
            details=details,
            preceding=[received],
        )
        identity = {"client_id": sender.client_id, "tenant": request.tenant if request else None}
        outcome.events = [_with(event, identity) for event in outcome.events]
        if seen is not None:
            outcome.records.append(self._seen_record(seen, incoming))
        return outcome

    def give_up(self, incoming: Incoming, error: BaseException) -> Outcome:
        """Processing kept failing (quota state unreachable?): refuse, audited, failing closed."""
        failure = StageError(ErrorCode.INTERNAL, "ingest could not process the request")
        return self._refusal_of(incoming, failure, self._clock())

    def _refusal_of(self, incoming: Incoming, failure: StageError, now: datetime) -> Outcome:
        """``failure`` as the record's refusal, answered only if the record is authenticated."""
        airlock_id = airlock_id_for(incoming)
        try:
            sender = authenticate(
                incoming, self._registry.current, now=now, tolerance_s=self._settings.signature_tolerance_s
            )
        except StageError:
            return self._refuse_unauthenticated(incoming, airlock_id, failure, now)
        return self._refuse(incoming, airlock_id, sender, failure, now, seen=None)


def _duplicate(original: SeenRecord) -> StageError:
    return StageError(
        ErrorCode.DUPLICATE_REQUEST,
        f"request id {original.request_id!r} was already accepted as airlock id {original.airlock_id} "
        f"at {original.at.isoformat()}; its reply goes to its own reply topic",
        duplicate_of=original.airlock_id,
    )


def _with(event: AuditEvent, identity: dict[str, str | None]) -> AuditEvent:
    return event.model_copy(update={k: v for k, v in identity.items() if v is not None})


def _body_addressing(incoming: Incoming) -> tuple[str | None, str | None]:
    """The body's ``(request_id, reply_to)`` if it is JSON enough (the body is what is signed)."""
    with contextlib.suppress(NotJSON):
        return addressing(parse_json(incoming.value))
    return None, None
