"""Retrieval quality on SQuAD-format data: recall@k, MRR and nDCG@10 for lexical, dense, RRF and
hybrid retrieval side by side (``lamina rag eval``, bench/rag.py); and, with a model, the quality of
answers generated from what was retrieved: how much of each answer its sources support (citation
coverage), how often the sources hold the gold answer, and the answer's token F1.

Each paragraph is one document (chunked like any other); a question's relevant document is the
paragraph it was written from. Chunks are ranked, then collapsed to documents in rank order, so a
long paragraph split in two counts once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lamina.core.errors import ConfigError
from lamina.rag.chunking import chunk
from lamina.rag.documents import Document, parse
from lamina.rag.retrieval import ALPHA, CANDIDATES, fuse
from lamina.rag.store import Hit, LanceStore

KS = tuple(range(1, 11))


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    source: str  # the relevant document
    article: str
    answers: tuple[str, ...] = ()  # the gold answers' texts


def load_squad(path: Path | str) -> tuple[list[Document], list[Question]]:
    """Paragraphs as documents and questions with their paragraph, from a SQuAD v1/v2 file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a SQuAD-format JSON file ({exc})") from None
    documents: list[Document] = []
    questions: list[Question] = []
    for article in data:
        title = str(article.get("title", "untitled"))
        for i, paragraph in enumerate(article.get("paragraphs", [])):
            source = f"{title}#{i}"
            document = parse(paragraph["context"].encode(), source, "text")
            document.title = title.replace("_", " ")
            documents.append(document)
            questions.extend(
                Question(q["question"], source, title, tuple(a["text"] for a in q.get("answers", [])))
                for q in paragraph.get("qas", [])
            )
    if not questions:
        raise ConfigError(f"{path} has no questions")
    return documents, questions


def build_store(documents: list[Document], embedder: Any, folder: Path, progress: Any = None) -> LanceStore:
    """An uncatalogued store of the documents' chunks (an evaluation's scratch index)."""
    chunks = [c for d in documents for c in chunk(d, embedder.tokenizer)]
    store = LanceStore(folder, embedder.dimension)
    store.upsert(chunks, embedder.encode([c.text for c in chunks], progress=progress))
    store.finish_writes()
    return store


@dataclass
class Rankings:
    """Per question, the dense and lexical candidates (chunk hits), fetched once for every mode."""

    questions: list[Question]
    dense: list[list[Hit]]
    lexical: list[list[Hit]]


def rank(store: LanceStore, embedder: Any, questions: list[Question], progress: Any = None) -> Rankings:
    vectors = embedder.encode([q.text for q in questions])
    dense, lexical = [], []
    for question, vector in zip(questions, vectors, strict=True):
        dense.append(store.dense(vector, CANDIDATES, None, {}))
        lexical.append(store.lexical(question.text, CANDIDATES, None, {}))
        if progress is not None:
            progress(1)
    return Rankings(questions, dense, lexical)


def _documents(hits: Iterable[Any]) -> list[str]:
    seen: dict[str, None] = {}
    for hit in hits:
        seen.setdefault(hit.chunk.source, None)
    return list(seen)


MODES: dict[str, Callable[[list[Hit], list[Hit], float], list[str]]] = {
    "lexical": lambda d, lx, a: _documents(lx),
    "dense": lambda d, lx, a: _documents(d),
    "rrf": lambda d, lx, a: _documents(fuse(d, lx, CANDIDATES, rrf=True)),
    "hybrid": lambda d, lx, a: _documents(fuse(d, lx, CANDIDATES, alpha=a)),
}


