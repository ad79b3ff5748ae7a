"""Cleaning steps: Unicode/whitespace normalisation, missing values, quality filters and filter hooks.

The quality rules follow the Gopher paper's heuristics (Rae et al. 2021, appendix A) with every
threshold an option, so a recipe can loosen or tighten them per dataset.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from lamina.core.errors import ConfigError
from lamina.core.extensions import FILTER_HOOKS
from lamina.data.records import Batch, Record
from lamina.data.steps import Step, StepContext, StepStats, register_step

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u3000]+")
_SPACE_AROUND_NEWLINE = re.compile(r" ?\n ?")
_SPACE_AROUND_NEWLINE = re.compile(r" ?\n ?")
_BLANK_LINES = re.compile(r"\n{3,}")
_WORD = re.compile(r"\w+", re.UNICODE)

# A short English stop-word list (the Gopher rule needs only "does the text read like English").
STOP_WORDS = frozenset(
    "a about above after again against all am an and any are as at be because been before being "
    "below between both but by can could did do does doing down during each few for from further had "
    "has have having he her here hers herself him himself his how i if in into is it its itself just "
    "me more most my myself no nor not now of off on once only or other our ours ourselves out over "
    "own same she should so some such than that the their theirs them themselves then there these "
    "they this those through to too under until up very was we were what when where which while who "
    "whom why will with you your yours yourself yourselves".split()
)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value != value  # NaN != NaN


@register_step
class Normalize(Step):
    """NFKC Unicode normalisation, control characters removed, runs of spaces and blank lines collapsed."""

    name = "normalize"
    row_local = True
    fields: list[str] | None = None  # default: the recipe's text field
    nfkc: bool = True
    strip_control: bool = True
    collapse_whitespace: bool = True

    def apply(self, batch: Batch, stats: StepStats) -> Batch:
        fields = self.fields or [self.ctx.text_field]
        for record in batch:
            for name in fields:
                value = record.get(name)
                if not isinstance(value, str):
                    continue
                new = value
                if self.nfkc and not unicodedata.is_normalized("NFKC", new):
                    new = unicodedata.normalize("NFKC", new)
                if self.strip_control:
                    new = _CONTROL.sub("", new.replace("\r\n", "\n").replace("\r", "\n"))
                if self.collapse_whitespace:
                    new = _SPACE_AROUND_NEWLINE.sub("\n", _SPACES.sub(" ", new))
                    new = _BLANK_LINES.sub("\n\n", new).strip()
                if new != value:
                    record[name] = new
                    stats.changed += 1
        return batch


def primary_field(record: Record, text_field: str) -> str:
    """The field a record is about: the text field, else its image, else its audio."""
    for name in (text_field, "image", "audio"):
        if name in record:
            return name
    return text_field


@register_step
class Missing(Step):
    """Missing values per field: ``drop`` the record or ``impute`` a value. Every case is counted.

    ``fields: {label: drop, lang: {impute: en}}``; by default a record whose text (or, for media, image
    or audio) is missing is dropped.
    """

    name = "missing"
    fields: dict[str, Literal["drop"] | dict[str, Any]] = Field(default_factory=dict)

    def start(self, ctx: StepContext) -> None:
        super().start(ctx)
        self._rules = self.fields
        for name, rule in (self._rules or {}).items():
            if isinstance(rule, dict) and set(rule) != {"impute"}:
                raise ConfigError(f"missing.fields.{name}: use 'drop' or {{impute: VALUE}}, got {rule!r}")
        self._imputed: Counter[str] = Counter()

    def apply(self, batch: Batch, stats: StepStats) -> Batch:
        kept = []
        for record in batch:
            drop_reason = None
            for name, rule in (self._rules or {primary_field(record, self.ctx.text_field): "drop"}).items():
                if not _is_missing(record.get(name)):
                    continue
                if rule == "drop":
                    drop_reason = f"missing_{name}"
                    break
                record[name] = rule["impute"]  # type: ignore[index]
                self._imputed[name] += 1
                stats.changed += 1
            if drop_reason:
                stats.drop(drop_reason, record)
            else:
                kept.append(record)
        return kept

    def finish(self, stats: StepStats) -> None:
        stats.extra["imputed"] = dict(self._imputed)


def repetition_fractions(text: str, words: list[str]) -> dict[str, float]:
    """Gopher repetition measures: duplicate-line fraction and top 2/3/4-gram character fractions."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    dup_lines = (len(lines) - len(set(lines))) / len(lines) if lines else 0.0
    total_chars = sum(len(w) for w in words) or 1
    top = {}
    for n in (2, 3, 4):
        if len(words) < n:
            top[n] = 0.0
            continue
        counts = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        gram, freq = counts.most_common(1)[0]
        top[n] = (sum(len(w) for w in gram) * freq / total_chars) if freq > 1 else 0.0
    return {"dup_line_fraction": dup_lines, "top_2gram": top[2], "top_3gram": top[3], "top_4gram": top[4]}


