"""Assembling the worker's parts from its settings (shared by the app and the benchmark)."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import openai

from airlock.core.authenticity import Door, Signer
from airlock.core.pricing import PriceTable
from airlock.core.settings import SettingsError
from airlock.core.stage import StageContext
from airlock.llm_worker.cache import ResponseCache
from airlock.llm_worker.feeds import CacheFeed, PacingFeed
from airlock.llm_worker.handlers import CompletionHandler
from airlock.llm_worker.pacing import Pacer, PacingPolicy
from airlock.llm_worker.providers import build_clients, resolve_keys
from airlock.llm_worker.resilience import Backoff, CircuitBreaker
from airlock.llm_worker.router import Call, Router, RouterPolicy, openai_call
from airlock.llm_worker.routing import RoutingError, RoutingTable, single_target_table
from airlock.llm_worker.settings import LLMWorkerSettings


def routing_table(settings: LLMWorkerSettings) -> RoutingTable:
    """The routing file's table, or one target per approved model without a file.

    Raises:
        SettingsError: The file is unreadable or invalid (the message names the variable).
    """
    try:
        if settings.routes_file is not None:
            return RoutingTable.from_yaml(settings.routes_file)
        return single_target_table(settings.model_names(), endpoint=settings.openai_base_url)
    except RoutingError as error:
        raise SettingsError(f"AIRLOCK_LLM_WORKER_ROUTES_FILE: {error}") from None


def price_table(settings: LLMWorkerSettings) -> PriceTable:
    """The configured price table, or the built-in list prices.

    Raises:
        SettingsError: The file is unreadable or invalid.
    """
    return PriceTable.configured(settings.prices_file, variable="AIRLOCK_LLM_WORKER_PRICES_FILE")


@dataclass
class Worker:
    """The llm-worker's parts.

    Attributes:
        handler: The stage's processor.
        router: Provider calls with pacing, retries, breakers and fallback.
        pacer: This replica's pacing.
        pacing: Shares pacing signals with the fleet (start/stop with the app).
        cache_feed: Follows the cache topic (``None`` when no tenant opted in).
        clients: One provider client per target (close on shutdown).
    """

    handler: CompletionHandler
    router: Router
    pacer: Pacer
    pacing: PacingFeed
    cache_feed: CacheFeed | None
    clients: dict[str, openai.AsyncOpenAI]

    async def start(self) -> None:
        """Start the side channels (pacing signals, cache topic)."""
        await self.pacing.start()
        if self.cache_feed is not None:
            await self.cache_feed.start()

    async def stop(self) -> None:
        """Stop the side channels and close the provider clients."""
        if self.cache_feed is not None:
            await self.cache_feed.stop()
        await self.pacing.stop()
        await asyncio.gather(*(client.close() for client in self.clients.values()), return_exceptions=True)


#: Collector thresholds once started: young collections every 50,000 net allocations instead
#: of CPython's 700. With hundreds of calls in flight, 700 meant a young collection every few
#: requests (~500 in 20 s at 300 requests/s, up to 10 ms each, older generations up to 56 ms):
#: most of the worker's p99. Cyclic garbage waits a little longer; memory barely moves.
GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """Freeze the start-up heap and make collections rare (call once, when started).

    Modules, pydantic schemas and clients are hundreds of thousands of long-lived objects;
    every full collection would walk them all while calls are in flight. Frozen, they are
    skipped (gc.freeze); the thresholds (:data:`GC_THRESHOLDS`) space out the collections of
    what each request allocates. Measured by ``airlock bench llm-worker``.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def build_worker(
    settings: LLMWorkerSettings,
    context: StageContext,
    share: Callable[[], float],
    *,
    wrap_call: Callable[[Call], Call] | None = None,
    door: Door | None = None,
    signer: Signer | None = None,
) -> Worker:
    """Build every part of the worker from its settings.

    Args:
        settings: The worker's settings.
        context: Audit and record builders.
        share: This replica's share of the fleet's provider limits (0 < share ≤ 1).
        wrap_call: Wraps the provider call (the benchmark times the calls with it).
        door: Checks the side channels' records (the cache and the fleet's pacing signals).
        signer: Signs this replica's pacing signals.

    Raises:
        SettingsError: Invalid routing or price table, or a target without a readable key.
    """
    table = routing_table(settings)
    try:
        keys = resolve_keys(table, settings.openai_api_key, keys_dir=settings.provider_keys_dir)
    except RoutingError as error:
        raise SettingsError(str(error)) from None
    clients = build_clients(table, keys, max_connections=settings.max_concurrency)
    pacer = Pacer(
        {t.name: (t.rpm, t.tpm) for t in table.targets()},
        share=share,
        origin=f"{socket.gethostname()}-{os.getpid()}",
        policy=PacingPolicy(burst_s=settings.pacing_burst_s, recovery_s=settings.pacing_recovery_s),
    )
    pacing = PacingFeed(settings.kafka, context.topics.llm_pacing, pacer, door=door, signer=signer)
    call = openai_call(clients)
    router = Router(
        wrap_call(call) if wrap_call is not None else call,
        pacer,
        policy=RouterPolicy(
            attempts_per_target=settings.attempts_per_target,
            call_timeout_s=settings.call_timeout_s,
            retry_after_max_s=settings.retry_after_max_s,
            pacing_max_wait_s=settings.pacing_max_wait_s,
            unavailable_wait_max_s=settings.unavailable_wait_max_s,
            backoff=Backoff(settings.backoff_base_s, settings.backoff_max_s),
        ),
        breaker=lambda: CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s),
        slots=asyncio.Semaphore(settings.max_concurrency),
        publish=pacing.publish,
    )
    cache = ResponseCache(settings.cache_max_entries) if table.cache and settings.cache_max_entries else None
    handler = CompletionHandler(context, router, table, price_table(settings), cache=cache)
    cache_feed = CacheFeed(settings.kafka, context.topics.llm_cache, cache, door=door) if cache is not None else None
    return Worker(handler, router, pacer, pacing, cache_feed, clients)
