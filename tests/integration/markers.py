"""Unique words that let a test find its own call in the fake OpenAI server's log.

A test tags its prompt with a random word and then looks for that word in what the model
received. The small spaCy model reads an unknown word as a name now and then (about 3 in 100
random ``zq…`` words after "Ref" came out as ``<PERSON_1>``), which hid the call from the test
(CI failed on it once) or let a "the model never saw it" check pass for the wrong reason. So the
word is run through the redactor itself (same code, same model, default policy) in the very
prompt it goes into, and drawn again if anything in it gets masked. spaCy's inference is
deterministic, so a word that survives here survives in the service.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable

from airlock.redactor.redaction import Redactor, build_redactor
from airlock.redactor.settings import RedactorSettings

ATTEMPTS = 20


@functools.cache
def _redactor() -> Redactor:
    return build_redactor(RedactorSettings())


def random_word() -> str:
    """Ten random letters behind ``zq``: unique per call, and no structured recognizer's shape."""
    return "zq" + "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:10])


def unmasked_marker(prompt: Callable[[str], str] = lambda word: f"Ref {word}.") -> str:
    """A unique word that the default redaction policy leaves intact inside ``prompt(word)``.

    Args:
        prompt: Builds the prompt the word will be sent in (the context decides what spaCy sees).

    Returns:
        A word that appears unchanged in the redacted prompt.

    Raises:
        AssertionError: If no word drawn survived (the redactor masks the context around it).
    """
    redactor = _redactor()
    for _ in range(ATTEMPTS):
        word = random_word()
        result = redactor.redact([prompt(word)], redactor.policy_for("*", "*"))
        if word in result.texts[0]:
            return word
    raise AssertionError(f"the redactor masked {ATTEMPTS} random markers in {prompt('<marker>')!r}")
