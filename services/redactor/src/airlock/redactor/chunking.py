"""Splitting long texts into overlapping chunks for detection, and merging what was found.

The NER model's cost grows with the text and Presidio's context window is a few words, so a
long prompt is analyzed in chunks. Consecutive chunks overlap by ``overlap`` characters: an
entity shorter than the overlap that a boundary cuts in two lies whole inside the next chunk.
Merging keeps, for each place, the longest detection of a type, so the cut half found in the
first chunk ("Jane" of "Jane Roe") gives way to the whole one found in the next.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from airlock.redactor.placeholders import Detection


@dataclass(frozen=True)
class Chunk:
    """``text[start:start + len(chunk.text)]`` of a longer text."""

    start: int
    text: str


def split(text: str, size: int, overlap: int) -> list[Chunk]:
    """Cut ``text`` into chunks of at most ``size`` characters overlapping by ``overlap``.

    Boundaries move back to whitespace (within the overlap) so words are rarely cut; the
    overlap still covers entities that span a boundary.

    Raises:
        ValueError: ``overlap`` is not smaller than half of ``size``.
    """
    if overlap < 0 or 2 * overlap >= size:
        raise ValueError("overlap must be at least 0 and less than half the chunk size")
    if len(text) <= size:
        return [Chunk(0, text)]
    chunks: list[Chunk] = []
    start = 0
    while True:
        end = min(start + size, len(text))
        if end < len(text):
            cut = max(text.rfind(" ", end - overlap, end), text.rfind("\n", end - overlap, end))
            if cut > start:
                end = cut
        chunks.append(Chunk(start, text[start:end]))
        if end >= len(text):
            return chunks
        start = end - overlap


def merge(chunks: Sequence[Chunk], found: Sequence[Sequence[Detection]]) -> list[Detection]:
    """Detections of every chunk in the whole text's coordinates, without duplicates.

    A detection contained in a longer one of the same type is dropped (a partial view from
    a chunk boundary); identical spans keep the highest score.
    """
    best: dict[tuple[int, int, str], Detection] = {}
    for chunk, detections in zip(chunks, found, strict=True):
        for detection in detections:
            shifted = replace(detection, start=detection.start + chunk.start, end=detection.end + chunk.start)
            key = (shifted.start, shifted.end, shifted.entity_type)
            if key not in best or best[key].score < shifted.score:
                best[key] = shifted
    if len(chunks) == 1:
        return sorted(best.values(), key=lambda d: (d.start, d.end))
    kept: list[Detection] = []
    reach: dict[str, int] = {}  # per type, the furthest end of a detection starting earlier
    for detection in sorted(best.values(), key=lambda d: (d.start, -(d.end - d.start))):
        if reach.get(detection.entity_type, -1) >= detection.end:
            continue  # inside a longer detection of the same type
        reach[detection.entity_type] = detection.end
        kept.append(detection)
    return kept


#: Longest run without whitespace that the NLP model sees whole. spaCy's tokenizer looks for
#: suffixes by re-matching a token's every tail, quadratic in its length: a 10,000-character
#: run of ``:`` took 10 s. Names are far shorter; e-mails, URLs, keys and ids are found by the
#: pattern recognizers, which always read the original text.
MAX_TOKEN_CHARS = 64
#: Punctuation characters in a row that the model sees; the rest of the run becomes spaces.
#: Each punctuation mark is a token of its own, and the model's cost is per token: a prompt
#: of 10,000 colons was 10,000 tokens, five times the prose of the same length.
MAX_PUNCTUATION_RUN = 3
_LONG_RUN = re.compile(rf"\S{{{MAX_TOKEN_CHARS + 1},}}")
_PUNCTUATION_RUN = re.compile(rf"[^\w\s]{{{MAX_PUNCTUATION_RUN + 1},}}")


def tokenizable(text: str) -> str:
    """``text`` for the NLP model: same length and offsets, in tokens of bounded cost.

    Runs of punctuation keep their first :data:`MAX_PUNCTUATION_RUN` characters; then every
    ``MAX_TOKEN_CHARS + 1``-th character of a run longer than :data:`MAX_TOKEN_CHARS` is
    replaced. Characters are replaced by spaces, never inserted or removed: the model's
    offsets must stay those of the original text.
    """
    text = _PUNCTUATION_RUN.sub(_keep_start, text)
    if _LONG_RUN.search(text) is None:
        return text
    return _LONG_RUN.sub(_broken, text)


def _keep_start(run: re.Match[str]) -> str:
    return run.group()[:MAX_PUNCTUATION_RUN] + " " * (len(run.group()) - MAX_PUNCTUATION_RUN)


def _broken(run: re.Match[str]) -> str:
    chars = list(run.group())
    breaks = len(chars[MAX_TOKEN_CHARS :: MAX_TOKEN_CHARS + 1])
    chars[MAX_TOKEN_CHARS :: MAX_TOKEN_CHARS + 1] = " " * breaks
    return "".join(chars)
