"""Cheap rails that need no model: injection phrases, invisible-Unicode and homoglyph smuggling,
length and token limits. They run in microseconds, so they sit in front of the classifiers."""

from __future__ import annotations

import re
import unicodedata
from typing import Any, ClassVar

from lamina.core.extensions import RAILS
from lamina.guardrails.rail import Rail
from lamina.guardrails.verdict import Span, Verdict

# High-precision phrasings of instruction override and persona hijack. Kept narrow on purpose:
# benign prompts often contain the trigger words alone ("ignore the noise", "act as a tutor"),
# and the classifier rail handles what needs judgement.
INJECTION_PATTERNS = {
    "override": r"\b(ignore|disregard|forget|override|bypass)\b[^.\n]{0,40}\b(previous|prior|above|earlier|"
    r"preceding|all|any|your|the|system)\b[^.\n]{0,20}\b(instructions?|prompts?|rules|directives?|"
    r"guidelines|guardrails|restrictions|programming)\b",
    "reveal": r"\b(reveal|print|show|repeat|output|leak|tell me)\b[^.\n]{0,30}\b(system prompt|hidden prompt|"
    r"initial prompt|your instructions|the instructions above)\b",
    "persona": r"\b(you are now|from now on,? you (are|will)|act as|pretend to be|roleplay as)\b[^.\n]{0,60}"
    r"\b(DAN|jailbr(oken|eak)|unrestricted|unfiltered|uncensored|no (rules|restrictions|limits|filters)|"
    r"developer mode|evil|amoral)\b",
    "dan": r"\b(do anything now|developer mode (enabled|output)|\bDAN mode|jailbreak(ed)? mode|"
    r"anti-?dan|STAN|DUDE mode)\b",
    "no_limits": r"\b(without|free of|free from|no longer (bound|restricted) by)\b[^.\n]{0,20}\b(any )?"
    r"(ethical|moral|content|openai'?s?) (guidelines|restrictions|filters|policies|limitations)\b",
}
_INJECTION = [(label, re.compile(p, re.IGNORECASE)) for label, p in INJECTION_PATTERNS.items()]


@RAILS.register("injection_heuristics")
class InjectionHeuristics(Rail):
    name = "injection_heuristics"
    stages = ("input",)

    def check(self, text: str, context: dict[str, Any]) -> Verdict:
        spans = [Span(m.start(), m.end(), label) for label, rx in _INJECTION for m in rx.finditer(text)]
        return self.verdict(
            bool(spans),
            spans=spans,
            score=float(bool(spans)),
            reasons=sorted({f"phrase: {s.label}" for s in spans}),
        )


_VARIATION = {(0xFE00, 0xFE0F), (0xE0100, 0xE01EF)}
_TAGS = (0xE0000, 0xE007F)  # "ASCII smuggling": invisible tag characters that models still read


def invisible(ch: str) -> bool:
    cp = ord(ch)
    if ch in "\n\r\t":
        return False
    if _TAGS[0] <= cp <= _TAGS[1] or any(a <= cp <= b for a, b in _VARIATION):
        return True
    return unicodedata.category(ch) in ("Cf", "Co", "Cn") or (unicodedata.category(ch) == "Cc")


_SCRIPTS = ("LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE")
_WORD = re.compile(r"\w+", re.UNICODE)
_SUSPECT = re.compile(r"[^\x20-\x7e\n\r\t]")  # every character that is not printable ASCII


def script(ch: str) -> str | None:
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    return next((s for s in _SCRIPTS if name.startswith(s)), "OTHER")


@RAILS.register("unicode")
class UnicodeSmuggling(Rail):
    """Invisible characters (zero-width, bidi controls, tag characters) and words that mix Latin
    with look-alike letters from other scripts (``pаypal`` with a Cyrillic ``а``). A zero-width
    joiner between two emoji is allowed: that is how emoji sequences are written."""

    name = "unicode"
    options: ClassVar[dict[str, Any]] = {"homoglyphs": True}

    def check(self, text: str, context: dict[str, Any]) -> Verdict:
        spans = []
        for m in _SUSPECT.finditer(text):  # printable ASCII cannot hide or mix scripts: skip it
            i, ch = m.start(), m.group()
            if ch == "\u200d" and 0 < i < len(text) - 1 and _emoji(text[i - 1]) and _emoji(text[i + 1]):
                continue
            if invisible(ch):
                spans.append(Span(i, i + 1, "INVISIBLE"))
        if self.opts["homoglyphs"] and not text.isascii():
            for m in _WORD.finditer(text):
                if m.group().isascii():
                    continue
                scripts = {s for s in map(script, m.group()) if s}
                if (
                    len(scripts) > 1
                    and "LATIN" in scripts
                    and scripts & {"CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE"}
                ):
                    spans.append(Span(m.start(), m.end(), "HOMOGLYPH"))
        reasons = sorted({f"{s.label.lower()} characters" for s in spans})
        return self.verdict(bool(spans), spans=spans, reasons=reasons, score=float(bool(spans)))


def _emoji(ch: str) -> bool:
    return unicodedata.category(ch) == "So" or 0x1F000 <= ord(ch) <= 0x1FAFF


@RAILS.register("length")
class LengthLimit(Rail):
    """Characters and tokens per text (tokens by the served model's tokenizer when the context has
    one, else an estimate of four characters a token)."""

    name = "length"
    stages = ("input",)
    options: ClassVar[dict[str, Any]] = {"max_chars": 32_000, "max_tokens": None}

    def check(self, text: str, context: dict[str, Any]) -> Verdict:
        reasons = []
        if len(text) > self.opts["max_chars"]:
            reasons.append(f"{len(text)} characters > {self.opts['max_chars']}")
        if self.opts["max_tokens"] is not None:
            counter = context.get("count_tokens")
            tokens = counter(text) if counter else (len(text) + 3) // 4
            if tokens > self.opts["max_tokens"]:
                reasons.append(f"{tokens} tokens > {self.opts['max_tokens']}")
        return self.verdict(bool(reasons), reasons=reasons, score=float(bool(reasons)))
