"""The redactors under evaluation: Airlock's, and plain Presidio with its defaults.

Both use the same spaCy model and both run offline. The baseline is what a user gets from
``AnalyzerEngine()`` + ``AnonymizerEngine()`` with Presidio's default configuration (every
predefined recognizer, every entity type, the full spaCy pipeline), the model name being the
one change; its ``tldextract`` is pointed at the bundled public-suffix snapshot so it does not
try to download the list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: Messages per micro-batch handed to Airlock's redactor (the consumer's batches are larger).
AIRLOCK_BATCH = 32


@dataclass
class Engine:
    """A redactor under test.

    Attributes:
        name: Column heading.
        redact: Texts in, redacted texts out (one per input, in order).
        redact_one: One text in, one redacted text out (for per-message latency).
    """

    name: str
    redact: Callable[[Sequence[str]], list[str]]
    redact_one: Callable[[str], str]


def airlock_engine(model: str, *, batch: int = AIRLOCK_BATCH) -> Engine:
    """Airlock's redactor with the packaged default policy."""
    from airlock.redactor.detector import PiiDetector
    from airlock.redactor.policy import PolicySet
    from airlock.redactor.redaction import Redactor

    redactor = Redactor(PiiDetector(model), PolicySet.load())
    policy = redactor.policy_for("*", "*")

    def redact(texts: Sequence[str]) -> list[str]:
        out: list[str] = []
        for start in range(0, len(texts), batch):
            results = redactor.redact_many([([text], policy) for text in texts[start : start + batch]])
            out.extend(result.texts[0] for result in results)
        return out

    def redact_one(text: str) -> str:
        return redactor.redact([text], policy).texts[0]

    return Engine("airlock", redact, redact_one)


def presidio_analyzer(model: str) -> Any:
    """Presidio's ``AnalyzerEngine`` with its default configuration, ``model`` as the spaCy model, offline."""
    from importlib import resources

    import yaml
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    from airlock.redactor.recognizers import make_tldextract_offline

    make_tldextract_offline()
    configuration: dict[str, Any] = yaml.safe_load(
        resources.files("presidio_analyzer").joinpath("conf", "default.yaml").read_text()
    )
    for entry in configuration["models"]:
        entry["model_name"] = model
    return AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=configuration).create_engine())


def presidio_defaults_engine(model: str) -> Engine:
    """``AnalyzerEngine.analyze`` + ``AnonymizerEngine.anonymize`` per text, Presidio's defaults.

    Raises:
        RuntimeError: presidio-anonymizer is not installed (it is a dev requirement).
    """
    try:
        from presidio_anonymizer import AnonymizerEngine
    except ImportError as error:
        raise RuntimeError("presidio-anonymizer is missing: run `make install` (it is a dev requirement)") from error
    analyzer = presidio_analyzer(model)
    anonymizer = AnonymizerEngine()

    def redact_one(text: str) -> str:
        found: Any = analyzer.analyze(text=text, language="en")  # the anonymizer reads the same fields
        return str(anonymizer.anonymize(text=text, analyzer_results=found).text)

    def redact(texts: Sequence[str]) -> list[str]:
        return [redact_one(text) for text in texts]

    return Engine("presidio-defaults", redact, redact_one)


ENGINES: dict[str, Callable[[str], Engine]] = {
    "airlock": airlock_engine,
    "presidio-defaults": presidio_defaults_engine,
}
