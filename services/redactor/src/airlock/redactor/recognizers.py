"""The recognizers a policy needs, built for one process-wide NLP engine, all offline.

Only the recognizers that report an entity type the policy looks for are built: every
recognizer costs a scan of every text. Presidio's own recognizers are used where they are
good; a few are replaced:

* e-mail: validates domains against the public-suffix snapshot bundled with ``tldextract``
  (Presidio's asks ``tldextract``, which downloads the list on first use);
* cards: also knows Mastercard's 2-series (2221–2720), which Presidio's pattern omits;
* phones: regions and leniency come from the policy;
* street addresses: Presidio has none for English; ours is a USPS-suffix pattern;
* credentials (``CREDENTIAL``): provider key formats, JWTs, private keys and secret fields,
  from the named rules in ``data/credentials.yaml``;
* the policy's own regex recognizers and deny lists;
* people's names: see :mod:`.people`.
"""

from __future__ import annotations

import bisect
import functools
import importlib.resources
import inspect
import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import phonenumbers
import tldextract
import tldextract.tldextract
import yaml
from presidio_analyzer import (
    AnalysisExplanation,
    EntityRecognizer,
    LocalRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerResult,
)
from presidio_analyzer import predefined_recognizers as predefined
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    SpacyRecognizer,
)

from airlock.redactor.people import GivenNameRecognizer, NerPersonRecognizer, PersonContextRecognizer
from airlock.redactor.policy import Policy


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Uses only the public-suffix snapshot shipped inside the tldextract package.
OFFLINE_SUFFIXES = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def make_tldextract_offline() -> None:
    """Point ``tldextract.extract`` (used by any library in this process) at the bundled snapshot."""
    tldextract.tldextract.TLD_EXTRACTOR = OFFLINE_SUFFIXES


_WHITESPACE = re.compile(r"\s")


def _stretches(text: str, anchor: re.Pattern[str]) -> list[tuple[int, int]]:
    """The runs of non-space characters that hold a match of ``anchor``, one character wider on each side, merged."""
    windows: list[tuple[int, int]] = []
    position = 0
    while (found := anchor.search(text, position)) is not None:
        left = max(text.rfind(space, 0, found.start()) for space in " \t\n\r\f\v") + 1
        right_space = _WHITESPACE.search(text, found.end())
        right = len(text) if right_space is None else right_space.start()
        start, end = max(0, left - 1), min(len(text), right + 1)
        if windows and start <= windows[-1][1]:
            windows[-1] = (windows[-1][0], end)
        else:
            windows.append((start, end))
        position = right
    return windows


class _AnchoredPatterns(PatternRecognizer):  # type: ignore[misc]
    """A pattern recognizer that runs only where the text holds its anchor (``@`` for an address).

    Its patterns cannot match across whitespace, so the run of non-space characters around
    each anchor, with one character of margin for the boundary checks, shows the patterns
    everything the whole text would; a prompt is mostly words without one.
    """

    ANCHOR: ClassVar[re.Pattern[str]]

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: Any = None, regex_flags: int | None = None
    ) -> list[RecognizerResult]:
        """The matches of the patterns in the stretches around the anchors."""
        results: list[RecognizerResult] = []
        for start, end in _stretches(text, self.ANCHOR):
            for result in super().analyze(text[start:end], entities, nlp_artifacts, regex_flags):
                result.start += start
                result.end += start
                results.append(result)
        return results


class OfflineEmailRecognizer(_AnchoredPatterns, EmailRecognizer):  # type: ignore[misc]
    """Presidio's email recognizer, validating domains against the bundled suffix list."""

    ANCHOR = re.compile("@")

    def validate_result(self, pattern_text: str) -> bool:
        """True when the address ends in a known public suffix."""
        return OFFLINE_SUFFIXES(pattern_text.rsplit("@", 1)[-1]).fqdn != ""


class AnchoredIpRecognizer(_AnchoredPatterns, IpRecognizer):  # type: ignore[misc]
    """Presidio's IP address recognizer, run only around a dotted digit or two colons close together."""

    ANCHOR = re.compile(r"\d\.\d|:[0-9A-Fa-f]{0,4}:")


