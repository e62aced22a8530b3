"""One model call attempt against one target, through the real ``openai`` client.

The attempt never retries by itself (the client is built with ``max_retries=0``): retries,
backoff, fallback and circuit breaking are the router's job, because only the router knows
the request's deadline, the other targets and the fleet's pacing. Every failure is
classified into a :class:`AttemptFailure` kind the router acts on.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import httpx2
import openai

from airlock.core.models import ChatMessage, Usage

FailureKind = Literal["rate_limited", "server", "timeout", "connection", "malformed", "rejected", "target_refused"]

#: Failures worth another attempt on the same target (after a backoff).
RETRYABLE: frozenset[str] = frozenset({"rate_limited", "server", "timeout", "connection", "malformed"})
#: Failures that say the target is unhealthy or misconfigured (they feed its circuit breaker).
TARGET_FAULTS: frozenset[str] = frozenset({"server", "timeout", "connection", "malformed", "target_refused"})


class AttemptFailure(Exception):
    """Why one attempt did not produce an answer.

    Args:
        kind: ``rate_limited`` (429), ``server`` (5xx, 409), ``timeout``, ``connection``,
            ``malformed`` (unreadable answer), ``rejected`` (4xx: the request's fault),
            ``target_refused`` (401/403/404: the target's key or deployment is wrong).
        detail: A short description without prompt text or secrets.
        status: The HTTP status, when there was one.
        retry_after: Seconds the provider asked to wait (``Retry-After``), when it did.
    """

    def __init__(self, kind: FailureKind, detail: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(detail)
        self.kind: FailureKind = kind
        self.detail = detail
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Whether another attempt on the same target may succeed."""
        return self.kind in RETRYABLE

    @property
    def target_fault(self) -> bool:
        """Whether this failure counts against the target's health."""
        return self.kind in TARGET_FAULTS

    @property
    def label(self) -> str:
        """Compact form for audit trails, e.g. ``429``, ``timeout`` or ``500``."""
        return str(self.status) if self.status is not None else self.kind


@dataclass(frozen=True)
class Answer:
    """A provider's answer, reduced to what Airlock keeps.

    Attributes:
        content: The assistant message (redacted form: placeholders, not values).
        finish_reason: As the provider said it (``stop``, ``length``, ``content_filter``…).
        model: The model the provider says answered.
        usage: Token counts from the provider's ``usage``.
        latency_ms: Time of the HTTP call.
    """

    content: str
    finish_reason: str
    model: str
    usage: Usage
    latency_ms: float


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify_status(status: int, headers: Mapping[str, str]) -> AttemptFailure:
    """Turn an HTTP error status into a failure kind."""
    retry_after = parse_retry_after(headers)
    if status == 429:
        return AttemptFailure("rate_limited", "provider rate limit (HTTP 429)", status=status, retry_after=retry_after)
    if status == 408:
        return AttemptFailure("timeout", "provider timed out (HTTP 408)", status=status, retry_after=retry_after)
    if status == 409 or status >= 500:
        return AttemptFailure("server", f"provider error (HTTP {status})", status=status, retry_after=retry_after)
    if status in (401, 403, 404):
        return AttemptFailure(
            "target_refused", f"target refused its credentials or model (HTTP {status})", status=status
        )
    return AttemptFailure("rejected", f"provider refused the request (HTTP {status})", status=status)


def parse_answer(raw: bytes, latency_ms: float) -> Answer:
    """Read a chat completion body.

    Raises:
        AttemptFailure: ``malformed`` when the body is not a chat completion.
    """
    try:
        body = json.loads(raw)
        choice = body["choices"][0]
        usage = body.get("usage") or {}
        return Answer(
            content=choice["message"].get("content") or "",
            finish_reason=choice.get("finish_reason") or "stop",
            model=str(body.get("model") or ""),
            usage=Usage(
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
            ),
            latency_ms=latency_ms,
        )
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise AttemptFailure("malformed", "provider answer is not a chat completion") from None


async def attempt(
    client: openai.AsyncOpenAI,
    *,
    model: str,
    messages: Sequence[ChatMessage],
    params: Mapping[str, Any],
    timeout_s: float,
) -> Answer:
    """One call to ``/chat/completions``, bounded by ``timeout_s`` in total.

    The body is posted as the API defines it; the answer is read from the raw response
    (the SDK's typed parsing costs more CPU than the whole rest of the worker per call).

    Raises:
        AttemptFailure: Classified; never any other exception for provider behaviour.
    """
    body = {"model": model, "messages": [{"role": m.role, "content": m.content} for m in messages], **params}
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            response = await client.post(
                "/chat/completions",
                cast_to=httpx2.Response,
                body=body,
                options={"timeout": timeout_s},
            )
            raw = response.content
    except TimeoutError:
        raise AttemptFailure("timeout", f"no answer within {timeout_s:g}s") from None
    except openai.APIStatusError as error:
        raise classify_status(error.status_code, error.response.headers) from None
    except openai.APITimeoutError as error:
        if _refused(error):
            raise AttemptFailure("connection", "provider connection refused or dropped") from None
        raise AttemptFailure("timeout", f"no answer within {timeout_s:g}s") from None
    except openai.APIConnectionError as error:
        raise AttemptFailure(
            "connection", f"provider unreachable ({type(error.__cause__ or error).__name__})"
        ) from None
    except openai.OpenAIError as error:
        raise AttemptFailure("malformed", f"provider call failed ({type(error).__name__})") from None
    return parse_answer(raw, (time.perf_counter() - started) * 1000)


def _refused(error: BaseException) -> bool:
    """Whether a "timeout" was really a connection failure.

    The SDK's aiohttp transport reports refused connections and connections the server
    closed (e.g. an idle keep-alive connection reused just as the server dropped it) as
    connect *timeouts*; the cause chain tells them apart.
    """
    seen: BaseException | None = error
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, aiohttp.ServerTimeoutError | TimeoutError):
            return False
        if isinstance(seen, aiohttp.ClientConnectionError | OSError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
