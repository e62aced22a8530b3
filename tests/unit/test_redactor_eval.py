"""The evaluation set generator and the scores of ``make eval``."""

from __future__ import annotations

from airlock.devstack.eval.dataset import KINDS, STRUCTURED, Keep, Planted, Sample, compose, generate, present
from airlock.devstack.eval.report import Score, table, verdicts


def test_the_set_is_deterministic_labeled_and_varied() -> None:
    samples = generate(150, seed=5)

    assert samples == generate(150, seed=5)
    assert samples != generate(150, seed=6)
    assert {s.kind for s in samples} == set(KINDS)
    for sample in samples:
        for planted in sample.pii:
            assert present(planted.value, sample.text), (sample.sample_id, planted)
        for keep in sample.keep:
            assert present(keep.value, sample.text), (sample.sample_id, keep)
    questions = [s for s in samples if s.kind == "question"]
    assert questions and all(not s.pii for s in questions)
    categories = {p.category for s in samples for p in s.pii}
    assert set(STRUCTURED) <= categories and {"PERSON", "STREET_ADDRESS", "BANK_ACCOUNT"} <= categories


def test_composed_samples_keep_the_labels_of_their_parts() -> None:
    samples = generate(40, seed=1)

    long = compose(samples, 1_000)

    assert long and all(len(s.text) >= 1_000 for s in long)
    for sample in long:
        assert all(present(p.value, sample.text) for p in sample.pii)


def test_present_matches_whole_tokens_only() -> None:
    assert present("Ann", "Hi Ann, welcome") and present("Ann", "Ann's laptop")
    assert not present("Ann", "Annual report") and not present("Ann", "<PERSON_1>")


def test_score_counts_leaks_and_lost_words_per_category() -> None:
    sample = Sample(
        "s-1",
        "support_ticket",
        "Jane Roe (jane@example.com) from Berlin",
        (Planted("PERSON", "Jane Roe"), Planted("EMAIL_ADDRESS", "jane@example.com")),
        (Keep("CITY", "Berlin"),),
    )

    score = Score.of([sample, sample], ["<PERSON_1> (jane@example.com) from Berlin", "<PERSON_1> (<E>) from <C>"])

    assert score.leakage() == 0.25 and score.leakage(["EMAIL_ADDRESS"]) == 0.5
    assert score.utility() == 0.5
    assert score.leaks == [("EMAIL_ADDRESS", "jane@example.com")]
    rendered = table({"mine": score, "theirs": score})
    assert "EMAIL_ADDRESS *" in rendered and "1 (50.00%)" in rendered and "utility" in rendered
    assert any("NOT MET" in line for line in verdicts(score))
