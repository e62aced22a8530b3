"""Masking with stable placeholders, and exact single-pass restoration.

Pure functions, no Presidio and no Kafka: given where the detector found entities, replace
*every* occurrence of each detected value — in every message, even where the detector
missed it — with a placeholder such as ``<PERSON_1>``. The same value always gets the same
placeholder within a request; placeholders never repeat a value of another request because
the map lives only inside one request's sealed vault.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*?)_([1-9][0-9]{0,5})>")


@dataclass(frozen=True)
class Detection:
    """An entity the detector found: ``text[start:end]`` is a value of ``entity_type``."""

    entity_type: str
    start: int
    end: int
    score: float = 1.0
    recognizer: str = ""


@dataclass(frozen=True)
class MaskedSpan:
    """Where a placeholder replaced a value, in the original text's coordinates."""

    entity_type: str
    start: int
    end: int
    placeholder: str


@dataclass
class PlaceholderMap:
    """Value ↔ placeholder for one request.

    Attributes:
        by_value: ``(entity_type, value) → placeholder``.
        by_placeholder: ``placeholder → value`` (what the vault seals).
    """

    by_value: dict[tuple[str, str], str] = field(default_factory=dict)
    by_placeholder: dict[str, str] = field(default_factory=dict)
    _counters: Counter[str] = field(default_factory=Counter)

    def placeholder_for(self, entity_type: str, value: str) -> str:
        """The placeholder of ``value``, allocating the next number of its type if new."""
        key = (entity_type, value)
        found = self.by_value.get(key)
        if found is None:
            self._counters[entity_type] += 1
            found = f"<{entity_type}_{self._counters[entity_type]}>"
            self.by_value[key] = found
            self.by_placeholder[found] = value
        return found


def _select(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Non-overlapping spans, preferring the earliest start, then the longest."""
    chosen: list[tuple[int, int, str]] = []
    end = -1
    for start, stop, kind in sorted(spans, key=lambda s: (s[0], -(s[1] - s[0]))):
        if start >= end:
            chosen.append((start, stop, kind))
            end = stop
    return chosen


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _occurrences(text: str, values: dict[str, str]) -> list[tuple[int, int, str]]:
    """Every whole-token occurrence in ``text`` of each value (value → entity type)."""
    if not values:
        return []
    ordered = sorted(values, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(v) for v in ordered))
    found: list[tuple[int, int, str]] = []
    position = 0
    while True:
        match = pattern.search(text, position)
        if match is None:
            return found
        start, stop = match.span()
        value = match.group()
        before_ok = start == 0 or not (_is_word(value[0]) and _is_word(text[start - 1]))
        after_ok = stop == len(text) or not (_is_word(value[-1]) and _is_word(text[stop]))
        if before_ok and after_ok:
            found.append((start, stop, values[value]))
            position = stop
        else:
            position = start + 1


def mask(
    texts: Sequence[str],
    detections: Sequence[Sequence[Detection]],
    mapping: PlaceholderMap | None = None,
) -> tuple[list[str], list[list[MaskedSpan]], PlaceholderMap]:
    """Replace every occurrence of every detected value with its placeholder.

    Args:
        texts: The messages of one request, in order.
        detections: For each text, what the detector found in it.
        mapping: An existing map to extend (defaults to a new one).

    Returns:
        The masked texts, the spans replaced in each (original coordinates), and the map.
    """
    mapping = mapping or PlaceholderMap()
    values: dict[str, str] = {}
    for text, found in zip(texts, detections, strict=True):
        for detection in sorted(found, key=lambda d: d.start):
            value = text[detection.start : detection.end]
            if value.strip() and PLACEHOLDER.fullmatch(value) is None:
                values.setdefault(value, detection.entity_type)
    masked_texts: list[str] = []
    all_spans: list[list[MaskedSpan]] = []
    for text, found in zip(texts, detections, strict=True):
        candidates = [(d.start, d.end, values[text[d.start : d.end]]) for d in found if text[d.start : d.end] in values]
        candidates += _occurrences(text, values)
        pieces: list[str] = []
        spans: list[MaskedSpan] = []
        cursor = 0
        for start, stop, kind in _select(candidates):
            placeholder = mapping.placeholder_for(kind, text[start:stop])
            pieces.append(text[cursor:start])
            pieces.append(placeholder)
            spans.append(MaskedSpan(kind, start, stop, placeholder))
            cursor = stop
        pieces.append(text[cursor:])
        masked_texts.append("".join(pieces))
        all_spans.append(spans)
    return masked_texts, all_spans, mapping


@dataclass(frozen=True)
class Restoration:
    """The restored text and what happened to the placeholders on the model's round trip.

    Attributes:
        text: The answer with every known placeholder replaced by its value.
        restored: Placeholder occurrences replaced.
        unknown: Placeholder-shaped tokens that are not in the map (invented or altered).
        missing: Placeholders sent to the model that its answer does not contain.
    """

    text: str
    restored: int
    unknown: int
    missing: int


def restore(text: str, by_placeholder: dict[str, str]) -> Restoration:
    """Replace placeholders by their values in one pass, by exact match only.

    A value that itself looks like a placeholder is never re-expanded, because the
    replacement is computed over the original text in a single scan.
    """
    seen: set[str] = set()
    counts = Counter[str]()

    def swap(match: re.Match[str]) -> str:
        token = match.group(0)
        value = by_placeholder.get(token)
        if value is None:
            counts["unknown"] += 1
            return token
        counts["restored"] += 1
        seen.add(token)
        return value

    restored = PLACEHOLDER.sub(swap, text)
    return Restoration(
        text=restored,
        restored=counts["restored"],
        unknown=counts["unknown"],
        missing=len(set(by_placeholder) - seen),
    )
