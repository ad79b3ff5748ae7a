"""PII: Presidio's pattern recognizers, offline, plus person names.

Presidio's default engine loads (and would download) a spaCy NER model; Lamina gives it a blank
English pipeline built in memory, so only its pattern and checksum recognizers run (e-mail, phone,
credit card, IBAN, IP, SSN, …; ~5 ms a call). Those find no names, so ``NameRecognizer`` adds a
gazetteer: first names from Faker's locale lists (MIT; already a dependency) followed by a
capitalised word, or a title (Mr, Dr, …) followed by one. Written here because no offline
library recognises names without a downloaded model.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any, ClassVar

from lamina.core.extensions import RAILS
from lamina.guardrails.rail import Rail
from lamina.guardrails.verdict import Span, Verdict

DEFAULT_ENTITIES = [
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "IP_ADDRESS",
    "US_BANK_NUMBER",
    "US_PASSPORT",
    "US_DRIVER_LICENSE",
    "CRYPTO",
    "LOCATION",
]
NAME_LOCALES = ("en_US", "en_GB", "en_IN", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_BR")
TITLES = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Rev)\.?"
_LOCK = threading.Lock()
# USPS street suffixes (Publication 28, appendix C1; the common ones and their abbreviations)
STREET_TYPES = (
    "Alley Aly Avenue Ave Bend Blvd Boulevard Branch Bridge Brook Burg Bypass Camp Canyon Cape "
    "Causeway Center Ctr Circle Cir Cliff Club Common Corner Course Court Ct Courts Cove Creek "
    "Crescent Crest Crossing Crossroad Curve Dale Dam Divide Drive Dr Drives Estate Estates "
    "Expressway Expy Extension Falls Ferry Field Fields Flat Flats Ford Forest Forge Fork Fort "
    "Freeway Fwy Garden Gardens Gateway Glen Glens Green Grove Harbor Haven Heights Highway Hwy Hill "
    "Hills Hollow Island Isle Junction Key Keys Knoll Knolls Lake Lakes Land Landing Lane Ln Light "
    "Lights Loaf Lock Locks Lodge Loop Mall Manor Manors Meadow Meadows Mews Mill Mills Mission "
    "Motorway Mount Mountain Mountains Neck Orchard Oval Overpass Park Parks Parkway Pkwy Parkways "
    "Pass Passage Path Pike Pine Pines Place Pl Plain Plains Plaza Point Points Port Ports Prairie "
    "Radial Ramp Ranch Rapid Rapids Rest Ridge Ridges River Road Rd Roads Route Row Rue Run Shoal "
    "Shoals Shore Shores Skyway Spring Springs Spur Square Sq Squares Station Stravenue Stream Street "
    "St Streets Summit Terrace Ter Throughway Trace Track Trafficway Trail Trl Trailer Tunnel "
    "Turnpike Underpass Union Unions Valley Valleys Viaduct View Views Village Villages Ville Vista "
    "Walk Walks Wall Way Ways Well Wells Via"
).split()
STREET = re.compile(
    r"\b\d{1,6}\s+(?:[A-Z][\w'\-]*\s+){1,4}(?:" + "|".join(STREET_TYPES) + r")s?\b\.?"
    r"(?:,?\s+(?:Apt\.?|Suite|Unit|#)\s*\w+)?"
)
# North American numbers as people write them (with extensions); Presidio's phonenumbers-based
# recognizer misses "001-…", "x123" extensions and dotted groups
NANP = re.compile(
    r"(?<![\w+])(?:\+?1[-.\s]?|001[-.\s]?)?(?:\(\d{3}\)\s?|\d{3}[-.\s]?)\d{3}[-.\s]?\d{4}"
    r"(?:\s?(?:x|ext\.?|extension)\s?\d{1,6})?(?!\w)"
)
# 12–19 digits, alone or in groups, that pass the Luhn check (every card brand's length)
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){11,18}\d(?!\d)")


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def find_patterns(text: str, wanted: set[str]) -> list[Span]:
    spans = []
    if "PHONE_NUMBER" in wanted:
        spans += [Span(m.start(), m.end(), "PHONE_NUMBER", 0.7) for m in NANP.finditer(text)]
    if "CREDIT_CARD" in wanted:
        for m in CARD.finditer(text):
            digits = re.sub(r"\D", "", m.group())
            # 12 digits only with a Maestro prefix (5, 6): too many other 12-digit numbers pass Luhn
            if (13 <= len(digits) <= 19 or (len(digits) == 12 and digits[0] in "56")) and luhn(digits):
                spans.append(Span(m.start(), m.end(), "CREDIT_CARD", 0.9))
    if "LOCATION" in wanted:
        spans += [Span(m.start(), m.end(), "LOCATION", 0.7) for m in STREET.finditer(text)]
    return spans


@functools.cache
def name_lists() -> tuple[frozenset[str], frozenset[str]]:
    """First and last names from Faker's person providers of ``NAME_LOCALES``."""
    import importlib

    first: set[str] = set()
    last: set[str] = set()
    for locale in NAME_LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attr in ("first_names", "first_names_male", "first_names_female"):
            first.update(getattr(provider, attr, ()))
        last.update(getattr(provider, "last_names", ()))
    first -= _COMMON_WORDS
    return frozenset(first), frozenset(last)


