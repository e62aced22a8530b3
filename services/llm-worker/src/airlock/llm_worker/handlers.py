"""The llm-worker's handler: redacted request in; completion, usage and audit (or audited failure) out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Literal

from airlock.core.errors import ErrorCode, StageError
from airlock.core.lifecycle import State
from airlock.core.models import AuditDetails, AuditScalar, Completion, Envelope, Settlement, Usage, utcnow
from airlock.core.pricing import PriceTable
from airlock.core.stage import Incoming, Outcome, Outgoing, Result, StageContext, read_envelope
from airlock.core.telemetry.tracing import record_scope
from airlock.llm_worker.accounting import cost_of, usage_record
from airlock.llm_worker.cache import CacheEntry, ResponseCache, cache_key
from airlock.llm_worker.params import GovernedParams, govern
from airlock.llm_worker.router import Router, RoutingFailure, format_trail
from airlock.llm_worker.routing import RoutingTable, TargetSpec

log = logging.getLogger("airlock.llm_worker")

SettledAs = Literal["completed", "failed"]


class CompletionHandler:
    """REDACTED → COMPLETED | FAILED, with a batch's calls running concurrently.

    A completed request's outputs — the completion for the redactor, its usage record, its
    settlement for ingest's admission log, the COMPLETED audit event and, when the tenant
    opted in, the cache entry — form one outcome, committed in one transaction with the input
    offset. A failed request is settled too (at no spend), so its reservation is released.

    Args:
        context: Audit and record builders.
        router: Calls the providers (pacing, retries, breakers, fallback).
        table: The routing table (approved models, parameter limits, cache opt-ins).
        prices: The price table.
        cache: This replica's view of the response cache (``None``: caching off).
        clock: The current time (tests pass their own).
        memo_size: Completed outcomes remembered by Airlock id, so a record the runtime
            re-delivers (after a failed commit or a rebalance) is not sent to the model again.
    """

    def __init__(
        self,
        context: StageContext,
        router: Router,
        table: RoutingTable,
        prices: PriceTable,
        *,
        cache: ResponseCache | None = None,
        clock: Callable[[], datetime] = utcnow,
        memo_size: int = 4096,
    ) -> None:
        self._context = context
        self._router = router
        self._table = table
        self._prices = prices
        self._cache = cache
        self._clock = clock
        self._memo: OrderedDict[str, Outcome] = OrderedDict()
        self._memo_size = memo_size

    async def process(self, batch: Sequence[Incoming]) -> Sequence[Result]:
        """Run the batch's requests concurrently; results stay in offset order.

        Provider trouble never surfaces as an exception (that would make the runtime rewind
        and cancel the partition's other calls): it ends in a completion or an audited failure.
        """
        return await asyncio.gather(*(self._handle_scoped(incoming) for incoming in batch), return_exceptions=True)

    async def _handle_scoped(self, incoming: Incoming) -> Outcome:
        # Each record's own task: its log lines and model-call spans belong to it.
        with record_scope(incoming, "complete"):
            return await self.handle(incoming)

    async def handle(self, incoming: Incoming) -> Outcome:
        """Serve one redacted request."""
        context = self._context
        try:
            envelope = read_envelope(incoming, State.REDACTED)
            if envelope.vault is None or envelope.redaction is None:
                # Never send a prompt that did not go through the redactor.
                raise StageError(ErrorCode.SCHEMA_INVALID, "redacted envelope without redaction record")
        except StageError as error:
            return context.poison(incoming, error)
        remembered = self._memo.get(envelope.airlock_id)
        if remembered is not None:
            return remembered
        request = envelope.request
        if self._clock() > envelope.deadline:
            failure = StageError(ErrorCode.DEADLINE_EXCEEDED, "deadline passed before the model call")
            return self._fail(incoming, envelope, failure)
        route = self._table.route(request.model)
        if route is None:
            failure = StageError(ErrorCode.MODEL_NOT_ALLOWED, f"model {request.model} is not an approved model")
            return self._fail(incoming, envelope, failure)
        governed = govern(request.params, route, self._table.limits, request.tenant)
        ttl = self._table.cache_ttl(request.tenant, request.use_case) if self._cache is not None else None
        key = (
            cache_key(
                tenant=request.tenant,
                use_case=request.use_case,
                model=request.model,
                params=governed.values,
                messages=request.messages,
            )
            if ttl is not None
            else None
        )
        if key is not None and self._cache is not None:
            hit = self._cache.get(key, request.tenant, self._clock())
            if hit is not None:
                return self._remember(envelope, self._completed(incoming, envelope, _from_cache(hit), governed))
        started = time.perf_counter()
        try:
            routed = await self._router.complete(route, request.messages, governed, envelope.deadline.timestamp())
        except RoutingFailure as failure:
            log.warning(
                "request %s failed: %s (%s)", envelope.airlock_id, failure.error.code, format_trail(failure.trail)
            )
            return self._fail(
                incoming, envelope, failure.error, attempts=failure.attempts, trail=format_trail(failure.trail)
            )
        answer = routed.answer
        completion = Completion(
            content=answer.content,
            finish_reason=answer.finish_reason,
            model=answer.model or routed.target.served_model,
            usage=answer.usage,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            target=routed.target.name,
            attempts=routed.attempts,
        )
        outcome = self._completed(
            incoming, envelope, completion, governed, target=routed.target, trail=format_trail(routed.trail)
        )
        if key is not None and ttl is not None and completion.complete:
            outcome.records.append(self._cache_record(envelope, completion, key, ttl))
        return self._remember(envelope, outcome)

    def _completed(
        self,
        incoming: Incoming,
        envelope: Envelope,
        completion: Completion,
        governed: GovernedParams,
        *,
        target: TargetSpec | None = None,
        trail: str | None = None,
    ) -> Outcome:
        context = self._context
        request = envelope.request
        cost, priced = (
            (0.0, True) if completion.cached else cost_of(self._prices, request.model, target, completion.usage)
        )
        extra: dict[str, AuditScalar] = {"logical_model": request.model}
        if trail:
            extra["trail"] = trail
        if governed.changes:
            extra["params"] = "; ".join(governed.changes)
        if not priced:
            extra["priced"] = False
        completed = envelope.model_copy(update={"state": State.COMPLETED, "completion": completion})
        event = context.transition(
            envelope.airlock_id,
            State.REDACTED,
            State.COMPLETED,
            request=request,
            details=AuditDetails(
                model=completion.model,
                usage=completion.usage,
                finish_reason=completion.finish_reason,
                complete=completion.complete,
                target=completion.target,
                attempts=completion.attempts,
                cached=completion.cached,
                cost_usd=cost,
                latency_ms=completion.latency_ms,
                extra=extra,
            ),
        )
        usage = usage_record(envelope, completion, cost)
        return Outcome(
            records=[
                context.forward(context.topics.completions, completed, incoming),
                Outgoing(topic=context.topics.usage, value=usage.to_bytes(), key=request.tenant.encode()),
                self._settlement(envelope, completion.usage.total_tokens, cost, "completed"),
            ],
            events=[event],
        )

    def _settlement(self, envelope: Envelope, tokens: int, cost: float, outcome: SettledAs) -> Outgoing:
        """The request's settlement, on the single partition of ingest's admission log."""
        request = envelope.request
        settlement = Settlement(
            airlock_id=envelope.airlock_id,
            tenant=request.tenant,
            client_id=request.client_id,
            total_tokens=tokens,
            cost_usd=cost,
            outcome=outcome,
        )
        return Outgoing(
            topic=self._context.topics.ingest_admissions,
            value=settlement.to_bytes(),
            key=request.tenant.encode(),
            partition=0,
        )

    def _cache_record(self, envelope: Envelope, completion: Completion, key: str, ttl_s: float) -> Outgoing:
        now = self._clock()
        entry = CacheEntry(
            key=key,
            tenant=envelope.request.tenant,
            use_case=envelope.request.use_case,
            model=envelope.request.model,
            content=completion.content,
            finish_reason=completion.finish_reason,
            served_model=completion.model,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_s),
        )
        return Outgoing(topic=self._context.topics.llm_cache, value=entry.model_dump_json().encode(), key=key.encode())

    def _remember(self, envelope: Envelope, outcome: Outcome) -> Outcome:
        self._memo[envelope.airlock_id] = outcome
        while len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)
        return outcome

    def give_up(self, incoming: Incoming, error: BaseException) -> Outcome:
        """The handler kept raising (a bug, not the provider): fail the request, audited."""
        try:
            envelope = read_envelope(incoming, State.REDACTED)
        except StageError as unreadable:
            return self._context.poison(incoming, unreadable)
        return self._fail(
            incoming, envelope, StageError(ErrorCode.INTERNAL, "the llm-worker could not process the request")
        )

    def _fail(
        self,
        incoming: Incoming,
        envelope: Envelope,
        error: StageError,
        *,
        attempts: int | None = None,
        trail: str | None = None,
    ) -> Outcome:
        outcome = self._context.fail(
            incoming,
            error,
            airlock_id=envelope.airlock_id,
            source=State.REDACTED,
            target=State.FAILED,
            request=envelope.request,
            details=AuditDetails(
                model=envelope.request.model,
                attempts=attempts,
                extra={"trail": trail} if trail else None,
            ),
        )
        outcome.records.append(self._settlement(envelope, 0, 0.0, "failed"))
        return outcome


def _from_cache(entry: CacheEntry) -> Completion:
    return Completion(
        content=entry.content,
        finish_reason=entry.finish_reason,
        model=entry.served_model,
        usage=Usage(),
        target=None,
        attempts=0,
        cached=True,
    )
