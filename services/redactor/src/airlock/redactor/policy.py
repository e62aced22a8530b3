"""Redaction policies: what to do with each entity type, for which tenant and use case.

A policy is a YAML document validated against :class:`Policy` (unknown keys, bad regexes,
out-of-range thresholds and ambiguous selectors are refused with a message naming the file and
the field). Policies are versioned: ``name@version`` goes into every redactor audit event,
with a digest of the document so an edit without a version bump is still visible.

The packaged default policy (``policies/default.yaml``) applies to every tenant and use case
unless a policy from ``AIRLOCK_REDACTOR_POLICY_DIR`` is more specific (or replaces the catch-all).
Nothing here imports Presidio: recognizers are built from a policy in :mod:`.recognizers`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

#: Entity type names become placeholder names (``<EMPLOYEE_ID_1>``): capitals, digits and ``_``,
#: not ending in ``_<digits>`` so a placeholder's number is never part of its type.
EntityType = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,62}[A-Z]$")]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
#: A selector value: an exact tenant or use case, or ``*`` for any.
SelectorValue = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^(\*|[A-Za-z0-9._:@/-]+)$")]

DEFAULT_POLICY = "default.yaml"


class PolicyError(ValueError):
    """A policy file is missing, unreadable or invalid; the message says where."""


class Action(StrEnum):
    """What the redactor does with a detected entity."""

    MASK = "mask"
    """Replace with a reversible placeholder (``<PERSON_1>``), restored in the answer."""
    REDACT = "redact"
    """Replace with an irreversible marker (``<CREDIT_CARD_REDACTED>``); never restored."""
    BLOCK = "block"
    """Refuse the whole request (BLOCKED) with an error naming the entity type."""
    ALLOW = "allow"
    """Leave it alone (not even looked for)."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EntityRule(_Strict):
    """The action for one entity type.

    Attributes:
        action: mask, redact, block or allow.
        threshold: Minimum detection score for this type (default: the policy's).
    """

    action: Action
    threshold: float | None = Field(default=None, ge=0, le=1)


class PatternSpec(_Strict):
    """One regular expression of a custom recognizer.

    Attributes:
        regex: Python regular expression; matched case-sensitively unless it says ``(?i)``.
        score: Score of a match before context words raise it.
        name: Shown by ``airlock redact --explain``.
    """

    regex: str = Field(min_length=1, max_length=2000)
    score: float = Field(default=0.5, ge=0, le=1)
    name: str | None = Field(default=None, max_length=64)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as error:
            raise ValueError(f"not a valid regular expression: {error}") from None
        if compiled.match(""):
            raise ValueError("the regular expression matches the empty string")
        return value


class CustomRecognizer(_Strict):
    """A regex recognizer defined by the policy (employee ids, customer numbers…).

    Attributes:
        name: Recognizer name (shown by ``--explain``).
        entity: The entity type it reports; the policy's ``entities`` says what to do with it.
        patterns: Regular expressions; the highest-scoring match wins.
        context: Words near a match that raise its score (Presidio's context enhancement).
    """

    name: Name
    entity: EntityType
    patterns: list[PatternSpec] = Field(min_length=1, max_length=32)
    context: list[str] = Field(default_factory=list, max_length=64)


class PhoneOptions(_Strict):
    """How phone numbers are recognized.

    Attributes:
        regions: ISO regions whose numbering plans are tried (each costs a scan of the text).
        leniency: ``possible`` accepts any number of a plausible length for the region,
            ``valid`` only numbers with an assigned prefix (misses made-up or new ranges).
    """

    regions: list[Annotated[str, Field(pattern=r"^[A-Z]{2}$")]] = Field(
        default_factory=lambda: ["US", "GB", "DE", "FR", "ES", "IT", "NL", "PL", "BR", "IN", "CA"],
        min_length=1,
        max_length=64,
    )
    leniency: Literal["possible", "valid"] = "valid"


Role = Literal["system", "developer", "user", "assistant"]
#: The caller's own messages: what it wrote, and the answers it was already given.
CALLER_ROLES: tuple[Role, ...] = ("user", "assistant")