@register_step
class QualityFilter(Step):
    """Drop low-quality text: length, repetition, symbol ratio, and (optionally) the Gopher rules."""

    name = "filter"
    row_local = True
    min_chars: int = Field(1, ge=0)
    max_chars: int | None = None
    min_words: int = Field(0, ge=0)
    max_words: int | None = None
    max_dup_line_fraction: float = Field(0.3, ge=0, le=1)
    max_top_2gram_fraction: float = Field(0.2, ge=0, le=1)
    max_top_3gram_fraction: float = Field(0.18, ge=0, le=1)
    max_top_4gram_fraction: float = Field(0.16, ge=0, le=1)
    max_symbol_ratio: float = Field(0.1, ge=0, le=1)  # '#' and '…' per word, as in Gopher
    gopher: bool = False  # word length 3-10, ellipsis lines <= 30%, alphabetic words >= 80%, >= 2 stop words
    min_repetition_words: int = 20  # repetition rules apply only to texts at least this long

    def apply(self, batch: Batch, stats: StepStats) -> Batch:
        kept = []
        for record in batch:
            reason = self.reject_reason(record.get(self.ctx.text_field))
            if reason:
                stats.drop(reason, record)
            else:
                kept.append(record)
        return kept

    def reject_reason(self, text: Any) -> str | None:
        if not isinstance(text, str):
            return "not_text"
        if len(text) < self.min_chars:
            return "too_short"
        if self.max_chars is not None and len(text) > self.max_chars:
            return "too_long"
        words = text.split()
        if len(words) < self.min_words:
            return "too_few_words"
        if self.max_words is not None and len(words) > self.max_words:
            return "too_many_words"
        if (
            words
            and (text.count("#") + text.count("…") + text.count("...")) / len(words) > self.max_symbol_ratio
        ):
            return "symbol_ratio"
        if len(words) >= self.min_repetition_words:
            rep = repetition_fractions(text, words)
            if rep["dup_line_fraction"] > self.max_dup_line_fraction:
                return "repeated_lines"
            for n, limit in (
                (2, self.max_top_2gram_fraction),
                (3, self.max_top_3gram_fraction),
                (4, self.max_top_4gram_fraction),
            ):
                if rep[f"top_{n}gram"] > limit:
                    return f"repeated_{n}grams"
        if self.gopher and words:
            mean_len = sum(len(w) for w in words) / len(words)
            if not 3 <= mean_len <= 10:
                return "gopher_word_length"
            lines = [ln for ln in text.split("\n") if ln.strip()]
            if lines and sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / len(lines) > 0.3:
                return "gopher_ellipsis_lines"
            if sum(1 for w in words if any(c.isalpha() for c in w)) / len(words) < 0.8:
                return "gopher_non_alphabetic"
            if len({w.lower().strip(".,;:!?\"'") for w in words} & STOP_WORDS) < 2:
                return "gopher_stop_words"
        return None


# -- filter hooks: toxicity, PII … registered by other layers (guardrails) --------------------------

FilterHook = Callable[[Record, str], "str | None | Record"]
"""``hook(record, text_field)`` returns None to keep, a reason string to drop, or a new record (redaction)."""


def register_filter_hook(name: str, factory: Callable[..., FilterHook]) -> None:
    """Make ``{hook: {name: NAME, ...options}}`` available in recipes. ``factory(**options)`` builds it.

    The name goes into ``lamina.core.extensions.FILTER_HOOKS``: a name already taken is refused.
    """
    FILTER_HOOKS.add(name, factory)


def registered_hooks() -> list[str]:
    return FILTER_HOOKS.names()


@register_step
class Hook(Step):
    """Run a registered filter hook (guardrails adds toxicity and PII; ``regex`` is built in)."""

    name = "hook"
    hook: str
    options: dict[str, Any] = Field(default_factory=dict)

    def start(self, ctx: StepContext) -> None:
        super().start(ctx)
        factory = FILTER_HOOKS.entries.get(self.hook)
        if factory is None:
            raise ConfigError(
                f"no filter hook named {self.hook!r} is registered",
                hint=f"registered: {', '.join(registered_hooks()) or 'none'}; toxicity and PII hooks come "
                "with the guardrails layer",
            )
        self._fn = factory(**self.options)

    def apply(self, batch: Batch, stats: StepStats) -> Batch:
        kept = []
        for record in batch:
            result = self._fn(record, self.ctx.text_field)
            if result is None:
                kept.append(record)
            elif isinstance(result, str):
                stats.drop(f"{self.hook}:{result}", record)
            else:
                stats.changed += 1
                kept.append(result)
        return kept


def _regex_hook(
    pattern: str,
    field: str | None = None,
    action: Literal["drop", "redact"] = "drop",
    replacement: str = "[REDACTED]",
) -> FilterHook:
    compiled = re.compile(pattern)

    def hook(record: Record, text_field: str) -> str | None | Record:
        value = record.get(field or text_field)
        if not isinstance(value, str) or not compiled.search(value):
            return None
        if action == "drop":
            return "matched"
        return {**record, field or text_field: compiled.sub(replacement, value)}

    return hook


register_filter_hook("regex", _regex_hook)
