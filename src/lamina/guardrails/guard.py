"""Running rails on a request: input texts before the model, output text after it, and output as it
streams.

Streaming (what NeMo Guardrails' output rails break): ``StreamGuard`` holds back only the text a
rail may still change. Each new piece is checked together with a look-behind window of text already
sent, so an entity split across tokens is seen whole. What is held back is the word in progress and
a trailing run of entity-like words (with digits, ``@``, or capitalised: phone numbers, e-mails,
names) until an ordinary word follows; a span a rail found is acted on once text follows it (so
``john@example.co`` is not redacted before its ``m`` arrives). Text a rail blocks or redacts is
therefore never sent, and plain prose flows with a delay of about one token.

A rail that raises fails closed when its action is ``block`` (the request is blocked and the error
reported) and is reported as a ``flag`` otherwise; it is never silently skipped.

Input verdicts are remembered (``VerdictCache``): a chat client sends the whole conversation with
every turn, and the same system prompt with every request, so without it the rails would judge the
same messages again on each turn — a 20-turn chat would pay for 20 classifier passes per request.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lamina.guardrails.rail import Rail
from lamina.guardrails.verdict import Span, Verdict, redact

log = logging.getLogger(__name__)
Observe = Callable[[str, str, Verdict, float], None]  # (stage, rail, verdict, seconds)


@dataclass
class Checked:
    """The outcome of rails on some texts: the texts after redaction, every verdict, the block."""

    texts: list[str]
    verdicts: list[Verdict] = field(default_factory=list)
    blocked: Verdict | None = None


class VerdictCache:
    """The last ``size`` input verdicts by (rail, model, text digest). A verdict from a rail that
    failed is not kept, so a failure is retried on the next request."""

    def __init__(self, size: int = 4096) -> None:
        self.size, self.hits, self.misses = size, 0, 0
        self._items: OrderedDict[tuple[int, str, bytes], Verdict] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(rail: Rail, text: str, context: dict[str, Any]) -> tuple[int, str, bytes]:
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        return id(rail), str(context.get("model")), digest

    def get(self, key: tuple[int, str, bytes]) -> Verdict | None:
        with self._lock:
            verdict = self._items.get(key)
            if verdict is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return verdict

    def put(self, key: tuple[int, str, bytes], verdict: Verdict) -> None:
        if verdict.error:
            return
        with self._lock:
            self._items[key] = verdict
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class Guard:
    def __init__(
        self,
        input: list[Rail],
        output: list[Rail],
        window: int = 48,
        observe: Observe | None = None,
        cache_size: int = 4096,
    ):
        self.input, self.output, self.window, self.observe = input, output, window, observe
        self.cache = VerdictCache(cache_size) if cache_size else None

    @property
    def active(self) -> bool:
        return bool(self.input or self.output)

    def run(self, rail: Rail, text: str, context: dict[str, Any]) -> Verdict:
        started = time.perf_counter()
        cached = self.cache is not None and context.get("stage") == "input"
        key = VerdictCache.key(rail, text, context) if cached else None
        hit = self.cache.get(key) if key is not None and self.cache is not None else None
        if hit is not None:
            if self.observe is not None:
                self.observe("input", rail.name, hit, time.perf_counter() - started)
            return hit
        try:
            verdict = rail.check(text, context)
        except Exception as exc:  # a rail's failure is reported, and a blocking rail fails closed
            log.exception("rail %s failed", rail.name)
            verdict = Verdict(
                rail.name,
                "block" if rail.action == "block" else "flag",
                reasons=[f"the rail failed: {type(exc).__name__}: {exc}"],
                error=type(exc).__name__,
            )
        if key is not None and self.cache is not None:
            self.cache.put(key, verdict)
        if self.observe is not None:
            self.observe(context.get("stage", "?"), rail.name, verdict, time.perf_counter() - started)
        return verdict

    def input_parts(self) -> tuple[list[Rail], list[Rail]]:
        """(the input rails that may rewrite a text: redactors; those that only judge it: block or
        flag). The judges can run while the model already reads the rewritten prompt."""
        rewriting = [r for r in self.input if r.action == "redact"]
        return rewriting, [r for r in self.input if r.action != "redact"]

    def check(
        self, texts: list[str], context: dict[str, Any], stage: str = "input", whole: bool = True,
        only: list[Rail] | None = None,
    ) -> Checked:  # fmt: skip
        """Run the stage's rails (or ``only`` these) over each text (in order; a block stops the
        rest); redactions of every rail are applied to the texts returned."""
        rails = only if only is not None else self.input if stage == "input" else self.output
        if not whole:
            rails = [r for r in rails if not r.whole_answer]
        context = {**context, "stage": stage}
        out = Checked(list(texts))
        for i, text in enumerate(texts):
            spans: list[Span] = []
            for rail in rails:
                verdict = self.run(rail, text, context)
                out.verdicts.append(verdict)
                if verdict.action == "block":
                    out.blocked = verdict
                    return out
                if verdict.action == "redact":
                    spans += verdict.spans
            if spans:
                out.texts[i] = redact(text, spans)
        return out

    def stream(self, context: dict[str, Any]) -> StreamGuard:
        return StreamGuard(self, {**context, "stage": "output"})


_ENTITY_WORD = re.compile(r"[\d@]|^[\"'(\[]?[A-Z]|^[+#$€£]")
_SPACE = re.compile(r"\s")


class StreamGuard:
    """One streamed answer through the output rails: ``feed`` each delta, send what it returns;
    ``finish`` returns the rest. After ``blocked`` is set nothing more is released."""

    def __init__(self, guard: Guard, context: dict[str, Any]) -> None:
        self.guard, self.context = guard, context
        self.rails = [r for r in guard.output if not r.whole_answer]
        self.final_rails = [r for r in guard.output if r.whole_answer]
        self.text = ""  # everything so far, with redactions applied
        self.sent = 0  # characters of ``text`` released
        self.verdicts: dict[str, Verdict] = {}
        self.blocked: Verdict | None = None

    def feed(self, delta: str) -> str:
        if self.blocked is not None or not delta:
            return ""
        self.text += delta
        return self._release(final=False)

    def finish(self) -> str:
        """The held text after a last check (and the whole-answer rails, such as grounding)."""
        if self.blocked is not None:
            return ""
        rest = self._release(final=True)
        if self.blocked is None:
            for rail in self.final_rails:
                self._note(self.guard.run(rail, self.text, self.context))
        return rest

    def _release(self, final: bool) -> str:
        start = max(0, self.sent - self.guard.window)
        window = self.text[start:]
        spans: list[Span] = []
        for rail in self.rails:
            verdict = self.guard.run(rail, window, self.context)
            self._note(verdict)
            if verdict.action == "block":
                self.blocked = verdict
                return ""
            if verdict.action == "redact":
                spans += [s.shifted(start) for s in verdict.spans]
        settled: list[Span] = []
        growing: list[int] = []  # where spans that may still grow start
        for span in spans:
            if span.end <= self.sent:
                continue  # judged when it was sent
            span = Span(max(span.start, self.sent), span.end, span.label, span.score)
            if final or span.end < len(self.text):
                settled.append(span)
            else:
                growing.append(span.start)
        if settled:
            tail = redact(self.text[self.sent :], [s.shifted(-self.sent) for s in settled])
            growing = [p + _growth(settled, p) for p in growing]
            self.text = self.text[: self.sent] + tail
        hold = len(self.text) if final else min([self._hold_from(), *growing])
        hold = max(hold, self.sent)
        out, self.sent = self.text[self.sent : hold], hold
        return out

    def _hold_from(self) -> int:
        """Where the text still held back starts: the word in progress, and the entity-like words
        just before it, within the window."""
        text, end = self.text, len(self.text)
        floor = max(self.sent, end - self.guard.window)
        cut = end
        while cut > floor and not text[cut - 1].isspace():
            cut -= 1
        while cut > floor:
            j = cut
            while j > floor and text[j - 1].isspace():
                j -= 1
            k = j
            while k > floor and not text[k - 1].isspace():
                k -= 1
            if k == j or not _ENTITY_WORD.search(text[k:j]):
                break
            cut = k
        return cut

    def _note(self, verdict: Verdict) -> None:
        if verdict.acted or verdict.error:
            self.verdicts.setdefault(verdict.rail, verdict)


def _growth(redacted: list[Span], position: int) -> int:
    """How far ``position`` moves when the spans before it are replaced by ``<LABEL>``."""
    return sum(len(s.label) + 2 - (s.end - s.start) for s in redacted if s.end <= position)