def score(rankings: Rankings, modes: Iterable[str] = MODES, alpha: float = ALPHA,
          keep: Callable[[Question], bool] | None = None) -> dict[str, dict[str, float]]:  # fmt: skip
    """recall@1..10, MRR and nDCG@10 per mode (over the questions ``keep`` accepts)."""
    out: dict[str, dict[str, float]] = {}
    for mode in modes:
        hits_at = np.zeros(len(KS))
        reciprocal, gain, n = 0.0, 0.0, 0
        for question, dense, lexical in zip(
            rankings.questions, rankings.dense, rankings.lexical, strict=True
        ):
            if keep is not None and not keep(question):
                continue
            n += 1
            ranked = MODES[mode](dense, lexical, alpha)
            position = ranked.index(question.source) if question.source in ranked else None
            if position is not None:
                hits_at += np.array([position < k for k in KS])
                reciprocal += 1 / (position + 1)
                gain += 1 / math.log2(position + 2) if position < 10 else 0.0
        if n == 0:
            raise ConfigError("no question to score")
        out[mode] = {**{f"recall@{k}": float(h / n) for k, h in zip(KS, hits_at, strict=True)},
                     "mrr": reciprocal / n, "ndcg@10": gain / n, "questions": n}  # fmt: skip
    return out


# -- generated answers -------------------------------------------------------------------------------
SUPPORT = 0.5  # cosine (MiniLM) at which a source sentence supports an answer sentence


def words(text: str) -> list[str]:
    import re

    return re.findall(r"\w+", text.lower())


def token_f1(output: str, expected: str) -> float:
    """SQuAD's token F1."""
    from collections import Counter

    got, want = Counter(words(output)), Counter(words(expected))
    same = sum((got & want).values())
    if not same:
        return 0.0
    precision, recall = same / sum(got.values()), same / sum(want.values())
    return 2 * precision * recall / (precision + recall)


def sentence_support(answer: str, sources: list[str], embedder: Any) -> list[tuple[int, int, float]]:
    """Each answer sentence's (start, end, best cosine to any source sentence); the grounding rail
    flags those under ``SUPPORT``."""
    from lamina.rag.answer import sentences

    said = [(a, b) for a, b in sentences(answer) if answer[a:b].strip()]
    shown = [text[a:b] for text in sources for a, b in sentences(text) if text[a:b].strip()]
    if not said:
        return []
    if not shown:
        return [(a, b, 0.0) for a, b in said]
    similarity = embedder.encode([answer[a:b] for a, b in said]) @ embedder.encode(shown).T
    return [(a, b, float(best)) for (a, b), best in zip(said, similarity.max(axis=1), strict=True)]


def supported(answer: str, sources: list[str], embedder: Any) -> float:
    """The share of the answer's sentences that some source sentence supports (cosine >= SUPPORT)."""
    support = sentence_support(answer, sources, embedder)
    if not support or not sources:
        return 0.0
    return float(np.mean([best >= SUPPORT for _, _, best in support]))


def answer_quality(
    store: Any, embedder: Any, questions: list[Question], generate: Callable[..., str], model: str,
    template: Any, *, k: int = 3, max_chars: int = 600, max_tokens: int = 32, progress: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """Generate an answer per question from its ``k`` best chunks (hybrid) through ``template``."""
    from lamina.core.errors import LaminaError
    from lamina.rag.retrieval import retrieve

    coverage, in_sources, f1s, errors = [], [], [], []
    for question in questions:
        hits = retrieve(store, embedder, question.text, k)
        texts = [h.chunk.text[:max_chars] for h in hits]
        sources = [{"title": h.chunk.title, "page": h.chunk.page, "text": text, "document": h.chunk.source}
                   for h, text in zip(hits, texts, strict=True)]  # fmt: skip
        prompt = template.render(question=question.text, sources=sources)
        try:
            answer = generate(model, [{"role": "user", "content": prompt}],
                              {"max_tokens": max_tokens, "temperature": 0.0})  # fmt: skip
        except LaminaError as exc:  # e.g. the prompt does not fit the model: counted, not fatal
            errors.append(exc.message)
            continue
        finally:
            if progress is not None:
                progress(1)
        coverage.append(supported(answer, texts, embedder))
        joined = " ".join(texts).lower()
        in_sources.append(float(any(a.lower() in joined for a in question.answers)))
        f1s.append(max((token_f1(answer, a) for a in question.answers), default=0.0))
    answered = len(coverage)
    return {
        "questions": len(questions), "answered": answered, "model": model, "template": template.ref,
        "citation_coverage": float(np.mean(coverage)) if answered else 0.0,
        "answer_in_sources": float(np.mean(in_sources)) if answered else 0.0,
        "answer_f1": float(np.mean(f1s)) if answered else 0.0, "errors": errors[:3],
    }  # fmt: skip
