"""Usage and cost: what each completed request spent, priced from the price table."""

from __future__ import annotations

from airlock.core.models import Completion, Envelope, Usage, UsageRecord
from airlock.core.pricing import PriceTable
from airlock.llm_worker.routing import TargetSpec


def price_key(prices: PriceTable, logical_model: str, target: TargetSpec | None) -> str | None:
    """The price-table entry for a call: the target's ``price_as``, its model, else the logical model."""
    candidates = [logical_model]
    if target is not None:
        candidates = [c for c in (target.price_as, target.model, target.deployment) if c] + candidates
    return next((c for c in candidates if prices.is_priced(c)), None)


def cost_of(prices: PriceTable, logical_model: str, target: TargetSpec | None, usage: Usage) -> tuple[float, bool]:
    """Cost in the table's currency and whether the call was priced at all (unpriced costs 0)."""
    key = price_key(prices, logical_model, target)
    if key is None:
        return 0.0, False
    return round(prices.cost(key, usage), 10), True


def usage_record(envelope: Envelope, completion: Completion, cost_usd: float) -> UsageRecord:
    """The usage record of a completed request (published keyed by tenant)."""
    request = envelope.request
    return UsageRecord(
        airlock_id=envelope.airlock_id,
        request_id=request.request_id,
        client_id=request.client_id,
        tenant=request.tenant,
        use_case=request.use_case,
        model=request.model,
        served_model=completion.model,
        target=completion.target,
        usage=completion.usage,
        cost_usd=cost_usd,
        cached=completion.cached,
    )
