"""The price table: what a model's tokens cost, for usage records, budgets and reports.

Loaded from YAML (a ConfigMap in the chart)::

    currency: USD
    models:
      gpt-4o-mini: {input_per_million: 0.15, output_per_million: 0.60}

A model missing from the table costs 0 and is reported as unpriced by whoever asks
(:meth:`PriceTable.is_priced`), so a missing price is visible rather than silently cheap.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from airlock.core.models import Usage
from airlock.core.settings import SettingsError


class ModelPrice(BaseModel):
    """Price of one model, per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)


class PriceTable(BaseModel):
    """Prices per logical or served model name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    currency: str = "USD"
    models: dict[str, ModelPrice] = Field(default_factory=dict)

    @classmethod
    def from_yaml(cls, path: Path) -> PriceTable:
        """Load and validate a price table file."""
        return cls.model_validate(yaml.safe_load(path.read_text()) or {})

    @classmethod
    def configured(cls, path: Path | None, *, variable: str) -> PriceTable:
        """The table in ``path``, or the built-in list prices when no file is configured.

        Raises:
            SettingsError: The file is unreadable or invalid (named by ``variable``).
        """
        if path is None:
            return DEFAULT_PRICES
        try:
            return cls.from_yaml(path)
        except (OSError, ValueError) as error:
            raise SettingsError(f"{variable}: cannot load {path}: {error}") from None

    def is_priced(self, model: str) -> bool:
        """Whether the table has a price for ``model``."""
        return model in self.models

    def cost(self, model: str, usage: Usage) -> float:
        """Cost of ``usage`` on ``model`` (0 for an unpriced model)."""
        price = self.models.get(model)
        if price is None:
            return 0.0
        return (
            usage.input_tokens * price.input_per_million + usage.output_tokens * price.output_per_million
        ) / 1_000_000


#: Used when no price file is configured: public list prices, good enough for dev and tests.
DEFAULT_PRICES = PriceTable(
    models={
        "gpt-4o-mini": ModelPrice(input_per_million=0.15, output_per_million=0.60),
        "gpt-4o": ModelPrice(input_per_million=2.50, output_per_million=10.00),
        "gpt-4.1-mini": ModelPrice(input_per_million=0.40, output_per_million=1.60),
    }
)
