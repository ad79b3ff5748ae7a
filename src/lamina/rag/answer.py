"""Grounded answers, extractive mode: the passages that support an answer, the sentence in them that
answers best (highlighted by its span), and a citation for each; or, when nothing retrieved is close
enough to the question, a plain "not found" instead of an answer made from nothing.

Useful with any model (none is needed): the tiny models trained here cannot write a reliable
answer, but they can be shown these passages, and a person can check them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lamina.rag.retrieval import Retrieved

# the least cosine similarity (question, best sentence) that counts as "about this"; bench/rag.py
# measures it on SQuAD: for a question's own paragraph against a paragraph of another article
MIN_RELEVANCE = 0.3
_SENTENCE = re.compile(r"\S.*?(?:[.!?]+(?=\s|$)|$)", re.S)  # matched within one block
_BLOCK_BREAK = re.compile(r"\n\s*\n|\n(?=[ \t]*(?:[-*#|>]|\d+\.)\s)")


@dataclass(frozen=True, slots=True)
class Passage:
    retrieved: Retrieved
    sentence: tuple[int, int]  # the best sentence's span inside the chunk's text
    relevance: float  # cosine(question, that sentence)

    def as_dict(self) -> dict[str, Any]:
        start, end = self.sentence
        highlight = {"start": start, "end": end, "text": self.retrieved.chunk.text[start:end]}
        return {**self.retrieved.as_dict(), "highlight": highlight, "relevance": round(self.relevance, 4)}


@dataclass
class Answer:
    question: str
    grounded: bool
    text: str  # the best supporting sentence, or why there is none
    passages: list[Passage] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"question": self.question, "grounded": self.grounded, "answer": self.text,
                "citations": [p.as_dict() for p in self.passages]}  # fmt: skip


def sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans: a sentence ends at ``.``, ``!`` or ``?`` before a space, or where its block
    ends (a blank line, a list item, a heading, a table row). Hard-wrapped lines are one sentence."""
    spans = []
    at = 0
    for boundary in [*_BLOCK_BREAK.finditer(text), None]:
        end = boundary.start() if boundary is not None else len(text)
        for match in _SENTENCE.finditer(text, at, end):
            start, stop = match.start(), match.end()
            if stop - start > 2:
                spans.append((start, stop))
        at = boundary.end() if boundary is not None else end
    return spans or [(0, len(text))]


def extractive(question: str, retrieved: list[Retrieved], embedder: Any,
               min_relevance: float = MIN_RELEVANCE) -> Answer:  # fmt: skip
    """Rank the retrieved chunks' sentences against the question; cite each chunk's best one."""
    if not retrieved:
        return Answer(question, False, "No document you may read matches this question.")
    query = embedder.encode_query(question)
    spans = [sentences(r.chunk.text) for r in retrieved]
    texts = [
        r.chunk.text[a:b] for r, chunk_spans in zip(retrieved, spans, strict=True) for a, b in chunk_spans
    ]
    similarity = embedder.encode(texts) @ query
    passages, at = [], 0
    for r, chunk_spans in zip(retrieved, spans, strict=True):
        scores = similarity[at : at + len(chunk_spans)]
        at += len(chunk_spans)
        best = int(np.argmax(scores))
        passages.append(Passage(r, chunk_spans[best], float(scores[best])))
    passages.sort(key=lambda p: -p.relevance)
    top = passages[0]
    if top.relevance < min_relevance:
        return Answer(
            question, False,
            f"Nothing retrieved is close enough to this question to answer it (best relevance "
            f"{top.relevance:.2f} < {min_relevance}).",
            passages,
        )  # fmt: skip
    start, end = top.sentence
    return Answer(question, True, " ".join(top.retrieved.chunk.text[start:end].split()), passages)
