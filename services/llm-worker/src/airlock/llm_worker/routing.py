"""The routing table: which logical models exist, which providers serve them, with what limits.

Loaded from YAML (a ConfigMap in the chart); secrets are never in it — each target names
the environment variable or file its API key comes from::

    models:
      gpt-4o-mini:
        max_tokens: 4096                    # ceiling for this model (optional)
        params: [max_tokens, temperature]   # parameters forwarded (optional; default: all)
        targets:
          - name: openai
            provider: openai
            model: gpt-4o-mini
            api_key_env: OPENAI_API_KEY
            rpm: 5000                       # the organisation's limit, shared by the fleet
            tpm: 2000000
          - name: azure-eu
            provider: azure
            endpoint: https://example-eu.openai.azure.com
            deployment: gpt-4o-mini-eu
            api_version: "2024-10-21"
            api_key_file: /var/run/secrets/airlock/azure-eu
    limits:
      max_tokens: 8192                      # ceiling for every tenant
      tenants:
        acme: {max_tokens: 1024}
    cache:
      - {tenant: acme, use_case: faq, ttl_s: 3600}

A logical model missing from ``models`` is refused: only approved models are called.
Targets are tried by ``priority`` (lower first; by default their position in the list, so a
plain list is an ordered fallback chain); targets of equal priority share the traffic by
``weight``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from airlock.core.models import ChatParams

Provider = Literal["openai", "azure", "openai-compatible"]
#: Every parameter a caller may set; a route may forward fewer.
ALL_PARAMS: tuple[str, ...] = tuple(ChatParams.model_fields)
_SECRET_FIELDS = ("api_key", "key", "secret", "token", "password")


class RoutingError(ValueError):
    """The routing table is invalid, or a target's key cannot be read."""


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TargetSpec(_Spec):
    """One provider deployment that can serve a logical model.

    Attributes:
        name: Unique across the table; appears in audit events and usage records.
        provider: ``openai``, ``azure`` (Azure OpenAI) or ``openai-compatible``.
        model: Provider model name (``openai``, ``openai-compatible``).
        deployment: Azure deployment name (``azure``).
        endpoint: Base URL (``openai``: optional; ``openai-compatible``: required) or the
            Azure resource endpoint (``azure``: required).
        api_version: Azure OpenAI API version (``azure``: required).
        api_key_env: Environment variable holding the API key.
        api_key_file: File holding the API key (a mounted Secret); a relative path is
            resolved against the worker's ``provider_keys_dir``.
        weight: Share of traffic among targets of the same priority.
        priority: Lower is tried first; defaults to the position in the list.
        rpm: Requests per minute allowed on this target for the whole fleet.
        tpm: Tokens per minute allowed on this target for the whole fleet.
        price_as: Price-table entry for this target's usage (default: ``model`` or
            ``deployment``, then the logical model).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")
    provider: Provider = "openai"
    model: str | None = None
    deployment: str | None = None
    endpoint: str | None = None
    api_version: str | None = None
    api_key_env: str | None = None
    api_key_file: Path | None = None
    weight: float = Field(default=1.0, gt=0)
    priority: int | None = None
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    price_as: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            inline = sorted(k for k in data if str(k).lower() in _SECRET_FIELDS)
            if inline:
                raise ValueError(
                    f"secrets never go in the routing table (found {inline}); use api_key_env or api_key_file"
                )
        return data

    @model_validator(mode="after")
    def _complete_for_provider(self) -> TargetSpec:
        if self.provider == "azure":
            missing = [f for f in ("endpoint", "deployment", "api_version") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"azure target {self.name} needs {', '.join(missing)}")
        else:
            if self.model is None:
                raise ValueError(f"target {self.name} needs model")
            if self.provider == "openai-compatible" and self.endpoint is None:
                raise ValueError(f"openai-compatible target {self.name} needs endpoint")
        if self.api_key_env is not None and self.api_key_file is not None:
            raise ValueError(f"target {self.name}: give api_key_env or api_key_file, not both")
        return self

    @property
    def served_model(self) -> str:
        """What the provider is asked for: the Azure deployment or the model name."""
        return self.deployment if self.provider == "azure" and self.deployment else str(self.model)


class RouteSpec(_Spec):
    """A logical model: its targets and parameter policy.

    Attributes:
        targets: Providers that can serve it (at least one).
        max_tokens: Ceiling on ``max_tokens`` for this model.
        params: Parameters forwarded to the provider; others are dropped (and audited).
    """

    targets: list[TargetSpec] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    params: list[str] = Field(default_factory=lambda: list(ALL_PARAMS))

    @model_validator(mode="after")
    def _known_params(self) -> RouteSpec:
        unknown = sorted(set(self.params) - set(ALL_PARAMS))
        if unknown:
            raise ValueError(f"unknown params {unknown}; known: {', '.join(ALL_PARAMS)}")
        return self

    def plan(self, rng: random.Random | None = None) -> list[TargetSpec]:
        """The order to try targets in for one request.

        By priority; within a priority, a weighted random order (so weights split traffic).
        """
        if len(self.targets) == 1:
            return list(self.targets)
        draw = rng or random
        groups: dict[int, list[TargetSpec]] = {}
        for index, target in enumerate(self.targets):
            priority = target.priority if target.priority is not None else index
            groups.setdefault(priority, []).append(target)
        ordered: list[TargetSpec] = []
        for priority in sorted(groups):
            pool = list(groups[priority])
            while len(pool) > 1:
                pick = draw.choices(range(len(pool)), weights=[t.weight for t in pool])[0]
                ordered.append(pool.pop(pick))
            ordered.extend(pool)
        return ordered


class TenantLimits(_Spec):
    """Per-tenant parameter ceilings."""

    max_tokens: int | None = Field(default=None, ge=1)


class Limits(_Spec):
    """Ceilings for everyone, and per tenant."""

    max_tokens: int | None = Field(default=None, ge=1)
    tenants: dict[str, TenantLimits] = Field(default_factory=dict)


class CacheRule(_Spec):
    """Opt-in to the response cache for one tenant and use case (``*`` = every use case)."""

    tenant: str
    use_case: str = "*"
    ttl_s: float = Field(gt=0)


class RoutingTable(_Spec):
    """The whole table: routes, limits and cache opt-ins."""

    models: dict[str, RouteSpec] = Field(min_length=1)
    limits: Limits = Limits()
    cache: list[CacheRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_target_names(self) -> RoutingTable:
        seen: dict[str, TargetSpec] = {}
        for route in self.models.values():
            for target in route.targets:
                other = seen.setdefault(target.name, target)
                if other != target:
                    raise ValueError(f"target name {target.name} is used for two different targets")
        return self

    @classmethod
    def from_yaml(cls, path: Path) -> RoutingTable:
        """Load and validate a routing table file.

        Raises:
            RoutingError: Unreadable file or invalid table, naming the file and the field.
        """
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise RoutingError(f"cannot read routing table {path}: {error}") from None
        try:
            return cls.model_validate(document)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in item['loc']) or '(root)'}: {item['msg']}" for item in error.errors()
            )
            raise RoutingError(f"invalid routing table {path}: {problems}") from None

    def route(self, model: str) -> RouteSpec | None:
        """The route of a logical model, or ``None`` when it is not approved."""
        return self.models.get(model)

    def targets(self) -> list[TargetSpec]:
        """Every distinct target of the table."""
        unique: dict[str, TargetSpec] = {}
        for route in self.models.values():
            for target in route.targets:
                unique.setdefault(target.name, target)
        return list(unique.values())

    def cache_ttl(self, tenant: str, use_case: str) -> float | None:
        """The cache TTL for a tenant and use case, or ``None`` when they did not opt in."""
        exact = [r for r in self.cache if r.tenant == tenant and r.use_case == use_case]
        wildcard = [r for r in self.cache if r.tenant == tenant and r.use_case == "*"]
        rules = exact or wildcard
        return rules[0].ttl_s if rules else None


def single_target_table(models: Sequence[str], *, endpoint: str | None) -> RoutingTable:
    """The table used without a routing file: each model served by one OpenAI(-compatible) target.

    The targets name no key: they use the worker's default key (``OPENAI_API_KEY``).
    """
    provider: Provider = "openai-compatible" if endpoint else "openai"
    return RoutingTable(
        models={
            model: RouteSpec(
                targets=[TargetSpec(name=f"openai:{model}", provider=provider, model=model, endpoint=endpoint)]
            )
            for model in models
        }
    )


def read_key(
    target: TargetSpec, env: Mapping[str, str] | None = None, keys_dir: Path | None = None
) -> SecretStr | None:
    """The target's API key from its environment variable or file (``None`` when it names none).

    Args:
        target: The target.
        env: The environment (default: the process's).
        keys_dir: Where a relative ``api_key_file`` is found (the mounted provider-keys Secret).

    Raises:
        RoutingError: The variable is unset/empty or the file cannot be read (names it, never the key).
    """
    environment = os.environ if env is None else env
    if target.api_key_env is not None:
        value = environment.get(target.api_key_env, "").strip()
        if not value:
            raise RoutingError(f"target {target.name}: environment variable {target.api_key_env} is not set")
        return SecretStr(value)
    if target.api_key_file is not None:
        path = target.api_key_file
        if not path.is_absolute() and keys_dir is not None:
            path = keys_dir / path
        try:
            value = path.read_text().strip()
        except OSError as error:
            raise RoutingError(f"target {target.name}: cannot read key file {path} ({error.strerror})") from None
        if not value:
            raise RoutingError(f"target {target.name}: key file {path} is empty")
        return SecretStr(value)
    return None