#: What people put between the digit groups of a card number ("4111.1111.1111.1111" too).
_CARD_SEPARATOR = r"[-. _/]"


class CardRecognizer(CreditCardRecognizer):  # type: ignore[misc]
    """Card numbers (Luhn-checked), including Mastercard's 2-series, with any common separator."""

    PATTERNS = [  # noqa: RUF012 (Presidio's own class attribute, overridden)
        Pattern(
            "Card number (Luhn)",
            r"\b(?!1\d{12}(?!\d))((4\d{3})|(5[0-5]\d{2})|(2[2-7]\d{2})|(6\d{3})|(1\d{3})|(3\d{3}))"
            rf"{_CARD_SEPARATOR}?(\d{{3,4}}){_CARD_SEPARATOR}?(\d{{3,4}}){_CARD_SEPARATOR}?(\d{{3,5}})\b",
            0.3,
        ),
        # 12–19 digits in any grouping (Maestro, 19-digit Visa, Diners typed in fours).
        Pattern("Card number, any grouping (Luhn)", rf"\b[2-6]\d{{3}}(?:{_CARD_SEPARATOR}?\d){{8,15}}\b", 0.3),
    ]

    def __init__(self) -> None:
        separators = [(separator, "") for separator in "-. _/"]
        super().__init__(patterns=self.PATTERNS, name="CardRecognizer", replacement_pairs=separators)


@dataclass(frozen=True)
class CredentialRule:
    """One named credential format: a regex (its ``secret`` group, if any, is what is masked).

    Attributes:
        name: Names the rule in explanations (``CredentialRecognizer[<name>]``).
        regex: The format.
        score: What a match alone is worth.
        min_entropy_bits: When set, the masked span must carry at least this much Shannon
            entropy per character and have a part (between ``_ . - ~ / + =``, 8 characters
            or more) where letters and digits alternate, or cases do not spell words: a
            random token, not an identifier such as ``customer_order_id_2024`` that happens
            to follow ``key:``.
    """

    name: str
    regex: re.Pattern[str]
    score: float
    min_entropy_bits: float | None = None

    def accepts(self, span: str) -> bool:
        """Whether a match's masked span is random enough for this rule."""
        if self.min_entropy_bits is None:
            return True
        return shannon_bits_per_char(span) >= self.min_entropy_bits and any(
            len(part) >= _MIN_RANDOM_PART and _mixed(part) for part in _TOKEN_SEPARATORS.split(span)
        )


_TOKEN_SEPARATORS = re.compile(r"[_.~/+=-]+")
#: The shortest part that can vouch for randomness (``01T10`` of a timestamp cannot).
_MIN_RANDOM_PART = 8


#: An identifier spelled in words: ``customer``, ``LastName``, ``someConfigValue``.
_WORDS = re.compile(r"[a-z]{2,}(?:[A-Z][a-z]{2,})*|(?:[A-Z][a-z]{2,})+|[A-Z]{2,}")


def _mixed(part: str) -> bool:
    """Random-looking: letters and digits alternating (twice or more), or cases not in words."""
    if part.isalpha():
        return _WORDS.fullmatch(part) is None
    switches = sum(a.isdigit() != b.isdigit() for a, b in itertools.pairwise(part))
    return any(c.isalpha() for c in part) and switches >= 2


def shannon_bits_per_char(text: str) -> float:
    """Shannon entropy of ``text``'s character distribution, in bits per character."""
    if not text:
        return 0.0
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


@functools.cache
def credential_rules() -> tuple[CredentialRule, ...]:
    """The rules of ``data/credentials.yaml`` (sources and licence in its header)."""
    text = importlib.resources.files("airlock.redactor").joinpath("data/credentials.yaml").read_text("utf-8")
    document = yaml.safe_load(text)
    return tuple(
        CredentialRule(
            rule["name"],
            re.compile(rule["regex"]),
            float(rule["score"]),
            min_entropy_bits=rule.get("min_entropy_bits"),
        )
        for rule in document["rules"]
    )


