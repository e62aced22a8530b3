"""A fake OpenAI API over real HTTP, for dev and tests.

``POST /v1/chat/completions`` answers deterministically, quoting the last user message
verbatim (so placeholders round-trip), with ``usage`` filled in; ``GET /v1/models`` lists
models. Faults are injected per request by a marker in the last user message —
``[[fake:429]]``, ``[[fake:500]]``, ``[[fake:timeout]]``, ``[[fake:malformed]]``,
``[[fake:length]]``, ``[[fake:content_filter]]`` — or for a while by the control API:

* ``GET /_fake/requests`` — every request body received (what the model "saw");
  ``DELETE /_fake/requests`` clears them.
* ``PUT /_fake/config`` — ``{"latency_ms": 300, "fault": "429", "fault_rate": 0.5,
  "fault_count": 10, "retry_after_s": 1}``; ``GET`` shows it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FAULTS = ("429", "500", "timeout", "malformed", "length", "content_filter")
_MARKER = re.compile(r"\[\[fake:(" + "|".join(FAULTS) + r")\]\]")
MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")


@dataclass
class FakeConfig:
    """Behaviour of the fake server; changed at run time through ``/_fake/config``.

    Attributes:
        latency_ms: Delay before every answer.
        fault: A fault injected into requests while ``fault_count`` lasts (or at ``fault_rate``).
        fault_rate: Probability that a request gets ``fault`` (1.0 = all).
        fault_count: How many more requests get ``fault``; -1 = no limit.
        retry_after_s: ``Retry-After`` sent with 429 answers.
        timeout_s: How long a ``timeout`` fault stalls before answering 504.
    """

    latency_ms: float = 0.0
    fault: str | None = None
    fault_rate: float = 1.0
    fault_count: int = -1
    retry_after_s: float = 1.0
    timeout_s: float = 120.0


def count_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: about one token per four characters."""
    return max(1, (len(text) + 3) // 4)


class FakeOpenAI:
    """The fake server's state and its Starlette app.

    Args:
        config: Initial behaviour.
        keep: How many received request bodies to keep.
    """

    def __init__(self, config: FakeConfig | None = None, keep: int = 10_000) -> None:
        self.config = config or FakeConfig()
        self.received: deque[dict[str, Any]] = deque(maxlen=keep)
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/_fake/requests", self.requests, methods=["GET", "DELETE"]),
                Route("/_fake/config", self.configure, methods=["GET", "PUT"]),
                Route("/_fake/health", self.health, methods=["GET"]),
            ]
        )

    def _fault_for(self, body: dict[str, Any]) -> str | None:
        last_user = next((m.get("content") for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
        marker = _MARKER.search(last_user if isinstance(last_user, str) else "")
        if marker:
            return marker.group(1)
        config = self.config
        if config.fault and config.fault_count != 0 and random.random() < config.fault_rate:
            if config.fault_count > 0:
                config.fault_count -= 1
            return config.fault
        return None

    async def chat_completions(self, request: Request) -> Response:
        """``POST /v1/chat/completions`` (non-streaming)."""
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return _error(401, "missing API key", "invalid_request_error")
        try:
            body = json.loads(await request.body())
            messages = body["messages"]
            model = body["model"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "body must be JSON with model and messages", "invalid_request_error")
        self.received.append(body)
        fault = self._fault_for(body)
        if self.config.latency_ms:
            await asyncio.sleep(self.config.latency_ms / 1000)
        if fault == "429":
            response = _error(429, "rate limited (fake)", "rate_limit_exceeded")
            response.headers["retry-after"] = f"{self.config.retry_after_s:g}"
            return response
        if fault == "500":
            return _error(500, "internal error (fake)", "server_error")
        if fault == "timeout":
            await asyncio.sleep(self.config.timeout_s)
            return _error(504, "timed out (fake)", "server_error")
        if fault == "malformed":
            return Response(b'{"id": "chatcmpl-broken", "choices": [', media_type="application/json")
        last_user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        answer = f'You said: "{last_user}"'
        finish_reason = {"length": "length", "content_filter": "content_filter"}.get(fault or "", "stop")
        prompt_tokens = sum(count_tokens(str(m.get("content", ""))) for m in messages)
        completion_tokens = count_tokens(answer)
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer},
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    async def models(self, request: Request) -> Response:
        """``GET /v1/models``."""
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in MODELS],
            }
        )

    async def requests(self, request: Request) -> Response:
        """``GET|DELETE /_fake/requests``: the bodies received so far."""
        if request.method == "DELETE":
            self.received.clear()
            return Response(status_code=204)
        return JSONResponse(list(self.received))

    async def configure(self, request: Request) -> Response:
        """``GET|PUT /_fake/config``: show or change the behaviour."""
        if request.method == "PUT":
            changes = json.loads(await request.body())
            unknown = set(changes) - set(asdict(self.config))
            if unknown or changes.get("fault") not in (None, *FAULTS):
                return _error(400, f"unknown settings {sorted(unknown)} or fault", "invalid_request_error")
            self.config = FakeConfig(**{**asdict(self.config), **changes})
        return JSONResponse(asdict(self.config))

    async def health(self, request: Request) -> Response:
        """``GET /_fake/health``."""
        return JSONResponse({"ok": True})


def _error(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": code, "code": code}}, status_code=status)


def serve(host: str = "127.0.0.1", port: int = 8080, latency_ms: float = 0.0) -> None:
    """Run the fake server in the foreground (uvicorn)."""
    import uvicorn

    fake = FakeOpenAI(FakeConfig(latency_ms=latency_ms))
    uvicorn.run(fake.app, host=host, port=port, log_level="warning", access_log=False)


def main() -> None:
    """``python -m airlock.devstack.fake_openai --port N [--latency-ms MS]``."""
    parser = argparse.ArgumentParser(description="Fake OpenAI API server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    serve(args.host, args.port, args.latency_ms)


if __name__ == "__main__":
    main()
