"""Anomaly detection: rolling baselines per tenant and content indicators, pure (no Kafka).

Each anomaly becomes one audit *notice* (``details.extra.anomaly`` = its kind, plus counts
and rates — never text), committed with the outcome of the record that revealed it; the
stage runtime counts committed notices in ``airlock_<service>_anomalies_total`` and logs
one line for each. Where each detector runs, and why:

* **Rates** (:class:`AuditWatch`): requests and tokens per tenant, and blocked, failed and
  rejected requests per tenant, run in the **auditor** — the one service that sees every
  audit event of every stage (RECEIVED, COMPLETED with its usage, BLOCKED, FAILED…). Each
  replica judges the partitions it seals; events are keyed by Airlock id, so a tenant's
  traffic spreads evenly and the ratio to the baseline holds for any share, while the
  absolute floors are scaled by the replica's share of partitions.
* **Prompt injection** (:func:`injection_indicators`): in the **redactor**, the only
  service allowed to read raw prompts, before masking.
* **Placeholder alteration and introduced PII** (:func:`output_anomalies`): in the
  **redactor**'s restore step, which alone holds the placeholder map and scans the answer.

A rate anomaly is judged per fixed window (``window_s``): a window whose running total
exceeds ``max(surge_factor × baseline, floor)`` fires once. The baseline is an exponentially
weighted mean of past windows' totals (weight ``smoothing`` for the newest; empty windows
count as zero), judged only after ``warmup_windows`` windows of the series' history, so a
restart or a new tenant does not alarm on its first traffic. Time is the events' own
timestamps, so the verdicts do not depend on when the auditor reads them.
"""

from __future__ import annotations

import math
import re
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from airlock.core.lifecycle import State
from airlock.core.models import AuditDetails, AuditEvent, AuditScalar, ChatMessage
from airlock.core.settings import AirlockSettings
from airlock.core.stage import StageContext

_NAMESPACE = uuid.UUID("0b3c0a7e-6d55-4f57-9d0e-2f6a1b9c7e41")


class AnomalyKind(StrEnum):
    """What was unusual."""

    REQUEST_SURGE = "request_surge"
    """A tenant's requests in a window far above its baseline."""
    TOKEN_SURGE = "token_surge"  # noqa: S105 (an anomaly kind, not a secret)
    """A tenant's tokens (input + output) in a window far above its baseline."""
    BLOCKED_SPIKE = "blocked_spike"
    """A tenant's requests blocked by redaction policy far above its baseline."""
    FAILED_SPIKE = "failed_spike"
    """A tenant's failed requests far above its baseline."""
    REJECTED_SPIKE = "rejected_spike"
    """A tenant's requests refused by ingest far above its baseline."""
    PROMPT_INJECTION = "prompt_injection"
    """A prompt matches prompt-injection indicators."""
    PLACEHOLDER_ALTERED = "placeholder_altered"
    """The model changed or invented placeholders in its answer."""
    INTRODUCED_PII = "introduced_pii"
    """The answer holds personal data that is not the caller's own."""