class CredentialRecognizer(LocalRecognizer):  # type: ignore[misc]
    """Secrets (``CREDENTIAL``): each match is explained by its rule's name."""

    ENTITY = "CREDENTIAL"

    def __init__(self) -> None:
        super().__init__(supported_entities=[self.ENTITY], name="CredentialRecognizer")

    def load(self) -> None:
        """Read the rules (parsed once per process)."""
        self.rules: tuple[CredentialRule, ...] = credential_rules()

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        """A result per rule match (the ``secret`` group's span when the rule has one)."""
        results = []
        for rule in self.rules:
            group = "secret" if "secret" in rule.regex.groupindex else 0
            for found in rule.regex.finditer(text):
                if not rule.accepts(found.group(group)):
                    continue
                results.append(
                    RecognizerResult(
                        self.ENTITY,
                        found.start(group),
                        found.end(group),
                        rule.score,
                        analysis_explanation=AnalysisExplanation(
                            "CredentialRecognizer", rule.score, pattern_name=rule.name
                        ),
                        recognition_metadata={
                            # The rule, so that `airlock redact --explain` says which format it was.
                            RecognizerResult.RECOGNIZER_NAME_KEY: f"{type(self).__name__}[{rule.name}]",
                            RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                        },
                    )
                )
        return results


#: USPS Publication 28, appendix C1: street suffixes (primary names and common abbreviations).
STREET_SUFFIXES = _words(
    "Alley Aly Anex Annex Arcade Arc Avenue Ave Av Bayou Byu Beach Bch Bend Bnd Bluff Blf Bluffs Blfs "
    "Bottom Btm Boulevard Blvd Branch Br Bridge Brg Brook Brk Brooks Brks Burg Bg Burgs Bgs Bypass Byp "
    "Camp Cp Canyon Cyn Cape Cpe Causeway Cswy Center Ctr Centers Ctrs Circle Cir Circles Cirs Cliff Clf "
    "Cliffs Clfs Club Clb Common Cmn Commons Cmns Corner Cor Corners Cors Course Crse Court Ct Courts Cts "
    "Cove Cv Coves Cvs Creek Crk Crescent Cres Crest Crst Crossing Xing Crossroad Xrd Crossroads Xrds "
    "Curve Curv Dale Dl Dam Dm Divide Dv Drive Dr Drives Drs Estate Est Estates Ests Expressway Expy "
    "Extension Ext Extensions Exts Fall Falls Fls Ferry Fry Field Fld Fields Flds Flat Flt Flats Flts "
    "Ford Frd Fords Frds Forest Frst Forge Frg Forges Frgs Fork Frk Forks Frks Fort Ft Freeway Fwy "
    "Garden Gdn Gardens Gdns Gateway Gtwy Glen Gln Glens Glns Green Grn Greens Grns Grove Grv Groves Grvs "
    "Harbor Hbr Harbors Hbrs Haven Hvn Heights Hts Highway Hwy Hill Hl Hills Hls Hollow Holw Inlet Inlt "
    "Island Is Islands Iss Isle Junction Jct Junctions Jcts Key Ky Keys Kys Knoll Knl Knolls Knls Lake Lk "
    "Lakes Lks Land Landing Lndg Lane Ln Light Lgt Lights Lgts Loaf Lf Lock Lck Locks Lcks Lodge Ldg Loop "
    "Mall Manor Mnr Manors Mnrs Meadow Mdw Meadows Mdws Mews Mill Ml Mills Mls Mission Msn Motorway Mtwy "
    "Mount Mt Mountain Mtn Mountains Mtns Neck Nck Orchard Orch Oval Overpass Opas Park Parks Parkway Pkwy "
    "Parkways Pass Passage Psge Path Pike Pine Pne Pines Pnes Place Pl Plain Pln Plains Plns Plaza Plz "
    "Point Pt Points Pts Port Prt Ports Prts Prairie Pr Radial Radl Ramp Ranch Rnch Rapid Rpd Rapids Rpds "
    "Rest Rst Ridge Rdg Ridges Rdgs River Riv Road Rd Roads Rds Route Rte Row Rue Run Shoal Shl Shoals Shls "
    "Shore Shr Shores Shrs Skyway Skwy Spring Spg Springs Spgs Spur Spurs Square Sq Squares Sqs Station Sta "
    "Stravenue Stra Stream Strm Street St Streets Sts Summit Smt Terrace Ter Throughway Trwy Trace Trce "
    "Track Trak Trafficway Trfy Trail Trl Trailer Trlr Tunnel Tunl Turnpike Tpke Underpass Upas Union Un "
    "Unions Uns Valley Vly Valleys Vlys Viaduct Via Vw View Views Vws Village Vlg Villages Vlgs Ville Vl "
    "Vista Vis Walk Walks Wall Way Ways Well Wl Wells Wls"
)

