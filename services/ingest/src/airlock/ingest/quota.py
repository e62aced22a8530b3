"""Quotas and budgets (pure; no Kafka): requests per minute, tokens per day, cost per month.

**Requests per minute** are decided by a log, not by replicas. A replica that wants to admit
a request appends an :class:`AdmissionIntent` to the single partition of
``<prefix>ingest.admissions`` and waits until its own reader has read past it. Every
replica's reader runs the same :class:`RateArbiter` over the same records in the same order
(timestamps stamped by the broker), so they all reach the same decision for every intent:
the first ``limit`` intents of a tenant (or client) in a calendar minute are admitted, the
rest are refused with ``retry_after`` = the rest of the minute. The count is exact however
many replicas there are, and a restarted replica rebuilds it by re-reading the last minutes.
Each intent carries the limits its writer saw, so a clients-file reload that reaches the
replicas at different moments cannot make them disagree.

**Tokens per day and cost per month** come from the usage topic, which the llm-worker writes
in the same transaction as each completion (spend is never lost or counted twice). Every
replica reads it into a :class:`UsageBook`. These budgets can overshoot by what is in flight
when they are crossed — see DESIGN.md (ingest) for the bound.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from airlock.core.errors import ErrorCode, StageError
from airlock.core.models import UsageRecord
from airlock.ingest.clients import Limits

MINUTE_MS = 60_000

Scope = Literal["tenant", "client"]


class AdmissionIntent(BaseModel):
    """A replica's request to admit one request under requests-per-minute limits.

    Attributes:
        airlock_id: The request (a re-sent intent for the same id gets the first decision).
        tenant: The tenant billed.
        client_id: The sending client.
        tenant_rpm: The tenant's limit as the writer saw it (``None``: none).
        client_rpm: The client's limit as the writer saw it (``None``: none).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    schema_version: Literal[1] = 1
    airlock_id: str
    tenant: str
    client_id: str
    tenant_rpm: int | None = None
    client_rpm: int | None = None

    def to_bytes(self) -> bytes:
        """JSON wire form."""
        return self.model_dump_json().encode()


@dataclass(frozen=True)
class Admission:
    """The decision on one intent.

    Attributes:
        admitted: Whether the request may proceed.
        minute: The calendar minute (Unix minutes) the intent fell in.
        retry_after: Seconds until that minute ends (refusals only).
        scope: Which limit refused it: ``tenant`` or ``client``.
    """

    admitted: bool
    minute: int
    retry_after: float = 0.0
    scope: Scope | None = None


class RateArbiter:
    """Replays the admission log into per-minute counts and decisions (deterministic)."""

    def __init__(self) -> None:
        self._clock_ms = 0
        self._minute = -1
        self._counts: dict[tuple[Scope, str], int] = defaultdict(int)
        self._current: dict[str, Admission] = {}
        self._previous: dict[str, Admission] = {}

    def apply(self, intent: AdmissionIntent, log_time_ms: int) -> Admission:
        """Decide ``intent``, appended to the log at ``log_time_ms``."""
        # Broker time per partition only moves forward; clamp anyway so the minute never goes back.
        self._clock_ms = max(self._clock_ms, log_time_ms)
        minute = self._clock_ms // MINUTE_MS
        if minute != self._minute:
            self._previous = self._current if minute == self._minute + 1 else {}
            self._current = {}
            self._counts = defaultdict(int)
            self._minute = minute
        earlier = self.decision_for(intent.airlock_id)
        if earlier is not None:
            return earlier
        refused: Scope | None = None
        if intent.tenant_rpm is not None and self._counts["tenant", intent.tenant] >= intent.tenant_rpm:
            refused = "tenant"
        elif intent.client_rpm is not None and self._counts["client", intent.client_id] >= intent.client_rpm:
            refused = "client"
        if refused is None:
            self._counts["tenant", intent.tenant] += 1
            self._counts["client", intent.client_id] += 1
            decision = Admission(admitted=True, minute=minute)
        else:
            retry_after = ((minute + 1) * MINUTE_MS - self._clock_ms) / 1000
            decision = Admission(admitted=False, minute=minute, retry_after=retry_after, scope=refused)
        self._current[intent.airlock_id] = decision
        return decision

    def decision_for(self, airlock_id: str) -> Admission | None:
        """The decision already made for ``airlock_id`` in this or the previous minute."""
        return self._current.get(airlock_id) or self._previous.get(airlock_id)

    def admitted(self, scope: Scope, name: str, now: datetime) -> int:
        """Requests admitted for ``name`` in the minute of ``now`` (0 once that minute is over)."""
        if int(now.timestamp() * 1000) // MINUTE_MS != self._minute:
            return 0
        return self._counts.get((scope, name), 0)


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
    """Tokens per day and cost per month, per tenant and per client, from usage records."""

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


def check_budgets(
    book: UsageBook,
    *,
    tenant: str,
    tenant_limits: Limits,
    client_id: str,
    client_limits: Limits,
    now: datetime,
) -> None:
    """Refuse when the tenant's or client's tokens today or cost this month reached its limit.

    Raises:
        StageError: ``token_quota_exceeded`` or ``budget_exceeded``, with ``retry_after``.
    """
    checks: tuple[tuple[Scope, str, Limits], ...] = (
        ("tenant", tenant, tenant_limits),
        ("client", client_id, client_limits),
    )
    for scope, name, limits in checks:
        if limits.tokens_per_day is not None:
            used = book.tokens_today(scope, name, now)
            if used >= limits.tokens_per_day:
                raise StageError(
                    ErrorCode.TOKEN_QUOTA_EXCEEDED,
                    f"{scope} {name!r} used {used} of its {limits.tokens_per_day} tokens today (UTC)",
                    retry_after=round((next_midnight(now) - now).total_seconds(), 3),
                )
        if limits.cost_per_month_usd is not None:
            spent = book.cost_this_month(scope, name, now)
            if spent >= limits.cost_per_month_usd:
                raise StageError(
                    ErrorCode.BUDGET_EXCEEDED,
                    f"{scope} {name!r} spent ${spent:.4f} of its ${limits.cost_per_month_usd:.2f} budget this month",
                    retry_after=round((next_month_start(now) - now).total_seconds(), 3),
                )


def rate_refusal(admission: Admission, intent: AdmissionIntent) -> StageError:
    """The error for a refused admission."""
    if admission.scope == "client":
        what, limit = f"client {intent.client_id!r}", intent.client_rpm
    else:
        what, limit = f"tenant {intent.tenant!r}", intent.tenant_rpm
    return StageError(
        ErrorCode.RATE_LIMITED,
        f"{what} reached its limit of {limit} requests per minute",
        retry_after=round(max(admission.retry_after, 0.001), 3),
    )
