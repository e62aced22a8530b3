"""Leakage and utility of redacted texts against the labels, and the side-by-side table.

Leakage: a planted value still present (as a whole token, case-sensitive) after redaction.
Utility: a must-survive word still present after redaction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from airlock.devstack.eval.dataset import KEEP_CATEGORIES, PII_CATEGORIES, STRUCTURED, Sample, present

#: The issue's targets.
LEAKAGE_TARGET = 0.01
STRUCTURED_LEAKAGE_TARGET = 0.005
UTILITY_TARGET = 0.99


@dataclass
class Score:
    """What one redactor did to one labeled set.

    Attributes:
        planted: Planted values by category.
        leaked: Planted values still present, by category.
        kept_total: Must-survive words by category.
        kept: Must-survive words still present, by category.
        leaks: A few ``(category, value)`` examples of leaks, for the curious.
    """

    planted: Counter[str] = field(default_factory=Counter)
    leaked: Counter[str] = field(default_factory=Counter)
    kept_total: Counter[str] = field(default_factory=Counter)
    kept: Counter[str] = field(default_factory=Counter)
    leaks: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def of(cls, samples: Sequence[Sample], redacted: Sequence[str]) -> Score:
        """Score redacted texts against their samples' labels."""
        score = cls()
        for sample, text in zip(samples, redacted, strict=True):
            for planted in sample.pii:
                score.planted[planted.category] += 1
                if present(planted.value, text):
                    score.leaked[planted.category] += 1
                    score.leaks.append((planted.category, planted.value))
            for keep in sample.keep:
                score.kept_total[keep.category] += 1
                if present(keep.value, text):
                    score.kept[keep.category] += 1
        return score

    def leakage(self, categories: Sequence[str] | None = None) -> float:
        """Share of planted values (in ``categories``, default all) that leaked."""
        chosen = categories or list(self.planted)
        total = sum(self.planted[c] for c in chosen)
        return sum(self.leaked[c] for c in chosen) / total if total else 0.0

    def utility(self, categories: Sequence[str] | None = None) -> float:
        """Share of must-survive words (in ``categories``, default all) that survived."""
        chosen = categories or list(self.kept_total)
        total = sum(self.kept_total[c] for c in chosen)
        return sum(self.kept[c] for c in chosen) / total if total else 1.0


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def table(scores: dict[str, Score]) -> str:
    """Per-category leakage and utility for each redactor, side by side."""
    names = list(scores)
    first = scores[names[0]]
    header = ["", "n", *(f"{name} leaked" for name in names)]
    rows: list[list[str]] = []
    for category in PII_CATEGORIES:
        if not first.planted[category]:
            continue
        cells = [f"{s.leaked[category]} ({_pct(s.leakage([category]))})" for s in scores.values()]
        rows.append([category + (" *" if category in STRUCTURED else ""), str(first.planted[category]), *cells])
    rows.append(
        [
            "all PII (target ≤ 1%)",
            str(sum(first.planted.values())),
            *(_pct(s.leakage()) for s in scores.values()),
        ]
    )
    rows.append(
        [
            "* structured ids (≤ 0.5%)",
            str(sum(first.planted[c] for c in STRUCTURED)),
            *(_pct(s.leakage(list(STRUCTURED))) for s in scores.values()),
        ]
    )
    rows.append(["", "", *("" for _ in names)])
    rows.append(["must survive", "n", *(f"{name} kept" for name in names)])
    for category in KEEP_CATEGORIES:
        if not first.kept_total[category]:
            continue
        cells = [f"{s.kept[category]} ({_pct(s.utility([category]))})" for s in scores.values()]
        rows.append([category, str(first.kept_total[category]), *cells])
    rows.append(
        ["utility (target ≥ 99%)", str(sum(first.kept_total.values())), *(_pct(s.utility()) for s in scores.values())]
    )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def verdicts(score: Score) -> list[str]:
    """One line per target: the figure, the target, met or not."""

    def line(name: str, value: float, target: float, higher: bool) -> str:
        met = value >= target if higher else value <= target
        sign = "≥" if higher else "≤"
        return f"{name}: {_pct(value)} (target {sign} {_pct(target)}) {'met' if met else 'NOT MET'}"

    return [
        line("leakage, all PII", score.leakage(), LEAKAGE_TARGET, False),
        line("leakage, structured identifiers", score.leakage(list(STRUCTURED)), STRUCTURED_LEAKAGE_TARGET, False),
        line("utility", score.utility(), UTILITY_TARGET, True),
    ]
