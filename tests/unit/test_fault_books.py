"""The fault suite's books fail when they do not balance (``tests/faults/books.py``, pure part)."""

from __future__ import annotations

from collections import Counter

from tests.faults.books import Books


def balanced(published: int = 3) -> Books:
    return Books("phase", sent=published, published=published, terminal=Counter(DELIVERED=published), replies=published)


def test_balanced_books_have_no_problems() -> None:
    books = balanced()

    assert books.problems() == []
    assert "published    3 = delivered 3 rejected 0 blocked 0 failed 0; replies    3" in books.line()


def test_a_lost_request_a_doubled_reply_and_a_doubled_output_are_each_named() -> None:
    books = balanced()
    books.terminal = Counter(DELIVERED=2)
    books.no_terminal = ["a1"]
    books.replies = 4
    books.several_replies = ["a2"]
    books.doubled = {"t.redacted": ["a3"], "t.usage": []}

    problems = books.problems()

    assert "published 3 != terminal 2 ({'DELIVERED': 2})" in problems
    assert "no terminal state in the ledger: 1 e.g. ['a1']" in problems
    assert "more than one reply: 1 e.g. ['a2']" in problems
    assert "more than one record on t.redacted: 1 e.g. ['a3']" in problems
    assert "replies 4 != published 3" in problems
    assert not any("t.usage" in problem for problem in problems)


def test_an_empty_phase_or_a_dirty_ledger_does_not_balance() -> None:
    empty = Books("phase")
    dirty = balanced()
    dirty.findings = ["hash_mismatch p0 seq 7: recomputed hash differs"]

    assert "nothing was published" in empty.problems()
    assert dirty.problems() == ["ledger findings: 1 e.g. ['hash_mismatch p0 seq 7: recomputed hash differs']"]