class AnomalySettings(AirlockSettings):
    """Anomaly detection (``AIRLOCK_ANOMALY_*``), read by the redactor and the auditor.

    Attributes:
        window_s: Length of a rate window.
        surge_factor: A window above this multiple of the baseline is a surge or spike.
        warmup_windows: Windows of a tenant's history before its rates are judged.
        smoothing: Weight of the newest window in the baseline (exponential mean).
        min_requests: Fewest requests in a window for a request surge.
        min_tokens: Fewest tokens in a window for a token surge.
        min_errors: Fewest blocked, failed or rejected requests in a window for a spike.
        max_tenants: Tenants whose baselines are kept (least recently active dropped).
        prompt_injection: Look for prompt-injection indicators in prompts (redactor).
        output: Report answers with altered placeholders or introduced PII (redactor).
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="AIRLOCK_ANOMALY_")

    window_s: float = Field(default=60.0, gt=0)
    surge_factor: float = Field(default=4.0, gt=1)
    warmup_windows: int = Field(default=10, ge=1)
    smoothing: float = Field(default=0.1, gt=0, le=1)
    min_requests: float = Field(default=30, ge=1)
    min_tokens: float = Field(default=20_000, ge=1)
    min_errors: float = Field(default=10, ge=1)
    max_tenants: int = Field(default=10_000, ge=1)
    prompt_injection: bool = True
    output: bool = True


@dataclass(frozen=True)
class Anomaly:
    """One anomaly, ready to become an audit notice.

    Attributes:
        kind: What was unusual.
        tenant: Whose traffic.
        facts: Counts and rates (no text): observed, baseline, indicators…
        airlock_id: The request it is about (content anomalies); ``None`` for rates.
        request_id: The caller's id of that request.
        client_id: The client that sent it.
        window_start: Start of the rate window (epoch seconds), for rate anomalies.
    """

    kind: AnomalyKind
    tenant: str | None
    facts: dict[str, AuditScalar] = field(default_factory=dict)
    airlock_id: str | None = None
    request_id: str | None = None
    client_id: str | None = None
    window_start: int | None = None

    def notice(self, context: StageContext) -> AuditEvent:
        """The audit notice: deterministic id, so a replica or a replay records it once."""
        airlock_id = self.airlock_id or str(
            uuid.uuid5(_NAMESPACE, f"anomaly|{self.kind.value}|{self.tenant}|{self.window_start}")
        )
        details = AuditDetails(extra={"anomaly": self.kind.value, **self.facts})
        event = context.notice(airlock_id, f"anomaly:{self.kind.value}", request_id=self.request_id, details=details)
        return event.model_copy(update={"tenant": self.tenant, "client_id": self.client_id})


# -- rates ---------------------------------------------------------------------------------


class Signal(StrEnum):
    """A per-tenant series the auditor watches."""

    REQUESTS = "requests"
    TOKENS = "tokens"
    BLOCKED = "blocked"
    FAILED = "failed"
    REJECTED = "rejected"


_KIND_OF = {
    Signal.REQUESTS: AnomalyKind.REQUEST_SURGE,
    Signal.TOKENS: AnomalyKind.TOKEN_SURGE,
    Signal.BLOCKED: AnomalyKind.BLOCKED_SPIKE,
    Signal.FAILED: AnomalyKind.FAILED_SPIKE,
    Signal.REJECTED: AnomalyKind.REJECTED_SPIKE,
}
#: Empty windows decayed one by one at most; beyond that the baseline is as good as zero.
_MAX_DECAY_STEPS = 10_000


@dataclass
class _Series:
    window: int
    current: float = 0.0
    baseline: float = 0.0
    closed: int = 0
    fired: bool = False


class RateWatch:
    """Rolling baselines of per-window totals, one series per (tenant, signal).

    Args:
        settings: Window, factor, warm-up, smoothing, floors, memory bound.
        share: This replica's share of the traffic (0 < share ≤ 1); scales the floors.
    """

    def __init__(self, settings: AnomalySettings, *, share: Callable[[], float] = lambda: 1.0) -> None:
        self._settings = settings
        self._share = share
        self._series: OrderedDict[tuple[str, Signal], _Series] = OrderedDict()
        self._floors = {
            Signal.REQUESTS: settings.min_requests,
            Signal.TOKENS: settings.min_tokens,
            Signal.BLOCKED: settings.min_errors,
            Signal.FAILED: settings.min_errors,
            Signal.REJECTED: settings.min_errors,
        }

    def add(self, tenant: str, signal: Signal, amount: float, at: float) -> Anomaly | None:
        """Count ``amount`` of ``signal`` for ``tenant`` at ``at`` (epoch seconds); the anomaly, if any.

        An amount from a window already closed (an event that arrives late) is ignored.
        """
        if amount <= 0:
            return None
        window = math.floor(at / self._settings.window_s)
        key = (tenant, signal)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(window)
            while len(self._series) > self._settings.max_tenants * len(Signal):
                self._series.popitem(last=False)
        else:
            self._series.move_to_end(key)
        if window < series.window:
            return None
        if window > series.window:
            self._roll(series, window)
        series.current += amount
        if series.fired or series.closed < self._settings.warmup_windows:
            return None
        floor = self._floors[signal] * min(1.0, max(self._share(), 1e-6))
        threshold = max(self._settings.surge_factor * series.baseline, floor)
        if series.current <= threshold:
            return None
        series.fired = True
        ratio = series.current / series.baseline if series.baseline > 0 else None
        return Anomaly(
            kind=_KIND_OF[signal],
            tenant=tenant,
            facts={
                "signal": signal.value,
                "observed": round(series.current, 3),
                "baseline": round(series.baseline, 3),
                "threshold": round(threshold, 3),
                "ratio": None if ratio is None else round(ratio, 2),
                "surge_factor": self._settings.surge_factor,
                "window_s": self._settings.window_s,
            },
            window_start=int(window * self._settings.window_s),
        )

    def _roll(self, series: _Series, window: int) -> None:
        alpha = self._settings.smoothing
        if series.closed == 0:
            series.baseline = series.current
        else:
            series.baseline = alpha * series.current + (1 - alpha) * series.baseline
        empty = min(window - series.window - 1, _MAX_DECAY_STEPS)
        series.baseline *= (1 - alpha) ** empty
        series.closed += window - series.window
        series.window, series.current, series.fired = window, 0.0, False

    def baseline(self, tenant: str, signal: Signal) -> float | None:
        """The current baseline of a series (``None`` when not tracked)."""
        series = self._series.get((tenant, signal))
        return None if series is None else series.baseline


class AuditWatch:
    """Turns sealed audit events into per-tenant signals for a :class:`RateWatch`.

    Each event counts once (by event id, within ``remember`` ids), even when a rewound
    partition is sealed again. Notices, and events without a tenant, are not counted.

    Args:
        settings: Detection settings.
        share: This replica's share of the audit partitions.
        remember: Event ids remembered to count each event once.
    """

    def __init__(
        self, settings: AnomalySettings, *, share: Callable[[], float] = lambda: 1.0, remember: int = 10_000
    ) -> None:
        self.rates = RateWatch(settings, share=share)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = max(1, remember)

    def observe(self, event: AuditEvent) -> list[Anomaly]:
        """The anomalies ``event`` reveals (usually none)."""
        if event.kind != "transition" or not event.tenant or event.event_id in self._seen:
            return []
        self._seen[event.event_id] = None
        while len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        at = event.at.timestamp()
        found = []
        for signal, amount in _signals(event):
            anomaly = self.rates.add(event.tenant, signal, amount, at)
            if anomaly is not None:
                found.append(anomaly)
        return found


def _signals(event: AuditEvent) -> list[tuple[Signal, float]]:
    target = event.to_state
    if target is State.RECEIVED:
        return [(Signal.REQUESTS, 1)]
    if target is State.COMPLETED and event.details.usage is not None:
        usage = event.details.usage
        return [(Signal.TOKENS, usage.input_tokens + usage.output_tokens)]
    if target is State.BLOCKED:
        return [(Signal.BLOCKED, 1)]
    if target is State.FAILED:
        return [(Signal.FAILED, 1)]
    if target is State.REJECTED:
        return [(Signal.REJECTED, 1)]
    return []


# -- content ---------------------------------------------------------------------------------

_GAP = r"[^.\n]{0,40}?"
#: Indicator name → pattern. Names (never the matched text) go into the audit notice.
INJECTION_INDICATORS: dict[str, re.Pattern[str]] = {
    "ignore_instructions": re.compile(
        rf"\b(?:ignore|disregard|forget|override)\b{_GAP}\b(?:previous|prior|above|earlier|all|any|your|the)\b"
        rf"{_GAP}\b(?:instructions?|prompts?|rules|directions|guidelines)\b",
        re.IGNORECASE,
    ),
    "reveal_system_prompt": re.compile(
        rf"\b(?:reveal|show|print|repeat|output|display|leak|dump)\b{_GAP}"
        r"\b(?:system|hidden|initial|original|secret)\s+(?:prompt|instructions?|message)s?\b",
        re.IGNORECASE,
    ),
    "role_override": re.compile(
        r"\byou are no longer\b|\bdeveloper mode\b|\bdo anything now\b|\bjailbr(?:eak|oken)\b"
        r"|\b(?:act|behave|respond) as (?:an? )?(?:unfiltered|unrestricted|uncensored)\b",
        re.IGNORECASE,
    ),
    "safety_override": re.compile(
        rf"\b(?:bypass|disable|turn off|ignore|circumvent)\b{_GAP}"
        r"\b(?:safety|content|moderation)\s+(?:filters?|polic(?:y|ies)|guidelines|rules)\b",
        re.IGNORECASE,
    ),
    "special_tokens": re.compile(r"<\|(?:im_start|im_end|system|endoftext)\|>|\[/?INST\]|<<SYS>>|</?system>"),
}


def injection_indicators(messages: Iterable[ChatMessage]) -> list[str]:
    """Names of the prompt-injection indicators the user messages match, sorted.

    Only ``user`` messages are read: system and developer messages come from the calling
    system itself; user messages may carry text from outside it.
    """
    texts = [message.content for message in messages if message.role == "user"]
    return sorted(name for name, pattern in INJECTION_INDICATORS.items() if any(pattern.search(t) for t in texts))


def injection_anomaly(messages: Iterable[ChatMessage], event: AuditEvent) -> Anomaly | None:
    """A prompt-injection anomaly about ``event``'s request, when its prompt has indicators."""
    found = injection_indicators(messages)
    if not found:
        return None
    return Anomaly(
        kind=AnomalyKind.PROMPT_INJECTION,
        tenant=event.tenant,
        facts={"indicators": ",".join(found), "indicator_count": len(found)},
        airlock_id=event.airlock_id,
        request_id=event.request_id,
        client_id=event.client_id,
    )