_STREET_WORD = r"(?:[A-Z][A-Za-z'’.-]*|\d{1,3}(?:st|nd|rd|th))"
STREET_ADDRESS_REGEX = (
    r"\b\d{1,6}[A-Z]?(?:\s+(?:N|S|E|W|NE|NW|SE|SW)\.?)?"
    rf"(?:\s+{_STREET_WORD}){{1,4}}?\s+(?:{'|'.join(sorted(set(STREET_SUFFIXES), key=len, reverse=True))})\b\.?"
    r"(?:\s+(?:N|S|E|W|NE|NW|SE|SW)\b\.?)?"
    r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Floor|Fl|Room|Rm|Bldg|Building)\.?\s*#?\s*[A-Za-z0-9-]{1,8}\b"
    r"|,?\s+#\s*[A-Za-z0-9-]{1,8}\b)?"
)


class StreetAddressRecognizer(PatternRecognizer):  # type: ignore[misc]
    """House number, a capitalized street name and a USPS suffix, with an optional unit."""

    def __init__(self) -> None:
        super().__init__(
            supported_entity="STREET_ADDRESS",
            name="StreetAddressRecognizer",
            patterns=[Pattern("Street address (USPS suffix)", STREET_ADDRESS_REGEX, 0.6)],
            context=["address", "street", "ship", "deliver", "lives", "home", "mail"],
            global_regex_flags=re.MULTILINE,  # names are capitalized: case matters
        )


#: A date written with digits only ("2025-11-30", "01-12-2025", "12.03.2024", "3/14/25"): never a phone number.
DATE_SHAPE = r"(?:\d{4}([-./])\d{1,2}\1\d{1,2}|\d{1,2}([-./])\d{1,2}\2(?:\d{4}|\d{2}))"
_DATE = re.compile(DATE_SHAPE)


