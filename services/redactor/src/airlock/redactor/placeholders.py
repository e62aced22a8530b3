"""Masking with stable placeholders, and exact single-pass restoration.

Pure functions, no Presidio and no Kafka: given where the detector found entities, replace
*every* occurrence of each detected value — in every message, even where the detector
missed it — with a placeholder such as ``<PERSON_1>`` (action ``mask``) or a fixed marker
such as ``<CREDIT_CARD_REDACTED>`` (action ``redact``, never restored). The same value always
gets the same placeholder within a request; placeholders never repeat a value of another
request because the map lives only inside one request's sealed vault.

Restoration is unambiguous even when the caller's own text already contains something shaped
like a placeholder: such a literal is *reserved* (it maps to itself) and never allocated to
a value, so every placeholder in the model's answer has exactly one meaning.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

#: Bounded everywhere (entity type names are short): with unbounded repetition, an answer
#: of "(a" and 40,000 spaces took 9 s to scan, each space tried by two quantifiers in turn.
PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]{0,40}?)_([1-9][0-9]{0,5})>")
#: What a model does to a placeholder when it does not keep it verbatim: other brackets,
#: other case, a space or dash for the underscore.
_ALTERED = re.compile(r"[<\[{(]\s{0,3}([A-Za-z][A-Za-z0-9_ -]{0,40}?)[\s_-]{0,3}([1-9][0-9]{0,5})\s{0,3}[>\]})]")

MASK = "mask"
REDACT = "redact"

#: Honorifics and name particles that are not worth masking on their own.
_NOT_NAME_PARTS = frozenset(
    (
        *("mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "madam", "dame", "lord", "lady"),
        *("jr", "sr", "ii", "iii", "iv", "phd", "md"),
        *("van", "von", "der", "den", "de", "da", "di", "del", "della", "le", "la", "du", "dos", "das"),
        *("bin", "al", "el"),
    )
)


@dataclass(frozen=True)
class Detection:
    """An entity the detector found: ``text[start:end]`` is a value of ``entity_type``.

    Attributes:
        action: ``mask`` (reversible placeholder) or ``redact`` (irreversible marker).
        recognizer: Which recognizer found it (for ``--explain``).
    """

    entity_type: str
    start: int
    end: int
    score: float = 1.0
    recognizer: str = ""
    action: str = MASK


@dataclass(frozen=True)
class MaskedSpan:
    """Where a placeholder (or redaction marker) replaced a value, in original coordinates."""

    entity_type: str
    start: int
    end: int
    placeholder: str
    action: str = MASK


def redaction_marker(entity_type: str) -> str:
    """The irreversible marker of a redacted ``entity_type``."""
    return f"<{entity_type}_REDACTED>"


@dataclass
class PlaceholderMap:
    """Value ↔ placeholder for one request.

    Attributes:
        by_value: ``(entity_type, value) → placeholder``.
        by_placeholder: ``placeholder → value`` (what the vault seals). Reserved literals map
            to themselves.
    """

    by_value: dict[tuple[str, str], str] = field(default_factory=dict)
    by_placeholder: dict[str, str] = field(default_factory=dict)
    _counters: Counter[str] = field(default_factory=Counter)

    def reserve(self, literal: str) -> None:
        """Keep a placeholder-shaped literal of the caller's text from ever being allocated."""
        self.by_placeholder.setdefault(literal, literal)

    def placeholder_for(self, entity_type: str, value: str) -> str:
        """The placeholder of ``value``, allocating the next free number of its type if new."""
        key = (entity_type, value)
        found = self.by_value.get(key)
        if found is None:
            while True:
                self._counters[entity_type] += 1
                found = f"<{entity_type}_{self._counters[entity_type]}>"
                if found not in self.by_placeholder:
                    break
            self.by_value[key] = found
            self.by_placeholder[found] = value
        return found

    @property
    def sent(self) -> list[str]:
        """Placeholders standing for values (reserved literals excluded)."""
        return [p for p, value in self.by_placeholder.items() if p != value]


def name_parts(value: str) -> list[str]:
    """The parts of a person's name worth masking on their own ("Jane", "Roe" of "Dr. Jane Roe").

    Parts are capitalized words of two letters or more that are not honorifics, particles or
    English stop words (so "Will" or "May" alone are left alone).
    """
    from spacy.lang.en.stop_words import STOP_WORDS

    words = re.findall(r"[^\W\d_][\w'’-]*", value)
    if len(words) < 2:
        return []
    parts = []
    for word in words:
        lowered = word.lower().rstrip(".")
        if len(word) < 2 or not word[0].isupper() or lowered in _NOT_NAME_PARTS or lowered in STOP_WORDS:
            continue
        parts.append(word)
    return parts


def _select(spans: list[tuple[int, int, str, str]]) -> list[tuple[int, int, str, str]]:
    """Non-overlapping spans, preferring the earliest start, then the longest."""
    chosen: list[tuple[int, int, str, str]] = []
    end = -1
    for span in sorted(spans, key=lambda s: (s[0], -(s[1] - s[0]))):
        if span[0] >= end:
            chosen.append(span)
            end = span[1]
    return chosen


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _occurrences(text: str, values: dict[str, tuple[str, str]]) -> list[tuple[int, int, str, str]]:
    """Every whole-token occurrence in ``text`` of each value (value → (entity type, action)).

    Occurrences of different values may overlap ("Jane" inside "Jane Roe"); :func:`_select`
    keeps the earliest, then the longest. ``str.find`` per value is much cheaper than compiling
    an alternation of every value for each request.
    """
    found: list[tuple[int, int, str, str]] = []
    for value, (kind, action) in values.items():
        start = text.find(value)
        while start != -1:
            stop = start + len(value)
            before_ok = start == 0 or not (_is_word(value[0]) and _is_word(text[start - 1]))
            after_ok = stop == len(text) or not (_is_word(value[-1]) and _is_word(text[stop]))
            if before_ok and after_ok:
                found.append((start, stop, kind, action))
            start = text.find(value, start + 1)
    return found