class OutputRule(_Strict):
    """What to do with PII that the model's answer introduced (not the caller's own values).

    Attributes:
        introduced_pii: ``flag`` records the entity types in the DELIVERED audit event;
            ``mask`` also replaces the values with ``<TYPE_REDACTED>`` before delivery.
    """

    introduced_pii: Literal["flag", "mask"] = "flag"


class Selector(_Strict):
    """Which requests a policy applies to; ``*`` matches anything."""

    tenant: SelectorValue = "*"
    use_case: SelectorValue = "*"

    @property
    def specificity(self) -> int:
        """2 for an exact tenant, 1 for an exact use case, summed: the most specific wins."""
        return (2 if self.tenant != "*" else 0) + (1 if self.use_case != "*" else 0)

    def matches(self, tenant: str, use_case: str) -> bool:
        """Whether a request of ``tenant`` and ``use_case`` falls under this selector."""
        return self.tenant in ("*", tenant) and self.use_case in ("*", use_case)


class Policy(_Strict):
    """A redaction policy (one YAML document).

    Attributes:
        schema_version: Version of this schema (1).
        name: The policy's name.
        version: The policy's own version; bump it on every change.
        description: What the policy is for.
        applies_to: Tenant/use-case selectors.
        default_threshold: Minimum score of a detection whose type sets none.
        entities: Entity type → action (``PERSON: mask``) or rule (``{action, threshold}``);
            types not listed are allowed (not even looked for).
        allow_list: Exact values never masked (e.g. a support desk's own name).
        deny_list: Entity type → values always treated as that type.
        recognizers: Custom regex recognizers.
        name_parts: Also mask each part of a detected person's name wherever it appears
            ("Jane Roe … thanks, Jane"), except stop words.
        phone: Phone recognition options.
        output: What to do with PII the model introduced in its answer.
        restore_roles: Whose messages' values the answer may get back: a placeholder is
            restored only when it occurred in a message of one of these roles. Values that
            came only from other messages (a system prompt's retrieved records, say) stay
            placeholders in the answer and are counted as ``placeholders_out_of_scope``.
    """

    schema_version: Literal[1] = 1
    name: Name
    version: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    description: str = ""
    applies_to: list[Selector] = Field(default_factory=lambda: [Selector()], min_length=1)
    default_threshold: float = Field(default=0.5, ge=0, le=1)
    entities: dict[EntityType, EntityRule | Action] = Field(min_length=1)
    allow_list: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(default_factory=list)
    deny_list: dict[EntityType, list[Annotated[str, Field(min_length=1, max_length=256)]]] = Field(default_factory=dict)
    recognizers: list[CustomRecognizer] = Field(default_factory=list, max_length=128)
    name_parts: bool = True
    phone: PhoneOptions = PhoneOptions()
    output: OutputRule = OutputRule()
    restore_roles: list[Role] = Field(default_factory=lambda: list(CALLER_ROLES), min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        defined = set(self.entities)
        for recognizer in self.recognizers:
            if recognizer.entity not in defined:
                raise ValueError(
                    f"recognizer {recognizer.name!r} reports {recognizer.entity}, which 'entities' does not list"
                )
        for entity in self.deny_list:
            if entity not in defined:
                raise ValueError(f"deny_list names {entity}, which 'entities' does not list")
        names = [r.name for r in self.recognizers]
        if len(names) != len(set(names)):
            raise ValueError("recognizer names must be unique")
        return self

    # -- reading the rules ----------------------------------------------------------------------

    def rule(self, entity: str) -> EntityRule:
        """The rule for ``entity`` (allow when the policy does not list it)."""
        found = self.entities.get(entity, Action.ALLOW)
        return found if isinstance(found, EntityRule) else EntityRule(action=found)

    def action(self, entity: str) -> Action:
        """What to do with ``entity``."""
        return self.rule(entity).action

    def threshold(self, entity: str) -> float:
        """Minimum score of a detection of ``entity``."""
        threshold = self.rule(entity).threshold
        return self.default_threshold if threshold is None else threshold

    @property
    def detected(self) -> tuple[str, ...]:
        """Entity types to look for: every listed type that is not allowed."""
        return tuple(sorted(e for e in self.entities if self.action(e) is not Action.ALLOW))

    @property
    def label(self) -> str:
        """``name@version``: what audit events record as the policy version."""
        return f"{self.name}@{self.version}"

    @functools.cached_property
    def digest(self) -> str:
        """SHA-256 of the policy's canonical JSON (the first 12 hex digits identify an edit).

        Cached: the policy is frozen, and every request asks for it (detector key, audit event)
        — about a tenth of a short prompt's redaction time when recomputed. Build a changed policy
        with ``model_validate`` (``model_copy(update=...)`` would keep the old digest).
        """
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse and validate one policy document.

    Raises:
        PolicyError: The YAML is malformed or does not match the schema; the message names
            ``source`` and each offending field.
    """
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PolicyError(f"{source}: not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise PolicyError(f"{source}: a policy is a YAML mapping")
    try:
        return Policy.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or '(root)'}: {item['msg']}" for item in error.errors()
        )
        raise PolicyError(f"{source}: {problems}") from None


def load_policy(path: Path) -> Policy:
    """Read and validate the policy in ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyError(f"{path}: cannot read the policy: {error.strerror or error}") from None
    return parse_policy(text, str(path))


def default_policy() -> Policy:
    """The policy packaged with the redactor."""
    text = resources.files("airlock.redactor").joinpath("policies", DEFAULT_POLICY).read_text(encoding="utf-8")
    return parse_policy(text, f"airlock.redactor/policies/{DEFAULT_POLICY}")


class PolicySet:
    """The policies in force, and which one applies to a request.

    The most specific selector wins (tenant and use case > tenant > use case > catch-all).
    Two policies with equally specific selectors for the same tenant and use case are refused,
    as is a set with no catch-all.

    Args:
        policies: The policies; later ones replace earlier ones of the same name.
    """

    def __init__(self, policies: Iterable[Policy]) -> None:
        by_name: dict[str, Policy] = {}
        for policy in policies:
            by_name[policy.name] = policy
        self._policies = tuple(by_name.values())
        owners: dict[tuple[str, str], str] = {}
        for policy in self._policies:
            for selector in policy.applies_to:
                key = (selector.tenant, selector.use_case)
                if key in owners and owners[key] != policy.name:
                    raise PolicyError(
                        f"policies {owners[key]!r} and {policy.name!r} both apply to "
                        f"tenant={selector.tenant} use_case={selector.use_case}"
                    )
                owners[key] = policy.name
        if ("*", "*") not in owners:
            raise PolicyError("no policy applies to every tenant and use case (applies_to: [{}])")

    @classmethod
    def load(cls, directory: Path | None = None, files: Sequence[Path] = ()) -> PolicySet:
        """The packaged default policy, then every ``*.yaml``/``*.yml`` in ``directory``, then ``files``.

        A loaded policy that applies to every tenant and use case replaces the default one.
        """
        loaded: list[Policy] = []
        if directory is not None:
            if not directory.is_dir():
                raise PolicyError(f"{directory}: not a directory of policies")
            paths = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml"))
            loaded.extend(load_policy(path) for path in paths)
        loaded.extend(load_policy(path) for path in files)
        replaces_default = any(s.tenant == "*" and s.use_case == "*" for p in loaded for s in p.applies_to)
        return cls(loaded if replaces_default else [default_policy(), *loaded])

    @property
    def policies(self) -> tuple[Policy, ...]:
        """Every policy in the set."""
        return self._policies

    def select(self, tenant: str, use_case: str) -> Policy:
        """The policy for a request of ``tenant`` and ``use_case``."""
        best: tuple[int, Policy] | None = None
        for policy in self._policies:
            for selector in policy.applies_to:
                if selector.matches(tenant, use_case) and (best is None or selector.specificity > best[0]):
                    best = (selector.specificity, policy)
        assert best is not None, "a catch-all policy always exists"
        return best[1]
