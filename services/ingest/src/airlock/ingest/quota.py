"""Quotas and budgets (pure; no Kafka), decided by one log that every replica reads alike.

A replica that wants to admit a request with any limit appends an :class:`AdmissionIntent`
to the single partition of ``<prefix>ingest.admissions`` and waits until its own reader has
read past it. The llm-worker appends a :class:`~airlock.core.models.Settlement` to the same
partition with every completion and failure, in the completion's transaction. Every
replica's reader runs the same :class:`AdmissionArbiter` over the same records in the same
order (timestamps stamped by the broker), so all of them reach the same decision on every
intent, however many replicas there are, and a restarted replica rebuilds the state by
re-reading the log since the start of the month.

An admitted intent **reserves** its estimate (prompt tokens plus ``max_tokens``, and what
that costs) until its settlement replaces the estimate with the actual spend, or until its
deadline has long passed (a request refused by the redactor never settles). An intent is
refused when, for its tenant or its client:

- ``requests_per_minute`` intents were already admitted in the last 60 seconds of log time
  (a sliding window: no boundary lets twice the limit through);
- ``max_in_flight`` admitted requests are not settled yet;
- the day's settled tokens (or the month's cost) reached the limit, or settled plus reserved
  plus this estimate would pass it while something else is in flight.

So a request is admitted past its estimate only when nothing else is reserved: spend stays
within the limit plus one request's maximum, whatever the concurrency. Each intent carries
the limits its writer saw, so a clients-file reload that reaches the replicas at different
moments cannot make them disagree.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, defaultdict, deque
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airlock.core.errors import ErrorCode, StageError
from airlock.core.jsondoc import NotJSON, parse_json
from airlock.core.models import Settlement, UsageRecord
from airlock.ingest.clients import Limits

#: The requests-per-minute window.
WINDOW_MS = 60_000
#: A reservation that never settled is released this long after its request's deadline: the
#: llm-worker starts no call after the deadline, and this leaves time for its commit.
LAPSE_GRACE_MS = 120_000
#: How long the decision on an intent is remembered (a re-sent intent gets the same one).
DECISION_MEMORY_MS = 600_000
#: ``retry_after`` of a refusal caused by requests in flight (they settle within seconds).
IN_FLIGHT_RETRY_S = 1.0

Scope = Literal["tenant", "client"]


class AdmissionIntent(BaseModel):
    """A replica's request to admit one request, with the limits it saw and its estimate.

    Attributes:
        airlock_id: The request (a re-sent intent for the same id gets the first decision).
        tenant: The tenant billed.
        client_id: The sending client.
        tenant_limits: The tenant's limits as the writer saw them.
        client_limits: The client's limits as the writer saw them.
        tokens: Estimated tokens at most: prompt plus ``max_tokens``.
        cost_usd: What ``tokens`` cost at the model's price.
        deadline_ms: The request's deadline (epoch ms): no model call starts after it.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["intent"] = "intent"
    schema_version: Literal[2] = 2
    airlock_id: str
    tenant: str
    client_id: str
    tenant_limits: Limits = Field(default_factory=Limits)
    client_limits: Limits = Field(default_factory=Limits)
    tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    deadline_ms: int = 0

    def to_bytes(self) -> bytes:
        """JSON wire form."""
        return self.model_dump_json().encode()


AdmissionRecord = AdmissionIntent | Settlement


def read_admission_record(value: bytes) -> AdmissionRecord:
    """An admission-log record: an intent (ingest's) or a settlement (the llm-worker's).

    Raises:
        ValueError: Neither (not JSON, unknown kind, wrong fields).
    """
    try:
        document = parse_json(value)
    except NotJSON as error:
        raise ValueError(f"not JSON: {error}") from None
    kind = document.get("kind") if isinstance(document, dict) else None
    try:
        if kind == "settlement":
            return Settlement.model_validate(document)
        if kind == "intent":
            return AdmissionIntent.model_validate(document)
    except ValidationError as error:
        raise ValueError(f"invalid {kind}: {error.error_count()} error(s)") from None
    raise ValueError(f"unknown admission record kind {str(kind)[:32]!r}")