def output_anomalies(restoration: Mapping[str, AuditScalar], event: AuditEvent) -> list[Anomaly]:
    """Anomalies in an answer, from the restore step's counts (the DELIVERED event's ``extra``).

    Placeholders altered (near-misses of a sent placeholder), unknown (placeholder-shaped
    but never sent) or out of scope (a value from a message the caller may not get back,
    asked for by name) mean the model rewrote what it was given or was steered to; PII found in the answer that
    is not the caller's own means the model introduced personal data.
    """

    def count(key: str) -> int:
        value = restoration.get(key)
        return int(value) if isinstance(value, int | float) else 0

    found: list[Anomaly] = []
    altered, unknown = count("placeholders_altered"), count("placeholders_unknown")
    out_of_scope = count("placeholders_out_of_scope")
    if altered or unknown or out_of_scope:
        found.append(
            Anomaly(
                kind=AnomalyKind.PLACEHOLDER_ALTERED,
                tenant=event.tenant,
                facts={
                    "altered": altered,
                    "unknown": unknown,
                    "out_of_scope": out_of_scope,
                    "sent": count("placeholders_sent"),
                },
                airlock_id=event.airlock_id,
                request_id=event.request_id,
                client_id=event.client_id,
            )
        )
    pii = count("output_pii_found")
    if pii:
        types = sorted(key.removeprefix("output_pii.") for key in restoration if key.startswith("output_pii."))
        found.append(
            Anomaly(
                kind=AnomalyKind.INTRODUCED_PII,
                tenant=event.tenant,
                facts={"found": pii, "types": ",".join(types), "action": restoration.get("output_pii_action")},
                airlock_id=event.airlock_id,
                request_id=event.request_id,
                client_id=event.client_id,
            )
        )
    return found
