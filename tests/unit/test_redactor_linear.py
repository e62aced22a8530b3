"""The redactor's text preparation and span questions hold their answers while costing linear time.

Timings are in the bench (``airlock bench redactor``, adversarial shapes beside prose); here,
what the shortcuts must not change: the model's view keeps every offset, and the span index
answers exactly what the pairwise scans it replaced answered.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from airlock.redactor.chunking import MAX_PUNCTUATION_RUN, MAX_TOKEN_CHARS, tokenizable
from airlock.redactor.spans import SpanIndex

Span = tuple[int, int]
SPANS = st.lists(st.tuples(st.integers(0, 60), st.integers(1, 20)).map(lambda p: (p[0], p[0] + p[1])), max_size=30)
QUERY = st.tuples(st.integers(0, 70), st.integers(1, 15)).map(lambda p: (p[0], p[0] + p[1]))


@given(SPANS, QUERY)
def test_the_span_index_answers_what_the_pairwise_scans_answered(
    spans: list[tuple[int, int]], query: tuple[int, int]
) -> None:
    index, (start, end) = SpanIndex(spans), query
    assert index.overlaps(start, end) == any(a < end and start < b for a, b in spans)
    assert index.contains(start, end) == any(a <= start and end <= b for a, b in spans)
    assert index.contains_strictly(start, end) == any(
        a <= start and end <= b and (a, b) != (start, end) for a, b in spans
    )


@given(st.text(alphabet=st.sampled_from("a:.- \n(Ä1"), max_size=400))
def test_the_models_view_keeps_every_offset_and_every_short_word(text: str) -> None:
    view = tokenizable(text)
    assert len(view) == len(text)
    for original, seen in zip(text, view, strict=True):
        assert seen == original or seen == " "
    assert all(len(run) <= MAX_TOKEN_CHARS for run in view.split())


def test_punctuation_runs_and_overlong_tokens_are_cut_for_the_model() -> None:
    assert tokenizable(":" * 10) == ":" * MAX_PUNCTUATION_RUN + " " * (10 - MAX_PUNCTUATION_RUN)
    assert tokenizable("Jane Roe: call me at (555) 010-1234...") == "Jane Roe: call me at (555) 010-1234..."
    run = "x" * (3 * MAX_TOKEN_CHARS)
    assert [len(part) for part in tokenizable(run).split()] == [MAX_TOKEN_CHARS, MAX_TOKEN_CHARS, MAX_TOKEN_CHARS - 2]
