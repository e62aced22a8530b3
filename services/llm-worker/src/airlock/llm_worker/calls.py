"""One model call through the real ``openai`` client, classified into outcome kinds."""

from __future__ import annotations

import time

import openai

from airlock.core.errors import ErrorCode, StageError
from airlock.core.models import Completion, LLMRequest, Usage


class CallFailure(Exception):
    """A model call that will not succeed by retrying now.

    Args:
        error: The structured error for the caller.
    """

    def __init__(self, error: StageError) -> None:
        super().__init__(error.message)
        self.error = error


def is_retryable_status(status: int) -> bool:
    """Statuses worth retrying: timeouts, conflicts, rate limits and server errors."""
    return status in (408, 409, 429) or status >= 500


async def call_model(client: openai.AsyncOpenAI, request: LLMRequest, timeout_s: float) -> Completion:
    """Send the (already redacted) conversation and return the completion.

    Raises:
        CallFailure: When the provider refused the request or stayed unavailable after the
            client's own retries.
    """
    started = time.perf_counter()
    params = request.params.model_dump(exclude_none=True)
    try:
        response = await client.chat.completions.create(
            model=request.model,
            messages=[{"role": m.role, "content": m.content} for m in request.messages],  # type: ignore[misc]
            timeout=timeout_s,
            **params,
        )
    except openai.APIStatusError as error:
        if is_retryable_status(error.status_code):
            raise CallFailure(
                StageError(ErrorCode.MODEL_UNAVAILABLE, f"model provider answered HTTP {error.status_code}")
            ) from None
        raise CallFailure(
            StageError(ErrorCode.MODEL_REJECTED, f"model provider refused the request (HTTP {error.status_code})")
        ) from None
    except (openai.APIConnectionError, openai.APITimeoutError) as error:
        raise CallFailure(
            StageError(ErrorCode.MODEL_UNAVAILABLE, f"model provider unreachable: {type(error).__name__}")
        ) from None
    choice = response.choices[0]
    usage = response.usage
    return Completion(
        content=choice.message.content or "",
        finish_reason=choice.finish_reason or "stop",
        model=response.model,
        usage=Usage(
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
        ),
        latency_ms=(time.perf_counter() - started) * 1000,
    )
