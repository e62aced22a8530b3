from airlock.redactor.placeholders import Detection, mask, restore


def test_every_occurrence_is_masked_even_where_the_detector_missed_it() -> None:
    texts = ["Jane Roe called. Jane Roe again.", "Reply to Jane Roe please"]
    # The detector found only the first mention.
    detections = [[Detection("PERSON", 0, 8)], []]

    masked, spans, mapping = mask(texts, detections)

    assert masked == ["<PERSON_1> called. <PERSON_1> again.", "Reply to <PERSON_1> please"]
    assert mapping.by_placeholder == {"<PERSON_1>": "Jane Roe"}
    assert [(s.start, s.end) for s in spans[0]] == [(0, 8), (17, 25)]


def test_same_value_same_placeholder_different_values_different_numbers() -> None:
    texts = ["Ann met Bob", "Bob met Ann and Cy"]
    detections = [
        [Detection("PERSON", 0, 3), Detection("PERSON", 8, 11)],
        [Detection("PERSON", 16, 18)],
    ]

    masked, _, mapping = mask(texts, detections)

    assert masked == ["<PERSON_1> met <PERSON_2>", "<PERSON_2> met <PERSON_1> and <PERSON_3>"]
    assert mapping.by_placeholder == {"<PERSON_1>": "Ann", "<PERSON_2>": "Bob", "<PERSON_3>": "Cy"}


def test_occurrences_inside_longer_words_are_left_alone() -> None:
    masked, _, _ = mask(["Ann and Annabel"], [[Detection("PERSON", 0, 3)]])
    assert masked == ["<PERSON_1> and Annabel"]


def test_overlapping_detections_keep_the_longest() -> None:
    text = "Write to jane@example.com"
    detections = [[Detection("EMAIL_ADDRESS", 9, 25), Detection("URL", 14, 25)]]
    masked, _, mapping = mask([text], detections)
    assert masked == ["Write to <EMAIL_ADDRESS_1>"]
    assert list(mapping.by_placeholder.values()) == ["jane@example.com"]


def test_restore_is_exact_and_single_pass() -> None:
    # A value that itself looks like a placeholder must not be expanded again.
    mapping = {"<PERSON_1>": "<PERSON_2>", "<PERSON_2>": "Bob"}
    result = restore("Hi <PERSON_1>, hi <PERSON_2>, hi <PERSON_3>, hi <person_1>", mapping)
    assert result.text == "Hi <PERSON_2>, hi Bob, hi <PERSON_3>, hi <person_1>"
    assert (result.restored, result.unknown, result.missing) == (2, 1, 0)


def test_restore_counts_placeholders_the_model_dropped() -> None:
    result = restore("Nothing here", {"<PERSON_1>": "Ann", "<EMAIL_ADDRESS_1>": "a@b.co"})
    assert (result.restored, result.unknown, result.missing) == (0, 0, 2)