# capitalised words that start sentences and are also someone's first name somewhere
_COMMON_WORDS = {
    "Will",
    "May",
    "Mark",
    "Bill",
    "Rose",
    "April",
    "June",
    "Art",
    "Hope",
    "Grant",
    "Joy",
    "Faith",
    "Dawn",
    "Summer",
    "Autumn",
    "Page",
    "Chase",
    "Hunter",
    "Sky",
    "Young",
    "Long",
    "An",
    "Le",
    "Do",
    "In",
    "Can",
    "Are",
    "See",
    "Sun",
    "Star",
    "Gay",
    "Rich",
    "Guy",
    "Jack",
    "Frank",
    "Sage",
    "Ray",
    "Well",
}

_CAP = r"[^\W\d_][\w'\-]*"  # a word of letters (any script); capitalised is checked in code
_WORDS = re.compile(r"[^\W\d_][\w'\-]*|[A-Z]\.|\S+")
_TITLED = re.compile(rf"\b{TITLES}\s+[A-Z][\w'\-]+(?:\s+[A-Z][\w'\-]+)?\b")


def find_names(text: str) -> list[Span]:
    """A known first name followed by capitalised words (an optional middle initial; the run ends
    at the first word that is not capitalised), or a title followed by one or two."""
    first, last = name_lists()
    spans = [Span(m.start(), m.end(), "PERSON", 0.85) for m in _TITLED.finditer(text)]
    words = [(m.start(), m.end(), m.group()) for m in _WORDS.finditer(text)]
    i = 0
    while i < len(words):
        start, end, word = words[i]
        if word in first:
            j, stop, known = i + 1, end, False
            while j < len(words) and j - i <= 3 and _adjacent(text, words[j - 1][1], words[j][0]):
                nxt = words[j][2]
                if re.fullmatch(r"[A-Z]\.", nxt) and j + 1 < len(words):
                    j += 1
                    continue
                if not (re.fullmatch(_CAP, nxt) and nxt[0].isupper()):
                    break
                stop, known = words[j][1], known or nxt in last
                j += 1
            if stop > end:
                spans.append(Span(start, stop, "PERSON", 0.85 if known else 0.6))
                i = j
                continue
        i += 1
    return spans


def _adjacent(text: str, end: int, start: int) -> bool:
    """Only spaces between two words (a comma or a full stop ends a name)."""
    return start > end and text[end:start].isspace() and "\n" not in text[end:start]


class _Analyzer:
    """One Presidio ``AnalyzerEngine`` per process, built on a blank spaCy pipeline (no download)."""

    _engine: Any = None

    @classmethod
    def engine(cls) -> Any:
        with _LOCK:
            if cls._engine is None:
                cls._engine = _build_engine()
            return cls._engine


def _build_engine() -> Any:
    import logging

    import spacy
    import tldextract
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    # Presidio's e-mail recognizer calls tldextract, whose default extractor fetches the public
    # suffix list from GitHub on first use; the snapshot bundled with tldextract is used instead.
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class BlankSpacy(SpacyNlpEngine):
        def load(self) -> None:
            self.nlp = {"en": spacy.blank("en")}  # type: ignore[assignment]

    # it warns once per recognizer of every other language it skips: noise, not news
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    nlp = BlankSpacy(models=[{"lang_code": "en", "model_name": "blank"}])
    nlp.load()
    engine = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
    engine.registry.remove_recognizer("SpacyRecognizer")  # a blank pipeline has no NER to read
    return engine


