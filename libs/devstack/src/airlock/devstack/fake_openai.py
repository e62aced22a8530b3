"""A fake OpenAI API over real HTTP, for dev and tests.

``POST /v1/chat/completions`` answers deterministically, quoting the last user message
verbatim (so placeholders round-trip), with ``usage`` filled in; ``GET /v1/models`` lists
models. The same server plays any number of independent **targets** (providers), each with
its own behaviour and call log, so routing, fallback and circuit breaking can be exercised
with one process:

* ``/v1/…`` is the ``default`` target, OpenAI style (``Authorization: Bearer …``);
* ``/t/<target>/v1/…`` is target ``<target>``, OpenAI style;
* ``/openai/deployments/<deployment>/chat/completions?api-version=…`` and
  ``/t/<target>/openai/deployments/…`` speak Azure OpenAI (``api-key`` header, ``api-version``
  query parameter), as ``openai.AsyncAzureOpenAI`` calls them.

Faults are injected per request by a marker in the last user message — ``[[fake:429]]``,
``[[fake:500]]``, ``[[fake:timeout]]``, ``[[fake:malformed]]``, ``[[fake:length]]``,
``[[fake:content_filter]]``, ``[[fake:400]]``, ``[[fake:404]]`` — or for a while by the
control API:

* ``GET /_fake/requests`` — every request body received, all targets (what the model "saw");
  ``DELETE /_fake/requests`` clears them.
* ``PUT /_fake/config`` — the ``default`` target's behaviour: ``{"latency_ms": 300,
  "fault": "429", "fault_rate": 0.5, "fault_count": 10, "retry_after_s": 1}``; ``GET`` shows it.
* ``PUT /_fake/targets/<target>/config`` — the same for one target (a target starts with
  the behaviour the server was started with).
* ``GET /_fake/targets/<target>/calls`` — that target's calls: arrival time, status, fault;
  ``DELETE`` clears them.
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
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FAULTS = ("429", "500", "timeout", "malformed", "length", "content_filter", "400", "404")
_MARKER = re.compile(r"\[\[fake:(" + "|".join(FAULTS) + r")\]\]")
MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")
DEFAULT_TARGET = "default"


@dataclass
class FakeConfig:
    """Behaviour of one fake target; changed at run time through the control API.

    Attributes:
        latency_ms: Delay before every answer.
        fault: A fault injected into requests while ``fault_count`` lasts (or at ``fault_rate``).
        fault_rate: Probability that a request gets ``fault`` (1.0 = all).
        fault_count: How many more requests get ``fault``; -1 = no limit.
        retry_after_s: ``Retry-After`` sent with 429 answers (``None``: no header).
        timeout_s: How long a ``timeout`` fault stalls before answering 504.
    """

    latency_ms: float = 0.0
    fault: str | None = None
    fault_rate: float = 1.0
    fault_count: int = -1
    retry_after_s: float | None = 1.0
    timeout_s: float = 120.0


@dataclass
class FakeTarget:
    """One simulated provider: its behaviour and what it was asked.

    Attributes:
        config: Its current behaviour.
        calls: One entry per chat request: ``at`` (arrival, epoch seconds), ``status``,
            ``fault``, ``api`` (``openai`` or ``azure``) and ``model``.
    """

    config: FakeConfig
    calls: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=100_000))


def count_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: about one token per four characters."""
    return max(1, (len(text) + 3) // 4)


class FakeOpenAI:
    """The fake server's state and its Starlette app.

    Args:
        config: Initial behaviour of every target.
        keep: How many received request bodies to keep.
    """

    def __init__(self, config: FakeConfig | None = None, keep: int = 10_000) -> None:
        self._initial = config or FakeConfig()
        self.targets: dict[str, FakeTarget] = {DEFAULT_TARGET: FakeTarget(replace(self._initial))}
        self.received: deque[dict[str, Any]] = deque(maxlen=keep)
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/t/{target}/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/openai/deployments/{deployment}/chat/completions", self.chat_completions, methods=["POST"]),
                Route(
                    "/t/{target}/openai/deployments/{deployment}/chat/completions",
                    self.chat_completions,
                    methods=["POST"],
                ),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/t/{target}/v1/models", self.models, methods=["GET"]),
                Route("/_fake/requests", self.requests, methods=["GET", "DELETE"]),
                Route("/_fake/config", self.configure, methods=["GET", "PUT"]),
                Route("/_fake/targets/{target}/config", self.configure, methods=["GET", "PUT"]),
                Route("/_fake/targets/{target}/calls", self.calls, methods=["GET", "DELETE"]),
                Route("/_fake/health", self.health, methods=["GET"]),
            ]
        )

    @property
    def config(self) -> FakeConfig:
        """The ``default`` target's behaviour."""
        return self.target(DEFAULT_TARGET).config

    def target(self, name: str) -> FakeTarget:
        """The target called ``name``, created with the server's initial behaviour."""
        found = self.targets.get(name)
        if found is None:
            found = self.targets[name] = FakeTarget(replace(self._initial))
        return found

    @staticmethod
    def _fault_for(config: FakeConfig, body: dict[str, Any]) -> str | None:
        last_user = next((m.get("content") for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
        marker = _MARKER.search(last_user if isinstance(last_user, str) else "")
        if marker:
            return marker.group(1)
        if config.fault and config.fault_count != 0 and random.random() < config.fault_rate:
            if config.fault_count > 0:
                config.fault_count -= 1
            return config.fault
        return None

    async def chat_completions(self, request: Request) -> Response:
        """``POST …/chat/completions`` (non-streaming), OpenAI or Azure style."""
        azure = "deployment" in request.path_params
        target = self.target(request.path_params.get("target", DEFAULT_TARGET))
        arrived = time.time()
        if azure:
            if not request.headers.get("api-key"):
                return _error(401, "missing api-key header", "invalid_request_error")
            if not request.query_params.get("api-version"):
                return _error(400, "missing api-version query parameter", "invalid_request_error")
        elif not request.headers.get("authorization", "").startswith("Bearer "):
            return _error(401, "missing API key", "invalid_request_error")
        try:
            body = json.loads(await request.body())
            messages = body["messages"]
            model = request.path_params["deployment"] if azure else body["model"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "body must be JSON with model and messages", "invalid_request_error")
        self.received.append(body)
        config = target.config
        fault = self._fault_for(config, body)
        call = {"at": arrived, "fault": fault, "api": "azure" if azure else "openai", "model": model}
        target.calls.append(call)
        response = await self._answer(config, fault, messages, model)
        call["status"] = response.status_code
        return response

    async def _answer(self, config: FakeConfig, fault: str | None, messages: list[Any], model: str) -> Response:
        if config.latency_ms:
            await asyncio.sleep(config.latency_ms / 1000)
        if fault == "429":
            response = _error(429, "rate limited (fake)", "rate_limit_exceeded")
            if config.retry_after_s is not None:
                response.headers["retry-after"] = f"{config.retry_after_s:g}"
            return response
        if fault == "500":
            return _error(500, "internal error (fake)", "server_error")
        if fault == "400":
            return _error(400, "invalid request (fake)", "invalid_request_error")
        if fault == "404":
            return _error(404, "model or deployment not found (fake)", "not_found")
        if fault == "timeout":
            await asyncio.sleep(config.timeout_s)
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
        """``GET|PUT /_fake/config`` and ``/_fake/targets/<target>/config``."""
        target = self.target(request.path_params.get("target", DEFAULT_TARGET))
        if request.method == "PUT":
            changes = json.loads(await request.body())
            unknown = set(changes) - set(asdict(target.config))
            if unknown or changes.get("fault") not in (None, *FAULTS):
                return _error(400, f"unknown settings {sorted(unknown)} or fault", "invalid_request_error")
            target.config = FakeConfig(**{**asdict(target.config), **changes})
        return JSONResponse(asdict(target.config))

    async def calls(self, request: Request) -> Response:
        """``GET|DELETE /_fake/targets/<target>/calls``: the target's call log."""
        target = self.target(request.path_params["target"])
        if request.method == "DELETE":
            target.calls.clear()
            return Response(status_code=204)
        return JSONResponse(list(target.calls))

    async def health(self, request: Request) -> Response:
        """``GET /_fake/health``."""
        return JSONResponse({"ok": True})


def _error(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": code, "code": code}}, status_code=status)


def serve(host: str = "127.0.0.1", port: int = 8080, latency_ms: float = 0.0) -> None:
    """Run the fake server in the foreground (uvicorn)."""
    import uvicorn

    fake = FakeOpenAI(FakeConfig(latency_ms=latency_ms))
    # Keep idle connections longer than clients do (aiohttp: 5 s), so a client never reuses
    # a connection the server is closing at that very moment.
    uvicorn.run(fake.app, host=host, port=port, log_level="warning", access_log=False, timeout_keep_alive=75)


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