@dataclass(frozen=True)
class Admission:
    """The decision on one intent.

    Attributes:
        admitted: Whether the request may proceed.
        code: Why not: ``rate_limited``, ``token_quota_exceeded`` or ``budget_exceeded``.
        reason: The refusal's message for the caller (names the scope and the limit).
        retry_after: Seconds after which a retry can succeed (refusals only).
    """

    admitted: bool
    code: ErrorCode | None = None
    reason: str = ""
    retry_after: float = 0.0

    def refusal(self) -> StageError:
        """The caller's error for a refused admission."""
        assert self.code is not None, "admitted: nothing to refuse"
        return StageError(self.code, self.reason, retry_after=round(max(self.retry_after, 0.001), 3))


ADMITTED = Admission(admitted=True)


@dataclass(frozen=True)
class _Reservation:
    tenant: str
    client_id: str
    tokens: int
    cost_usd: float


def _day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def _month(ms: int) -> tuple[int, int]:
    return month_of(datetime.fromtimestamp(ms / 1000, UTC))


class AdmissionArbiter:
    """Replays the admission log into windows, reservations, spend and decisions (deterministic)."""

    def __init__(self) -> None:
        self._clock_ms = 0
        self._today: date | None = None
        self._decisions: OrderedDict[str, tuple[int, Admission]] = OrderedDict()
        self._windows: dict[tuple[Scope, str], deque[int]] = defaultdict(deque)
        self._open: dict[str, _Reservation] = {}
        self._lapses: list[tuple[int, str]] = []
        self._in_flight: dict[tuple[Scope, str], int] = defaultdict(int)
        self._reserved_tokens: dict[tuple[Scope, str], int] = defaultdict(int)
        self._reserved_cost: dict[tuple[Scope, str], float] = defaultdict(float)
        self._tokens: dict[tuple[Scope, str, date], int] = defaultdict(int)
        self._cost: dict[tuple[Scope, str, tuple[int, int]], float] = defaultdict(float)

    # -- the log --------------------------------------------------------------------------

    def apply(self, record: AdmissionRecord, log_time_ms: int) -> Admission | None:
        """Take one record appended at ``log_time_ms``: an intent's decision, or ``None``."""
        self._advance(log_time_ms)
        if isinstance(record, Settlement):
            self._settle(record)
            return None
        earlier = self.decision_for(record.airlock_id)
        if earlier is not None:
            return earlier
        decision = self._decide(record)
        if decision.admitted:
            self._admit(record)
        self._decisions[record.airlock_id] = (self._clock_ms, decision)
        return decision

    def decision_for(self, airlock_id: str) -> Admission | None:
        """The decision made for ``airlock_id`` (remembered for ``DECISION_MEMORY_MS``)."""
        found = self._decisions.get(airlock_id)
        return found[1] if found else None

    def _advance(self, log_time_ms: int) -> None:
        # Broker time per partition only moves forward; clamp anyway so the window never goes back.
        self._clock_ms = max(self._clock_ms, log_time_ms)
        today = _day(self._clock_ms)
        if today != self._today:
            self._today = today
            self._forget_before(today)
        while self._lapses and self._lapses[0][0] <= self._clock_ms:
            _, airlock_id = heapq.heappop(self._lapses)
            self._release(airlock_id)
        while self._decisions:
            airlock_id, (at, _) = next(iter(self._decisions.items()))
            if at > self._clock_ms - DECISION_MEMORY_MS:
                break
            del self._decisions[airlock_id]

    def _forget_before(self, today: date) -> None:
        for day_key in [k for k in self._tokens if k[2] < today]:
            del self._tokens[day_key]
        month = (today.year, today.month)
        for month_key in [k for k in self._cost if k[2] < month]:
            del self._cost[month_key]

    def _scopes(self, tenant: str, client_id: str) -> tuple[tuple[Scope, str], tuple[Scope, str]]:
        return ("tenant", tenant), ("client", client_id)

    def _decide(self, intent: AdmissionIntent) -> Admission:
        limits = (intent.tenant_limits, intent.client_limits)
        for key, scope_limits in zip(self._scopes(intent.tenant, intent.client_id), limits, strict=True):
            refusal = self._refusal(key, scope_limits, intent)
            if refusal is not None:
                return refusal
        return ADMITTED

    def _refusal(self, key: tuple[Scope, str], limits: Limits, intent: AdmissionIntent) -> Admission | None:
        what = f"{key[0]} {key[1]!r}"
        now = self._clock_ms
        if limits.requests_per_minute is not None:
            window = self._window(key)
            if len(window) >= limits.requests_per_minute:
                oldest = window[0] if window else now
                return Admission(
                    False,
                    ErrorCode.RATE_LIMITED,
                    f"{what} reached its limit of {limits.requests_per_minute} requests per minute",
                    (oldest + WINDOW_MS - now) / 1000,
                )
        in_flight = self._in_flight.get(key, 0)
        if limits.max_in_flight is not None and in_flight >= limits.max_in_flight:
            return Admission(
                False,
                ErrorCode.RATE_LIMITED,
                f"{what} has {in_flight} requests in flight, its limit",
                IN_FLIGHT_RETRY_S,
            )
        if limits.tokens_per_day is not None:
            used = self._tokens.get((*key, _day(now)), 0)
            reserved = self._reserved_tokens.get(key, 0)
            until_midnight = (next_midnight(self._now()) - self._now()).total_seconds()
            if used >= limits.tokens_per_day:
                return Admission(
                    False,
                    ErrorCode.TOKEN_QUOTA_EXCEEDED,
                    f"{what} used {used} of its {limits.tokens_per_day} tokens today (UTC)",
                    until_midnight,
                )
            if in_flight and used + reserved + intent.tokens > limits.tokens_per_day:
                return Admission(
                    False,
                    ErrorCode.TOKEN_QUOTA_EXCEEDED,
                    f"{what} used {used} and has {reserved} reserved by requests in flight of its "
                    f"{limits.tokens_per_day} tokens today (UTC); this request may take {intent.tokens}",
                    IN_FLIGHT_RETRY_S,
                )
        if limits.cost_per_month_usd is not None:
            spent = self._cost.get((*key, _month(now)), 0.0)
            reserved_cost = self._reserved_cost.get(key, 0.0)
            if spent >= limits.cost_per_month_usd:
                return Admission(
                    False,
                    ErrorCode.BUDGET_EXCEEDED,
                    f"{what} spent ${spent:.4f} of its ${limits.cost_per_month_usd:.2f} budget this month",
                    (next_month_start(self._now()) - self._now()).total_seconds(),
                )
            if in_flight and spent + reserved_cost + intent.cost_usd > limits.cost_per_month_usd:
                return Admission(
                    False,
                    ErrorCode.BUDGET_EXCEEDED,
                    f"{what} spent ${spent:.4f} and has ${reserved_cost:.4f} reserved by requests in flight "
                    f"of its ${limits.cost_per_month_usd:.2f} budget this month",
                    IN_FLIGHT_RETRY_S,
                )
        return None

    def _admit(self, intent: AdmissionIntent) -> None:
        reservation = _Reservation(intent.tenant, intent.client_id, intent.tokens, intent.cost_usd)
        self._open[intent.airlock_id] = reservation
        heapq.heappush(self._lapses, (max(intent.deadline_ms, self._clock_ms) + LAPSE_GRACE_MS, intent.airlock_id))
        for key in self._scopes(intent.tenant, intent.client_id):
            self._window(key).append(self._clock_ms)
            self._in_flight[key] += 1
            self._reserved_tokens[key] += reservation.tokens
            self._reserved_cost[key] += reservation.cost_usd

    def _settle(self, settlement: Settlement) -> None:
        self._release(settlement.airlock_id)
        day, month = _day(self._clock_ms), _month(self._clock_ms)
        for scope, name in self._scopes(settlement.tenant, settlement.client_id):
            self._tokens[scope, name, day] += settlement.total_tokens
            self._cost[scope, name, month] += settlement.cost_usd

    def _release(self, airlock_id: str) -> None:
        reservation = self._open.pop(airlock_id, None)
        if reservation is None:
            return  # settled already (its lapse is a no-op), or never reserved here
        for key in self._scopes(reservation.tenant, reservation.client_id):
            self._in_flight[key] -= 1
            self._reserved_tokens[key] -= reservation.tokens
            self._reserved_cost[key] -= reservation.cost_usd
            if self._in_flight[key] == 0:  # no float residue once nothing is in flight
                del self._in_flight[key], self._reserved_tokens[key], self._reserved_cost[key]

    def _window(self, key: tuple[Scope, str]) -> deque[int]:
        window = self._windows[key]
        while window and window[0] <= self._clock_ms - WINDOW_MS:
            window.popleft()
        return window

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock_ms / 1000, UTC)

    # -- reports (``airlock usage``) ------------------------------------------------------

    def admitted(self, scope: Scope, name: str) -> int:
        """Requests admitted for ``name`` in the last 60 seconds of log time."""
        return len(self._window((scope, name)))

    def in_flight(self, scope: Scope, name: str) -> int:
        """Admitted requests of ``name`` not settled yet."""
        return self._in_flight.get((scope, name), 0)

    def tokens_today(self, scope: Scope, name: str) -> int:
        """Tokens settled on the log's current UTC day."""
        return self._tokens.get((scope, name, _day(self._clock_ms)), 0)

    def cost_this_month(self, scope: Scope, name: str) -> float:
        """Cost settled in the log's current UTC month."""
        return self._cost.get((scope, name, _month(self._clock_ms)), 0.0)