class PhoneShapeRecognizer(PatternRecognizer):  # type: ignore[misc]
    """Digit groups shaped like a phone number, whether or not the prefix is assigned.

    ``phonenumbers`` (behind Presidio's recognizer) only accepts numbers whose area code is
    in its metadata; a mistyped, new or made-up prefix is still a phone number to a reader.
    """

    PATTERNS: ClassVar[list[Pattern]] = [
        Pattern(
            "North American shape",
            r"(?<![\w+.-])(?:(?:\+1|001)[-. ]?)?(?:\(\d{3}\)\s?|\d{3}[-. ])\d{3}[-. ]\d{4}"
            r"(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?![\w-])",
            0.4,
        ),
        # Ten or eleven bare digits are a phone number only with a context word ("call", "phone").
        Pattern("Bare digits", r"(?<![\w+.-])0?\d{10}(?![\w-])", 0.1),
        # A trunk prefix (a leading 0, bracketed or not) is how national numbers are written in
        # most of the world: "(0084) 287346", "0091 263699", "00157 15098", "030 1234567".
        Pattern(
            "National shape",
            r"(?<![\w+.,/-])(?:\(0\d{1,5}\)|0\d{1,5})(?:[-. ]?\d{2,8}){1,3}(?![\w-]|[.,/]\d)",
            0.4,
        ),
        # An area code and a hyphenated four-digit tail: "11 98765-4321", "(21) 3456-7890".
        Pattern(
            "Area code and hyphenated tail",
            r"(?<![\w+.,/-])(?:\(\d{2,3}\)\s?|\d{2,3}\s)\d{4,5}-\d{4}(?![\w-]|[.,/]\d)",
            0.4,
        ),
        Pattern(
            "International shape",
            # A bracket belongs to the number only with its pair: "(+44 20 7946 0000)" keeps its ")".
            r"(?<![\w+])\+\d{1,3}(?:\s?\(0\))?(?:[-. ]?(?:\(\d{1,5}\)|\d{1,5})){2,5}(?![\w-])",
            0.4,
        ),
    ]

    def __init__(self) -> None:
        super().__init__(
            supported_entity="PHONE_NUMBER",
            name="PhoneShapeRecognizer",
            patterns=self.PATTERNS,
            context=[*PhoneRecognizer.CONTEXT, *sorted(self.MORE_CONTEXT)],
        )

    #: Words near a number that make it a phone number, beyond Presidio's ("phone", "call"…).
    MORE_CONTEXT: ClassVar[frozenset[str]] = _words(
        "callback contact reach tel paged pager whatsapp hotline dial ring fax"
    )

    def validate_result(self, pattern_text: str) -> bool | None:
        """Between 7 and 15 digits, not counting an extension (the ITU E.164 range), and not a date."""
        if _DATE.fullmatch(pattern_text.strip()):
            return False
        digits = re.sub(r"\D", "", re.split(r"x|ext", pattern_text)[0])
        return None if 7 <= len(digits) <= 15 else False


class _Coverage:
    """Whether a span lies inside one of many spans, in logarithmic time."""

    def __init__(self, spans: Sequence[tuple[int, int]]) -> None:
        ordered = sorted(spans)
        self._starts = [start for start, _ in ordered]
        # The furthest end among the spans starting at or before each one.
        self._reach = list(itertools.accumulate((end for _, end in ordered), max))

    def __call__(self, start: int, end: int) -> bool:
        index = bisect.bisect_right(self._starts, start) - 1
        return index >= 0 and self._reach[index] >= end


class WindowedPhoneRecognizer(PhoneRecognizer):  # type: ignore[misc]
    """Presidio's ``phonenumbers`` recognizer, run only where the text has enough digits.

    ``phonenumbers`` scans the whole text once per region; most of a prompt has no digits at
    all. A cheap pattern finds the stretches that could hold a number (seven digits or more,
    with the separators numbers are written with) and the matcher runs on those alone, with
    a few characters of margin so its boundary checks see the same neighbours. Regions are
    tried in the policy's order until one's match covers every digit of the stretch (another
    region could only find the same number again), and a stretch that a checksum-validating
    recognizer already claimed (a card number, an IBAN) is not tried at all.
    """

    _CANDIDATE = re.compile(r"[+(]?\d[\d \t().\-/]{5,}\d")
    #: Digit runs that are never phone numbers: IPv4 addresses, ISO dates, amounts with cents.
    _NOT_A_NUMBER = re.compile(rf"\d{{1,3}}(?:\.\d{{1,3}}){{3}}|{DATE_SHAPE}|\d{{1,3}}(?:,\d{{3}})*\.\d{{2}}")
    _MARGIN = 3

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        """Phone numbers in the digit-bearing windows of ``text``."""
        return self.analyze_unclaimed(text, entities, ())

    def analyze_unclaimed(
        self, text: str, entities: list[str], claimed: Sequence[tuple[int, int]]
    ) -> list[RecognizerResult]:
        """Phone numbers in the digit-bearing windows of ``text`` outside the ``claimed`` spans."""
        if "PHONE_NUMBER" not in entities:
            return []
        results: list[RecognizerResult] = []
        covered = _Coverage(claimed)
        for candidate in self._CANDIDATE.finditer(text):
            if sum(map(str.isdigit, candidate.group())) < 7:
                continue
            if self._NOT_A_NUMBER.fullmatch(candidate.group().strip()):
                continue
            if candidate.start() > 0 and text[candidate.start() - 1].isalpha():
                continue  # glued to letters: an identifier ("INC1234567"), not a number
            if covered(candidate.start(), candidate.end()):
                continue
            start = max(0, candidate.start() - self._MARGIN)
            window = text[start : candidate.end() + self._MARGIN]
            for found in self._numbers(window, candidate.start() - start, candidate.end() - start):
                found.start += start
                found.end += start
                results.append(found)
        return EntityRecognizer.remove_duplicates(results)  # type: ignore[no-any-return]

    def _numbers(self, window: str, first: int, last: int) -> list[RecognizerResult]:
        """Matches in ``window`` whose digits run from ``first`` to ``last`` (exclusive)."""
        # An international number parses the same in every region: try one.
        regions = self.supported_regions[:1] if window.lstrip(" \t(").startswith("+") else self.supported_regions
        while not window[first].isdigit():
            first += 1
        while not window[last - 1].isdigit():
            last -= 1
        leniency = phonenumbers.Leniency.VALID if self.leniency is None else self.leniency
        results: list[RecognizerResult] = []
        for region in regions:
            covered = False
            for match in phonenumbers.PhoneNumberMatcher(window, region, leniency=leniency):
                results.append(self._get_recognizer_result(match, window, region, None))
                covered = covered or (match.start <= first and match.end >= last)
            if covered:
                break
        return results