def analyze(text: str, entities: list[str], threshold: float) -> list[Span]:
    """PII spans in ``text``: Presidio's recognizers, names and street addresses, overlaps resolved
    in favour of the longer span (a URL inside an e-mail address is the e-mail)."""
    wanted = set(entities)
    spans: list[Span] = []
    presidio_entities = [e for e in entities if e not in ("PERSON", "LOCATION")]
    if "PHONE_NUMBER" in presidio_entities and not _PHONE_CANDIDATE.search(text):
        presidio_entities.remove("PHONE_NUMBER")  # its matcher is ~80 % of the call's cost
    if presidio_entities and _worth_analyzing(text):
        for r in _Analyzer.engine().analyze(text, language="en", entities=presidio_entities):
            if r.score >= threshold:
                spans.append(Span(r.start, r.end, r.entity_type, float(r.score)))
    if "PERSON" in wanted:
        spans += find_names(text)
    if wanted & {"PHONE_NUMBER", "CREDIT_CARD", "LOCATION"} and any(ch.isdigit() for ch in text):
        spans += find_patterns(text, wanted)
    return _resolve(spans)


# seven or more digits with at most three separators between each: the shortest phone number the
# phonenumbers matcher accepts in Presidio's default regions is longer than that
_PHONE_CANDIDATE = re.compile(r"\d(?:[\s().+/-]{0,3}\d){6,}")
_DIGIT_OR_AT = re.compile(r"[\d@]|[:.][0-9a-fA-F]")


def _worth_analyzing(text: str) -> bool:
    """Every Presidio pattern entity has a digit, an ``@`` or hex with separators: text without any
    skips the ~5 ms call (most of a stream's windows)."""
    return bool(_DIGIT_OR_AT.search(text)) or "bc1" in text or "0x" in text


def _resolve(spans: list[Span]) -> list[Span]:
    kept: list[Span] = []
    for span in sorted(spans, key=lambda s: (-(s.end - s.start), -s.score)):
        if all(span.end <= k.start or span.start >= k.end for k in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s.start)


@RAILS.register("pii")
class PIIRail(Rail):
    """Personal data in a prompt or an answer; redacted by default (``<PHONE_NUMBER>``)."""

    name = "pii"
    default_action = "redact"
    default_threshold = 0.4  # Presidio's phone recognizer scores 0.4 for a well-formed number
    options: ClassVar[dict[str, Any]] = {"entities": DEFAULT_ENTITIES}

    def __init__(self, spec: Any, ws: Any = None) -> None:
        super().__init__(spec, ws)
        unknown = set(self.opts["entities"]) - set(DEFAULT_ENTITIES) - _presidio_entities()
        if unknown:
            from lamina.core.errors import ConfigError

            raise ConfigError(
                f"rail 'pii': unknown entities {sorted(unknown)}",
                hint=f"known: {', '.join(sorted(set(DEFAULT_ENTITIES) | _presidio_entities()))}",
            )

    def check(self, text: str, context: dict[str, Any]) -> Verdict:
        spans = analyze(text, self.opts["entities"], self.threshold or 0.0)
        return self.verdict(
            bool(spans),
            spans=spans,
            score=max((s.score for s in spans), default=0.0),
            reasons=sorted({s.label for s in spans}),
        )


@functools.cache
def _presidio_entities() -> frozenset[str]:
    return frozenset(_Analyzer.engine().get_supported_entities(language="en"))


def redact_pii(text: str) -> str:
    """``text`` with every PII entity replaced by ``<LABEL>`` (what logs and the audit log keep)."""
    from lamina.guardrails.verdict import redact

    return redact(text, analyze(text, DEFAULT_ENTITIES, PIIRail.default_threshold or 0.0))


class RedactingFilter:
    """A ``logging`` filter that redacts PII from every record of the handlers it is added to
    (``lamina serve`` adds it to the ``lamina`` logger's): exception messages can quote requests."""

    def filter(self, record: Any) -> bool:
        message = record.getMessage()
        if _worth_analyzing(message) or _NAME_HINT.search(message):
            cleaned = redact_pii(message)
            if cleaned != message:
                record.msg, record.args = cleaned, ()
        return True


_NAME_HINT = re.compile(r"\b[A-Z][a-z]+ [A-Z][a-z]+")
