"""Routing table, key references and parameter governance (pure)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from airlock.core.models import ChatParams
from airlock.llm_worker.params import govern
from airlock.llm_worker.providers import resolve_keys
from airlock.llm_worker.routing import RoutingError, RoutingTable, read_key, single_target_table

TABLE = """
models:
  gpt-4o-mini:
    max_tokens: 2000
    params: [max_tokens, temperature]
    targets:
      - {name: openai, provider: openai, model: gpt-4o-mini, api_key_env: OPENAI_KEY_A, rpm: 600, tpm: 100000}
      - name: azure-eu
        provider: azure
        endpoint: https://example-eu.openai.azure.com
        deployment: mini-eu
        api_version: "2024-10-21"
        api_key_file: {key_file}
  balanced:
    targets:
      - {name: east, provider: openai-compatible, model: m, endpoint: "http://e/v1", priority: 0, weight: 3}
      - {name: west, provider: openai-compatible, model: m, endpoint: "http://w/v1", priority: 0, weight: 1}
      - {name: spare, provider: openai-compatible, model: m, endpoint: "http://s/v1", priority: 1}
limits:
  max_tokens: 4000
  tenants:
    acme: {max_tokens: 500}
cache:
  - {tenant: acme, use_case: faq, ttl_s: 60}
  - {tenant: globex, ttl_s: 10}
"""


@pytest.fixture
def table(tmp_path: Path) -> RoutingTable:
    key_file = tmp_path / "azure-key"
    key_file.write_text("azure-secret-value\n")
    path = tmp_path / "routes.yaml"
    path.write_text(TABLE.replace("{key_file}", str(key_file)))
    return RoutingTable.from_yaml(path)


def test_table_loads_routes_targets_and_unknown_model_is_not_routed(table: RoutingTable) -> None:
    route = table.route("gpt-4o-mini")
    assert route is not None
    assert [t.name for t in route.targets] == ["openai", "azure-eu"]
    assert route.targets[1].served_model == "mini-eu"
    assert route.targets[0].rpm == 600
    assert table.route("gpt-5-unapproved") is None
    assert {t.name for t in table.targets()} == {"openai", "azure-eu", "east", "west", "spare"}


def test_plan_orders_by_priority_and_splits_traffic_by_weight(table: RoutingTable) -> None:
    route = table.route("balanced")
    assert route is not None
    rng = random.Random(7)
    firsts = Counter(route.plan(rng)[0].name for _ in range(4000))
    plans = {tuple(t.name for t in route.plan(rng)) for _ in range(200)}
    assert plans == {("east", "west", "spare"), ("west", "east", "spare")}
    assert 0.70 < firsts["east"] / 4000 < 0.80  # weight 3 : 1
    plain = table.route("gpt-4o-mini")
    assert plain is not None and [t.name for t in plain.plan(rng)] == ["openai", "azure-eu"]


def test_inline_secret_in_table_is_refused_with_a_pointer_to_key_references(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("models:\n  m:\n    targets:\n      - {name: a, model: m, api_key: sk-live-123}\n")
    with pytest.raises(RoutingError) as caught:
        RoutingTable.from_yaml(path)
    assert "api_key_env or api_key_file" in str(caught.value)
    assert "sk-live-123" not in str(caught.value)


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("{name: a, provider: azure, deployment: d, api_version: v}", "endpoint"),
        ("{name: a, provider: azure, endpoint: https://x, deployment: d}", "api_version"),
        ("{name: a, provider: openai-compatible, model: m}", "endpoint"),
        ("{name: a, provider: openai}", "model"),
        ("{name: a, provider: bedrock, model: m}", "provider"),
    ],
)
def test_incomplete_targets_are_refused_naming_what_is_missing(tmp_path: Path, target: str, problem: str) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(f"models:\n  m:\n    targets:\n      - {target}\n")
    with pytest.raises(RoutingError, match=problem):
        RoutingTable.from_yaml(path)


def test_keys_come_from_env_or_file_and_missing_ones_are_named(table: RoutingTable) -> None:
    openai_target, azure_target = table.models["gpt-4o-mini"].targets
    key = read_key(openai_target, {"OPENAI_KEY_A": "sk-a"})
    assert key is not None and key.get_secret_value() == "sk-a"
    file_key = read_key(azure_target, {})
    assert file_key is not None and file_key.get_secret_value() == "azure-secret-value"
    with pytest.raises(RoutingError, match="OPENAI_KEY_A is not set"):
        read_key(openai_target, {})


def test_relative_key_file_is_found_in_the_provider_keys_directory(tmp_path: Path) -> None:
    (tmp_path / "eu").write_text("sk-eu\n")
    table = RoutingTable.model_validate(
        {"models": {"m": {"targets": [{"name": "a", "model": "m", "api_key_file": "eu"}]}}}
    )
    keys = resolve_keys(table, None, {}, keys_dir=tmp_path)
    assert keys["a"].get_secret_value() == "sk-eu"
    with pytest.raises(RoutingError, match="cannot read key file"):
        resolve_keys(table, None, {}, keys_dir=tmp_path / "missing")


def test_default_key_serves_targets_without_their_own_and_is_required_for_openai() -> None:
    table = single_target_table(["gpt-4o-mini", "gpt-4o"], endpoint=None)
    with pytest.raises(RoutingError, match="has no API key"):
        resolve_keys(table, None, {})
    compatible = single_target_table(["local"], endpoint="http://127.0.0.1:1/v1")
    assert compatible.targets()[0].provider == "openai-compatible"
    assert resolve_keys(compatible, None, {})["openai:local"].get_secret_value() == "no-key"


def test_max_tokens_is_clamped_to_the_strictest_ceiling_and_set_when_absent(table: RoutingTable) -> None:
    route = table.route("gpt-4o-mini")
    assert route is not None
    acme = govern(ChatParams(max_tokens=3000, temperature=0.2), route, table.limits, "acme")
    assert acme.values == {"max_tokens": 500, "temperature": 0.2}
    assert acme.changes == ("max_tokens 3000→500",)
    other = govern(ChatParams(), route, table.limits, "initech")
    assert other.values == {"max_tokens": 2000} and other.changes == ("max_tokens set to 2000",)
    within = govern(ChatParams(max_tokens=100), route, table.limits, "initech")
    assert within.values == {"max_tokens": 100} and within.changes == ()


def test_parameters_outside_the_route_allowlist_are_dropped_and_reported(table: RoutingTable) -> None:
    route = table.route("gpt-4o-mini")
    assert route is not None
    governed = govern(ChatParams(max_tokens=10, top_p=0.5, seed=3), route, table.limits, "initech")
    assert governed.values == {"max_tokens": 10}
    assert governed.changes == ("dropped seed", "dropped top_p")


def test_cache_opt_in_is_per_tenant_and_use_case(table: RoutingTable) -> None:
    assert table.cache_ttl("acme", "faq") == 60
    assert table.cache_ttl("acme", "default") is None
    assert table.cache_ttl("globex", "anything") == 10
    assert table.cache_ttl("initech", "faq") is None