def _strength(detection: Detection) -> tuple[int, float]:
    return (1 if detection.action == REDACT else 0, detection.score)


def mask(
    texts: Sequence[str],
    detections: Sequence[Sequence[Detection]],
    mapping: PlaceholderMap | None = None,
    *,
    person_name_parts: bool = False,
) -> tuple[list[str], list[list[MaskedSpan]], PlaceholderMap]:
    """Replace every occurrence of every detected value with its placeholder or marker.

    Args:
        texts: The messages of one request, in order.
        detections: For each text, what the detector found in it.
        mapping: An existing map to extend (defaults to a new one).
        person_name_parts: Also replace each part of a detected person's name wherever it
            stands alone (see :func:`name_parts`).

    Returns:
        The masked texts, the spans replaced in each (original coordinates), and the map.
    """
    mapping = mapping or PlaceholderMap()
    for text in texts:
        for literal in PLACEHOLDER.finditer(text):
            mapping.reserve(literal.group())
    chosen: dict[str, Detection] = {}
    for text, found in zip(texts, detections, strict=True):
        for detection in found:
            value = text[detection.start : detection.end]
            if not value.strip() or PLACEHOLDER.fullmatch(value) is not None:
                continue
            if value not in chosen or _strength(detection) > _strength(chosen[value]):
                chosen[value] = detection
    values = {value: (d.entity_type, d.action) for value, d in chosen.items()}
    if person_name_parts:
        for value, (kind, action) in list(values.items()):
            if kind == "PERSON":
                for part in name_parts(value):
                    values.setdefault(part, (kind, action))
    masked_texts: list[str] = []
    all_spans: list[list[MaskedSpan]] = []
    for text, found in zip(texts, detections, strict=True):
        # The detected spans themselves, even where they are not whole tokens, then every
        # other occurrence of every value.
        candidates = [
            (d.start, d.end, *values[text[d.start : d.end]]) for d in found if text[d.start : d.end] in values
        ]
        candidates += _occurrences(text, values)
        pieces: list[str] = []
        spans: list[MaskedSpan] = []
        cursor = 0
        for start, stop, kind, action in _select(candidates):
            value = text[start:stop]
            replacement = redaction_marker(kind) if action == REDACT else mapping.placeholder_for(kind, value)
            pieces.append(text[cursor:start])
            pieces.append(replacement)
            spans.append(MaskedSpan(kind, start, stop, replacement, action))
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
        unknown: Placeholder-shaped tokens that are not in the map (invented by the model).
        withheld: Occurrences of placeholders the map holds but may not restore here (out
            of the caller's scope): left as they are.
        altered: Near-misses of a sent placeholder (``[PERSON_1]``, ``<person 1>``): not
            restored, since restoration is exact.
        missing: Placeholders sent to the model that its answer does not contain.
        sent: Placeholders sent to the model (reserved literals excluded).
        survived: Placeholders sent that came back verbatim at least once.
    """

    text: str
    restored: int
    unknown: int
    missing: int
    altered: int = 0
    sent: int = 0
    survived: int = 0
    withheld: int = 0

    @property
    def survival_rate(self) -> float | None:
        """Share of the placeholders sent that came back verbatim (``None`` if none were sent)."""
        return self.survived / self.sent if self.sent else None


def restore(text: str, by_placeholder: dict[str, str], withheld: Collection[str] = ()) -> Restoration:
    """Replace placeholders by their values in one pass, by exact match only.

    A value that itself looks like a placeholder is never re-expanded, because the
    replacement is computed over the original text in a single scan. Placeholders in
    ``withheld`` are known but stay as they are (counted apart from unknown ones).
    """
    seen: set[str] = set()
    counts = Counter[str]()

    def swap(match: re.Match[str]) -> str:
        token = match.group(0)
        value = by_placeholder.get(token)
        if value is None:
            counts["withheld" if token in withheld else "unknown"] += 1
            return token
        if value != token:
            counts["restored"] += 1
            seen.add(token)
        return value

    restored = PLACEHOLDER.sub(swap, text)
    sent = {p for p, value in by_placeholder.items() if p != value}
    altered = 0
    for match in _ALTERED.finditer(text):
        if PLACEHOLDER.fullmatch(match.group(0)):
            continue
        kind = re.sub(r"[\s-]+", "_", match.group(1).strip()).upper()
        if f"<{kind}_{match.group(2)}>" in sent:
            altered += 1
    return Restoration(
        text=restored,
        restored=counts["restored"],
        unknown=counts["unknown"],
        missing=len(sent - seen),
        altered=altered,
        sent=len(sent),
        survived=len(seen & sent),
        withheld=counts["withheld"],
    )


def values_of(by_placeholder: dict[str, str]) -> Iterable[str]:
    """The caller's values in a map (reserved literals excluded)."""
    return (value for placeholder, value in by_placeholder.items() if placeholder != value)