def estimate_tokens(message_bytes: int, message_count: int, max_tokens: int) -> int:
    """At most how many tokens a request can spend.

    A BPE token is at least one byte of text, so the prompt's UTF-8 size bounds its tokens;
    chat formatting adds a few per message (OpenAI's cookbook counts 3, plus 3 for the reply).
    """
    return message_bytes + 4 * message_count + 3 + max_tokens


def month_of(moment: datetime) -> tuple[int, int]:
    """``(year, month)`` of a UTC instant."""
    moment = moment.astimezone(UTC)
    return moment.year, moment.month


def month_start(moment: datetime) -> datetime:
    """Midnight UTC on the first day of ``moment``'s month."""
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def next_month_start(moment: datetime) -> datetime:
    """Midnight UTC on the first day of the month after ``moment``'s."""
    start = month_start(moment)
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def next_midnight(moment: datetime) -> datetime:
    """The next midnight UTC after ``moment``."""
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC) + timedelta(days=1)


class UsageBook:
    """Tokens per day and cost per month, per tenant and per client, from the usage topic.

    For reports (``airlock usage``): admission decides from the admission log instead.
    """

    def __init__(self) -> None:
        self._tokens: dict[tuple[Scope, str, date], int] = defaultdict(int)
        self._requests: dict[tuple[Scope, str, date], int] = defaultdict(int)
        self._cost: dict[tuple[Scope, str, tuple[int, int]], float] = defaultdict(float)

    def add(self, record: UsageRecord) -> None:
        """Count one completed request."""
        at = record.at.astimezone(UTC)
        day, month = at.date(), month_of(at)
        for scope, name in (("tenant", record.tenant), ("client", record.client_id)):
            key: tuple[Scope, str] = (scope, name)  # type: ignore[assignment]
            self._tokens[(*key, day)] += record.usage.total_tokens
            self._requests[(*key, day)] += 1
            self._cost[(*key, month)] += record.cost_usd

    def tokens_today(self, scope: Scope, name: str, now: datetime) -> int:
        """Tokens used on ``now``'s UTC day."""
        return self._tokens.get((scope, name, now.astimezone(UTC).date()), 0)

    def requests_today(self, scope: Scope, name: str, now: datetime) -> int:
        """Completed requests on ``now``'s UTC day."""
        return self._requests.get((scope, name, now.astimezone(UTC).date()), 0)

    def cost_this_month(self, scope: Scope, name: str, now: datetime) -> float:
        """Spend in ``now``'s UTC month."""
        return self._cost.get((scope, name, month_of(now)), 0.0)

    def names(self, scope: Scope) -> set[str]:
        """Every tenant (or client) with usage on record."""
        return {key[1] for key in self._cost if key[0] == scope}

    def prune(self, now: datetime) -> None:
        """Drop days before yesterday and months before this one."""
        today, month = now.astimezone(UTC).date(), month_of(now)
        for book in (self._tokens, self._requests):
            for day_key in [k for k in book if k[2] < today - timedelta(days=1)]:
                del book[day_key]
        for month_key in [k for k in self._cost if k[2] < month]:
            del self._cost[month_key]
