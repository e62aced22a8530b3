"""Redaction policies: schema validation, versioning, selection per tenant and use case."""

from __future__ import annotations

from pathlib import Path

import pytest

from airlock.redactor.policy import Action, PolicyError, PolicySet, default_policy, parse_policy

MINIMAL = """
schema_version: 1
name: hr
version: "3"
applies_to: [{tenant: acme, use_case: hr}]
entities:
  PERSON: mask
  US_SSN: block
  EMPLOYEE_ID: {action: redact, threshold: 0.3}
recognizers:
  - name: employee_id
    entity: EMPLOYEE_ID
    patterns: [{regex: 'E-\\d{6}', score: 0.2}]
    context: [employee]
"""


def test_default_policy_protects_identifiers_and_leaves_useful_words_alone() -> None:
    policy = default_policy()

    protected = {
        "PERSON",
        "EMAIL_ADDRESS",
        "PHONE_NUMBER",
        "CREDIT_CARD",
        "US_SSN",
        "UK_NINO",
        "IBAN_CODE",
        "US_BANK_NUMBER",
        "IP_ADDRESS",
        "STREET_ADDRESS",
    }
    assert protected <= set(policy.detected)
    for useful in ("LOCATION", "ORGANIZATION", "NRP", "DATE_TIME", "URL"):
        assert policy.action(useful) is Action.ALLOW
    assert policy.action("CREDIT_CARD") is Action.REDACT
    assert policy.action("SOMETHING_UNLISTED") is Action.ALLOW
    assert policy.label == "default@2"
    assert policy.applies_to[0].tenant == "*" and policy.applies_to[0].use_case == "*"


def test_rules_thresholds_and_custom_recognizers_are_read() -> None:
    policy = parse_policy(MINIMAL)

    assert policy.detected == ("EMPLOYEE_ID", "PERSON", "US_SSN")
    assert policy.threshold("EMPLOYEE_ID") == 0.3
    assert policy.threshold("PERSON") == policy.default_threshold
    assert policy.recognizers[0].context == ["employee"]


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (("PERSON: mask", "PERSON: scramble"), "entities.PERSON"),
        (("threshold: 0.3", "threshold: 1.5"), "threshold"),
        (("'E-\\d{6}'", "'E-(\\d{6}'"), "not a valid regular expression"),
        (("'E-\\d{6}'", "'x*'"), "matches the empty string"),
        (("entity: EMPLOYEE_ID", "entity: BADGE_ID"), "BADGE_ID, which 'entities' does not list"),
        (('version: "3"', 'version: "3"\ncolour: blue'), "colour"),
        (("  US_SSN: block", "  us_ssn: block"), "us_ssn"),
        (("  US_SSN: block", "  ACCOUNT_7: block"), "ACCOUNT_7"),
        (("tenant: acme", "tenant: 'ac me'"), "tenant"),
    ],
)
def test_invalid_policies_are_refused_naming_the_field(change: tuple[str, str], complaint: str) -> None:
    text = MINIMAL.replace(*change)
    assert text != MINIMAL

    with pytest.raises(PolicyError) as error:
        parse_policy(text, "hr.yaml")

    assert str(error.value).startswith("hr.yaml: ")
    assert complaint in str(error.value)


def test_malformed_yaml_and_non_mappings_are_refused() -> None:
    with pytest.raises(PolicyError, match="not valid YAML"):
        parse_policy("entities: [unclosed", "x.yaml")
    with pytest.raises(PolicyError, match="a policy is a YAML mapping"):
        parse_policy("- just\n- a list\n", "x.yaml")


def test_digest_changes_with_any_edit_even_without_a_version_bump() -> None:
    original = parse_policy(MINIMAL)
    edited = parse_policy(MINIMAL.replace("score: 0.2", "score: 0.25"))

    assert original.label == edited.label
    assert original.digest != edited.digest
    assert parse_policy(MINIMAL).digest == original.digest


def test_most_specific_selector_wins(tmp_path: Path) -> None:
    (tmp_path / "hr.yaml").write_text(MINIMAL)
    (tmp_path / "acme.yaml").write_text(
        MINIMAL.replace("name: hr", "name: acme").replace("use_case: hr", "use_case: '*'")
    )
    (tmp_path / "support.yaml").write_text(
        MINIMAL.replace("name: hr", "name: support").replace(
            "tenant: acme, use_case: hr", "tenant: '*', use_case: support"
        )
    )
    (tmp_path / "notes.txt").write_text("not a policy")

    policies = PolicySet.load(tmp_path)

    assert policies.select("acme", "hr").name == "hr"
    assert policies.select("acme", "support").name == "acme"  # tenant beats use case
    assert policies.select("globex", "support").name == "support"
    assert policies.select("globex", "chat").name == "default"
    assert {p.name for p in policies.policies} == {"default", "hr", "acme", "support"}


def test_a_loaded_catch_all_replaces_the_packaged_default(tmp_path: Path) -> None:
    (tmp_path / "strict.yaml").write_text(
        MINIMAL.replace("name: hr", "name: strict").replace("tenant: acme, use_case: hr", "tenant: '*', use_case: '*'")
    )

    policies = PolicySet.load(tmp_path)

    assert [p.name for p in policies.policies] == ["strict"]
    assert policies.select("anyone", "anything").name == "strict"


def test_two_policies_claiming_the_same_requests_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(MINIMAL)
    (tmp_path / "b.yaml").write_text(MINIMAL.replace("name: hr", "name: hr-copy"))

    with pytest.raises(PolicyError, match="both apply to tenant=acme use_case=hr"):
        PolicySet.load(tmp_path)


def test_a_set_without_a_catch_all_is_refused_and_a_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no policy applies to every tenant"):
        PolicySet([parse_policy(MINIMAL)])
    with pytest.raises(PolicyError, match="not a directory"):
        PolicySet.load(tmp_path / "missing")
