"""Rails that compare meanings with the packaged MiniLM: ``deny_topics`` (a prompt or answer close
to a described topic) and ``grounding`` (answer sentences that no cited source supports)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from lamina.core.errors import ConfigError
from lamina.core.extensions import RAILS
from lamina.guardrails.classifier import embedder
from lamina.guardrails.rail import Rail, RailSpec
from lamina.guardrails.verdict import Span, Verdict


@RAILS.register("deny_topics")
class DenyTopics(Rail):
    """``options.topics``: name → a description, or a list of example sentences. A text is on a
    topic when it (or one of its sentences) is within cosine ``threshold`` of it."""

    name = "deny_topics"
    default_threshold = 0.55
    options: ClassVar[dict[str, Any]] = {"topics": {}}

    def __init__(self, spec: RailSpec, ws: Any = None) -> None:
        super().__init__(spec, ws)
        topics = self.opts["topics"]
        if not isinstance(topics, dict) or not topics:
            raise ConfigError("rail 'deny_topics' needs options.topics: {name: description or [examples]}")
        self.names: list[str] = []
        texts: list[str] = []
        for name, described in topics.items():
            for text in [described] if isinstance(described, str) else list(described):
                self.names.append(str(name))
                texts.append(str(text))
        self.vectors = embedder().encode(texts)

    def check(self, text: str, context: dict[str, Any]) -> Verdict:
        from lamina.rag.answer import sentences

        pieces = [(0, len(text))] + [(a, b) for a, b in sentences(text) if text[a:b].strip()][:32]
        similarity = embedder().encode([text[a:b] for a, b in pieces]) @ self.vectors.T
        spans, reasons = [], set()
        threshold = float(self.threshold or 0.0)
        for (a, b), row in zip(pieces, similarity, strict=True):
            best = int(np.argmax(row))
            if row[best] >= threshold:
                spans.append(Span(a, b, self.names[best].upper(), float(row[best])))
                reasons.add(f"topic: {self.names[best]}")
        return self.verdict(
            bool(spans), spans=spans[1:] or spans, reasons=sorted(reasons), score=float(similarity.max())
        )


@RAILS.register("grounding")
class Grounding(Rail):
    """For answers grounded by the ``rag`` extension: each sentence must be supported by a source
    the model was shown (MiniLM cosine ≥ ``threshold``); unsupported sentences are flagged (or
    blocked, if the policy says so). Answers without sources are not judged."""

    name = "grounding"
    stages = ("output",)
    default_action = "flag"
    default_threshold = 0.5  # lamina.rag.evaluate.SUPPORT
    whole_answer = True

    def check(self, text: str, context: dict[str, Any]) -> Verdict:
        from lamina.rag.evaluate import sentence_support

        sources = context.get("sources") or []
        if not sources or not text.strip():
            return Verdict(self.name)
        support = sentence_support(text, list(sources), embedder())
        weak = [Span(a, b, "UNSUPPORTED", best) for a, b, best in support if best < (self.threshold or 0.0)]
        share = 1 - len(weak) / len(support) if support else 1.0
        reasons = [f"{len(weak)} of {len(support)} sentences not supported by the sources"] if weak else []
        return self.verdict(bool(weak), spans=weak, reasons=reasons, score=share)