def _phone_recognizer(policy: Policy) -> PhoneRecognizer:
    leniency = {"possible": phonenumbers.Leniency.POSSIBLE, "valid": phonenumbers.Leniency.VALID}
    return WindowedPhoneRecognizer(
        supported_regions=tuple(policy.phone.regions),
        leniency=leniency[policy.phone.leniency],
        name="PhoneRecognizer",
    )


def _custom(policy: Policy) -> Iterable[EntityRecognizer]:
    for spec in policy.recognizers:
        yield PatternRecognizer(
            supported_entity=spec.entity,
            name=spec.name,
            patterns=[
                Pattern(p.name or f"{spec.name}#{index}", p.regex, p.score) for index, p in enumerate(spec.patterns, 1)
            ],
            context=spec.context,
            global_regex_flags=re.MULTILINE,
        )
    for entity, values in policy.deny_list.items():
        yield PatternRecognizer(supported_entity=entity, name=f"DenyList[{entity}]", deny_list=values)


_DIGIT = re.compile(r"\d")
#: Recognizers (by name) that can only match a text containing one of these characters: a
#: prompt without a digit skips every number recognizer, one without ``@`` the e-mail one.
_GATES: dict[str, re.Pattern[str]] = {
    **dict.fromkeys(
        (
            "PhoneRecognizer",
            "PhoneShapeRecognizer",
            "CardRecognizer",
            "UsSsnRecognizer",
            "UsItinRecognizer",
            "UsPassportRecognizer",
            "NhsRecognizer",
            "UsBankRecognizer",
            "IbanRecognizer",
            "UkNinoRecognizer",
            "StreetAddressRecognizer",
            "AuAbnRecognizer",
            "AuAcnRecognizer",
            "AuTfnRecognizer",
            "AuMedicareRecognizer",
            "InPanRecognizer",
            "InAadhaarRecognizer",
            "InVehicleRegistrationRecognizer",
            "InVoterRecognizer",
            "InPassportRecognizer",
            "SgFinRecognizer",
            "EsNifRecognizer",
            "EsNieRecognizer",
            "ItFiscalCodeRecognizer",
            "ItDriverLicenseRecognizer",
            "ItVatCodeRecognizer",
            "ItPassportRecognizer",
            "ItIdentityCardRecognizer",
            "PlPeselRecognizer",
            "FiPersonalIdentityCodeRecognizer",
            "UsLicenseRecognizer",
            "AbaRoutingRecognizer",
            "CaSinRecognizer",
            "UsNpiRecognizer",
            "PhTinRecognizer",
            "PhUmidRecognizer",
        ),
        _DIGIT,
    ),
    "OfflineEmailRecognizer": re.compile("@"),
    "AnchoredIpRecognizer": re.compile(r"[\d:]"),
}


