from airlock.redactor.placeholders import Detection, mask, name_parts, restore


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


def test_a_shorter_value_is_masked_where_a_longer_one_starting_there_is_not_a_whole_token() -> None:
    # "Jane Roe" matches the start of "Jane Roeland" but is not a whole token there; "Jane" is.
    texts = ["Jane Roe and Jane signed.", "Jane Roeland asked."]
    detections = [[Detection("PERSON", 0, 8), Detection("PERSON", 13, 17)], []]

    masked, _, _ = mask(texts, detections)

    assert masked == ["<PERSON_1> and <PERSON_2> signed.", "<PERSON_2> Roeland asked."]


def test_restore_is_exact_and_single_pass() -> None:
    # A value that itself looks like a placeholder must not be expanded again.
    mapping = {"<PERSON_1>": "<PERSON_2>", "<PERSON_2>": "Bob"}
    result = restore("Hi <PERSON_1>, hi <PERSON_2>, hi <PERSON_3>, hi <person_1>", mapping)
    assert result.text == "Hi <PERSON_2>, hi Bob, hi <PERSON_3>, hi <person_1>"
    assert (result.restored, result.unknown, result.missing) == (2, 1, 0)


def test_restore_counts_placeholders_the_model_dropped() -> None:
    result = restore("Nothing here", {"<PERSON_1>": "Ann", "<EMAIL_ADDRESS_1>": "a@b.co"})
    assert (result.restored, result.unknown, result.missing) == (0, 0, 2)


def test_redact_action_replaces_every_occurrence_with_a_marker_that_is_never_restored() -> None:
    texts = ["Card 4111 1111 1111 1111, again 4111 1111 1111 1111", "and 4111 1111 1111 1111"]
    detections = [[Detection("CREDIT_CARD", 5, 24, action="redact")], []]

    masked, spans, mapping = mask(texts, detections)

    assert masked == ["Card <CREDIT_CARD_REDACTED>, again <CREDIT_CARD_REDACTED>", "and <CREDIT_CARD_REDACTED>"]
    assert mapping.by_placeholder == {}
    assert {s.action for group in spans for s in group} == {"redact"}
    assert restore(masked[0], mapping.by_placeholder).text == masked[0]


def test_caller_text_shaped_like_a_placeholder_is_reserved_and_restores_to_itself() -> None:
    # The caller literally writes "<PERSON_1>"; Jane must not get that placeholder, or the
    # model's echo of the literal would come back as "Jane Roe".
    texts = ["Template uses <PERSON_1> as a slot. Fill it for Jane Roe."]
    detections = [[Detection("PERSON", 48, 56)]]

    masked, _, mapping = mask(texts, detections)

    assert masked == ["Template uses <PERSON_1> as a slot. Fill it for <PERSON_2>."]
    assert mapping.by_placeholder["<PERSON_1>"] == "<PERSON_1>"
    assert mapping.sent == ["<PERSON_2>"]
    answer = restore("Slot <PERSON_1> is now <PERSON_2>.", mapping.by_placeholder)
    assert answer.text == "Slot <PERSON_1> is now Jane Roe."
    assert (answer.sent, answer.survived, answer.missing, answer.unknown) == (1, 1, 0, 0)


def test_name_parts_are_masked_where_they_stand_alone_but_not_stop_words() -> None:
    texts = ["Dr. Jane Roe wrote. Thanks, Jane. Roe agrees. Will May come?"]
    detections = [[Detection("PERSON", 4, 12)]]

    masked, _, mapping = mask(texts, detections, person_name_parts=True)

    assert masked == ["Dr. <PERSON_1> wrote. Thanks, <PERSON_2>. <PERSON_3> agrees. Will May come?"]
    assert mapping.by_placeholder == {"<PERSON_1>": "Jane Roe", "<PERSON_2>": "Jane", "<PERSON_3>": "Roe"}
    assert name_parts("Will May") == []  # both English stop words
    assert name_parts("Dr. Hans-Werner van Renner") == ["Hans-Werner", "Renner"]


def test_stronger_action_wins_when_one_value_is_detected_as_two_types() -> None:
    texts = ["Number 4111111111111111"]
    detections = [
        [Detection("PHONE_NUMBER", 7, 23, score=0.4), Detection("CREDIT_CARD", 7, 23, score=1.0, action="redact")]
    ]
    masked, _, _ = mask(texts, detections)
    assert masked == ["Number <CREDIT_CARD_REDACTED>"]


def test_survival_rate_counts_dropped_altered_and_invented_placeholders() -> None:
    mapping = {"<PERSON_1>": "Ann", "<PERSON_2>": "Bob", "<EMAIL_ADDRESS_1>": "a@b.co", "<PHONE_NUMBER_1>": "555"}
    answer = "Hi <PERSON_1> and [PERSON_2], mail <email_address 1>; ask <PERSON_9>."

    result = restore(answer, mapping)

    assert result.text == "Hi Ann and [PERSON_2], mail <email_address 1>; ask <PERSON_9>."
    assert (result.sent, result.survived, result.restored) == (4, 1, 1)
    assert (result.missing, result.altered, result.unknown) == (3, 2, 1)
    assert result.survival_rate == 0.25
    assert restore("nothing", {}).survival_rate is None
