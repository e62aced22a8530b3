"""Redacting a request's texts: detection, then masking with one map per request."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from airlock.core.settings import SettingsError
from airlock.redactor.detector import PiiDetector, model_digest
from airlock.redactor.placeholders import MaskedSpan, PlaceholderMap, mask
from airlock.redactor.settings import RedactorSettings


@dataclass(frozen=True)
class RedactionResult:
    """Masked texts, where the placeholders went, and the map back to the values."""

    texts: list[str]
    spans: list[list[MaskedSpan]]
    mapping: PlaceholderMap

    def entity_counts(self) -> dict[str, int]:
        """Occurrences masked, by entity type (counts only: safe for audit and metrics)."""
        counts = Counter(span.entity_type for spans in self.spans for span in spans)
        return dict(sorted(counts.items()))


class Redactor:
    """Masks the PII in the texts of one request.

    Args:
        detector: Finds entities; its failures propagate (the caller fails closed).
    """

    def __init__(self, detector: PiiDetector) -> None:
        self._detector = detector

    def redact(self, texts: Sequence[str]) -> RedactionResult:
        """Detect entities in every text, then mask every occurrence of each value."""
        detections = [self._detector.detect(text) for text in texts]
        masked, spans, mapping = mask(texts, detections)
        return RedactionResult(masked, spans, mapping)


def build_redactor(settings: RedactorSettings) -> Redactor:
    """Load the detector (checking the model's digest when one is pinned) into a redactor."""
    if settings.spacy_model_sha256:
        actual = model_digest(settings.spacy_model)
        if actual != settings.spacy_model_sha256:
            raise SettingsError(
                f"AIRLOCK_REDACTOR_SPACY_MODEL_SHA256: installed {settings.spacy_model} "
                f"has digest {actual}, not the pinned one"
            )
    return Redactor(PiiDetector(settings.spacy_model, settings.entities, settings.score_threshold))
