"""Questions about many text spans at once, each answered in logarithmic time.

The person heuristics ask, for every name found, whether an organization span contains it
or a person span overlaps it. Asked pairwise, that is quadratic in the number of spans, and
a hostile prompt ("Anna-Anna-Anna-…") makes thousands of both: one such prompt once held
the redactor for seconds per 10,000 characters while other tenants' requests waited.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from itertools import accumulate


class SpanIndex:
    """Half-open ``(start, end)`` spans, sorted once, for overlap and containment queries."""

    def __init__(self, spans: Iterable[tuple[int, int]]) -> None:
        self._spans = sorted(set(spans))
        self._starts = [start for start, _ in self._spans]
        # Longest reach of any span starting at or before each position in the sorted list.
        self._reach = list(accumulate((end for _, end in self._spans), max))

    def __bool__(self) -> bool:
        return bool(self._spans)

    def _reach_before(self, count: int) -> int:
        """The largest end among the first ``count`` spans (-1 if none)."""
        return self._reach[count - 1] if count > 0 else -1

    def overlaps(self, start: int, end: int) -> bool:
        """Whether a span shares at least one character with ``start:end``."""
        return self._reach_before(bisect.bisect_left(self._starts, end)) > start

    def contains(self, start: int, end: int) -> bool:
        """Whether a span holds all of ``start:end`` (the span itself counts)."""
        return self._reach_before(bisect.bisect_right(self._starts, start)) >= end

    def contains_strictly(self, start: int, end: int) -> bool:
        """Whether a span other than ``start:end`` itself holds all of it."""
        if self._reach_before(bisect.bisect_left(self._starts, start)) >= end:
            return True  # one starting earlier
        first, last = bisect.bisect_left(self._starts, start), bisect.bisect_right(self._starts, start)
        return last > first and self._spans[last - 1][1] > end  # one starting here, ending later
