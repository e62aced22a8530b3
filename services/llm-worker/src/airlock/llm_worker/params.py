"""Parameter governance: forward only the route's allowlisted parameters, clamp ``max_tokens``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airlock.core.models import ChatParams
from airlock.llm_worker.routing import Limits, RouteSpec


@dataclass(frozen=True)
class GovernedParams:
    """What is sent to the provider, and what governance changed (for the audit event).

    Attributes:
        values: The parameters to send.
        changes: Human-readable notes, e.g. ``max_tokens 8000→1024``, ``dropped top_p``.
    """

    values: dict[str, Any]
    changes: tuple[str, ...] = ()

    @property
    def max_tokens(self) -> int | None:
        """The output ceiling sent with the request, if any."""
        value = self.values.get("max_tokens")
        return int(value) if value is not None else None


def max_tokens_ceiling(route: RouteSpec, limits: Limits, tenant: str) -> int | None:
    """The strictest ``max_tokens`` ceiling of the model, the table and the tenant."""
    tenant_limits = limits.tenants.get(tenant)
    candidates = [route.max_tokens, limits.max_tokens, tenant_limits.max_tokens if tenant_limits else None]
    present = [c for c in candidates if c is not None]
    return min(present) if present else None


def govern(params: ChatParams, route: RouteSpec, limits: Limits, tenant: str) -> GovernedParams:
    """Apply the route's allowlist and the ``max_tokens`` ceilings to a request's parameters.

    A request without ``max_tokens`` gets the ceiling (so the ceiling binds every answer);
    one above it is clamped to it. Parameters the route does not forward are dropped.
    """
    requested = params.model_dump(exclude_none=True)
    allowed = set(route.params)
    values = {name: value for name, value in requested.items() if name in allowed}
    changes = [f"dropped {name}" for name in sorted(set(requested) - allowed)]
    ceiling = max_tokens_ceiling(route, limits, tenant)
    if ceiling is not None and "max_tokens" in allowed:
        asked = values.get("max_tokens")
        if asked is None:
            values["max_tokens"] = ceiling
            changes.append(f"max_tokens set to {ceiling}")
        elif asked > ceiling:
            values["max_tokens"] = ceiling
            changes.append(f"max_tokens {asked}→{ceiling}")
    return GovernedParams(values, tuple(changes))