def gate_of(recognizer: EntityRecognizer) -> re.Pattern[str] | None:
    """A pattern a text must contain for ``recognizer`` to find anything in it (``None``: no such test).

    Only Presidio's and our own recognizers known to need a digit (or ``@``) have one; a
    policy's custom recognizers and deny lists always run.
    """
    if type(recognizer).__module__.startswith(("presidio_analyzer", __name__)) and not isinstance(
        recognizer, SpacyRecognizer
    ):
        return _GATES.get(type(recognizer).__name__)
    return None


class UnsupportedEntity(ValueError):
    """A policy asks for an entity type that no recognizer reports."""


#: Ours first: where one of ours reports a type, Presidio's recognizer of that type is not used.
_OURS: tuple[type[EntityRecognizer], ...] = (
    CredentialRecognizer,
    OfflineEmailRecognizer,
    AnchoredIpRecognizer,
    CardRecognizer,
    StreetAddressRecognizer,
)
#: Presidio classes that need an NLP engine, a remote service or an optional package.
_NOT_STANDALONE = {"SpacyRecognizer", "StanzaRecognizer", "TransformersRecognizer", "PhoneRecognizer"}


@functools.cache
def _catalogue() -> dict[str, type[EntityRecognizer]]:
    """Entity type → the pattern recognizer class that reports it (ours, then Presidio's)."""
    catalogue: dict[str, type[EntityRecognizer]] = {}
    candidates: list[type[EntityRecognizer]] = list(_OURS)
    for name in predefined.__all__:
        cls = getattr(predefined, name)
        if inspect.isclass(cls) and issubclass(cls, LocalRecognizer) and name not in _NOT_STANDALONE:
            candidates.append(cls)
    for cls in candidates:
        try:
            entities = cls().supported_entities  # type: ignore[call-arg]
        except Exception:  # noqa: S112 (needs an optional package or a remote endpoint: not ours to use)
            continue
        for entity in entities:
            catalogue.setdefault(entity, cls)
    return catalogue


def supported_entities() -> list[str]:
    """Every entity type a policy can ask for without a custom recognizer."""
    return sorted({*_catalogue(), "PHONE_NUMBER", *NER_TYPES})


#: Types the spaCy NER model reports (through Presidio's mapping).
NER_TYPES = ("PERSON", "LOCATION", "ORGANIZATION", "NRP", "DATE_TIME")


def recognizers_for(policy: Policy) -> list[EntityRecognizer]:
    """The recognizers reporting the entity types ``policy`` looks for, and no others.

    Raises:
        UnsupportedEntity: An entity type the policy masks, redacts or blocks has no recognizer.
    """
    wanted = set(policy.detected)
    chosen: list[EntityRecognizer] = list(_custom(policy))
    covered = {e for r in chosen for e in r.supported_entities}
    if ner := [e for e in NER_TYPES if e in wanted]:
        chosen.append(NerPersonRecognizer(supported_entities=ner, name="SpacyRecognizer"))
    if "PERSON" in wanted:
        chosen += [PersonContextRecognizer(), GivenNameRecognizer()]
    if "PHONE_NUMBER" in wanted:
        chosen += [_phone_recognizer(policy), PhoneShapeRecognizer()]
    catalogue = _catalogue()
    classes = {catalogue[e] for e in wanted if e in catalogue}
    for cls in sorted(classes, key=lambda c: c.__name__):
        recognizer = cls()  # type: ignore[call-arg]
        # Only the types the policy wants: a recognizer may report several.
        recognizer.supported_entities = [e for e in recognizer.supported_entities if e in wanted]
        chosen.append(recognizer)
    covered |= {e for r in chosen for e in r.supported_entities}
    if missing := sorted(wanted - covered):
        raise UnsupportedEntity(
            f"policy {policy.label}: no recognizer reports {', '.join(missing)} "
            "(add a custom recognizer or a deny list for it, or allow it)"
        )
    return chosen
