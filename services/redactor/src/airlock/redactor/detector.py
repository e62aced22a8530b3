"""The PII detector: Presidio's analyzer over a local spaCy model, with no network access.

Presidio's email recognizer validates domains with ``tldextract``, which by default
downloads the public-suffix list on first use. Here it uses the snapshot bundled with
``tldextract`` instead, so the redactor runs with no egress at all.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import tldextract
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpEngine, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import EmailRecognizer

from airlock.redactor.placeholders import Detection

log = logging.getLogger(__name__)

#: Uses only the public-suffix snapshot shipped inside the tldextract package.
_OFFLINE_SUFFIXES = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


class OfflineEmailRecognizer(EmailRecognizer):  # type: ignore[misc]
    """Presidio's email recognizer, validating domains against the bundled suffix list."""

    def validate_result(self, pattern_text: str) -> bool:
        """True when the address ends in a known public suffix."""
        return _OFFLINE_SUFFIXES(pattern_text.rsplit("@", 1)[-1]).fqdn != ""


#: spaCy labels that never name a person or place: numbers, amounts, works, laws, events.
IGNORED_NER_LABELS = [
    "CARDINAL",
    "ORDINAL",
    "QUANTITY",
    "MONEY",
    "PERCENT",
    "WORK_OF_ART",
    "LAW",
    "LANGUAGE",
    "EVENT",
    "PRODUCT",
]


class ModelNotInstalled(RuntimeError):
    """The configured spaCy model is not installed (and will not be downloaded)."""


def model_digest(model_name: str) -> str:
    """SHA-256 over the installed model's files, in path order (to pin a model build)."""
    import spacy.util

    path = spacy.util.get_package_path(model_name)
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _nlp_engine(model_name: str) -> NlpEngine:
    import spacy.util

    if not spacy.util.is_package(model_name):
        raise ModelNotInstalled(
            f"spaCy model {model_name!r} is not installed; install its wheel (AIRLOCK_REDACTOR_SPACY_MODEL names it)"
        )
    engine = SpacyNlpEngine(
        models=[{"lang_code": "en", "model_name": model_name}],
        ner_model_configuration=NerModelConfiguration(labels_to_ignore=IGNORED_NER_LABELS),
    )
    engine.load()
    return engine


class PiiDetector:
    """Finds PII entities in text.

    Args:
        model_name: Installed spaCy pipeline.
        entities: Entity types to report.
        score_threshold: Minimum score of a reported detection.
    """

    def __init__(self, model_name: str, entities: Sequence[str], score_threshold: float) -> None:
        nlp_engine = _nlp_engine(model_name)
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp_engine)
        registry.remove_recognizer("EmailRecognizer")
        registry.add_recognizer(OfflineEmailRecognizer())
        self._analyzer = AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])
        self._entities = list(entities)
        self._threshold = score_threshold

    def detect(self, text: str) -> list[Detection]:
        """Entities found in ``text``; raises whatever the analyzer raises (fail closed)."""
        if not text.strip():
            return []
        results = self._analyzer.analyze(
            text=text,
            language="en",
            entities=self._entities,
            score_threshold=self._threshold,
        )
        return [
            Detection(
                entity_type=r.entity_type,
                start=r.start,
                end=r.end,
                score=r.score,
                recognizer=(r.recognition_metadata or {}).get("recognizer_name", ""),
            )
            for r in results
        ]
