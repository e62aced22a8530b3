"""Provider clients: one ``openai`` client per routing target, keys from env or files only."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import httpx2
import openai
from pydantic import SecretStr

from airlock.llm_worker.routing import RoutingError, RoutingTable, TargetSpec, read_key

OPENAI_API = "https://api.openai.com/v1"
#: Sent to keyless OpenAI-compatible endpoints, which ignore it (the client requires a value).
NO_KEY = "no-key"


def resolve_keys(
    table: RoutingTable,
    default_key: SecretStr | None,
    env: Mapping[str, str] | None = None,
    keys_dir: Path | None = None,
) -> dict[str, SecretStr]:
    """Each target's API key: its own reference, else the worker's default key.

    Raises:
        RoutingError: A target's key cannot be read, or an OpenAI/Azure target has none.
    """
    keys: dict[str, SecretStr] = {}
    for target in table.targets():
        key = read_key(target, env, keys_dir) or default_key
        if key is None:
            if target.provider != "openai-compatible":
                raise RoutingError(
                    f"target {target.name} has no API key: set api_key_env or api_key_file in the routing table, "
                    "or AIRLOCK_LLM_WORKER_OPENAI_API_KEY (OPENAI_API_KEY)"
                )
            key = SecretStr(NO_KEY)
        keys[target.name] = key
    return keys


def build_client(target: TargetSpec, key: SecretStr, *, max_connections: int) -> openai.AsyncOpenAI:
    """The client for one target (``AsyncAzureOpenAI`` for Azure), on aiohttp, without its own retries.

    Retries belong to the router, which knows the deadline and the other targets; aiohttp
    is the SDK's recommended transport for many concurrent calls.
    """
    http = openai.DefaultAioHttpClient(
        limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    )
    if target.provider == "azure":
        return openai.AsyncAzureOpenAI(
            azure_endpoint=str(target.endpoint),
            api_version=target.api_version,
            api_key=key.get_secret_value(),
            max_retries=0,
            http_client=http,
        )
    return openai.AsyncOpenAI(
        api_key=key.get_secret_value(),
        base_url=target.endpoint or OPENAI_API,
        max_retries=0,
        http_client=http,
    )


def build_clients(
    table: RoutingTable, keys: Mapping[str, SecretStr], *, max_connections: int
) -> dict[str, openai.AsyncOpenAI]:
    """A client per target of the table."""
    return {t.name: build_client(t, keys[t.name], max_connections=max_connections) for t in table.targets()}
