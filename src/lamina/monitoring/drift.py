"""Drift between a window of traffic and the data a model learned from: is today's traffic still the
kind of text the model was trained for?

Three tests, each with a p-value, combined with Bonferroni so the whole check keeps its false-alarm
rate at ``alpha``:

- **meaning**: a kernel two-sample test (MMD, RBF kernel at the median-distance bandwidth) on MiniLM
  embeddings, its p-value from permutations — catches a change of topic or language that keeps
  the length and the words' spread;
- **length**: PSI (population stability index, the credit-risk industry's drift score) of the
  characters per text over the reference's deciles;
- **vocabulary**: PSI of the words over the reference's most frequent ones (plus "other") —
  catches a new language or jargon cheaply.

Every p-value comes from permutations of which texts are the window (texts are the exchangeable
unit), so each test holds its level without distributional assumptions.

Hand-written because no maintained library here offers these three on text embeddings with
p-values (alibi-detect pins old TensorFlow/torch; Evidently's text drift needs its own stack);
each is a few lines of numpy/scipy, tested against planted shifts in ``bench/drift.py``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

import numpy as np

WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class Test:
    name: str
    statistic: float
    p_value: float
    psi: float | None = None


@dataclass
class DriftReport:
    reference: int  # texts
    window: int
    alpha: float
    tests: list[Test] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        """Any test below alpha / the number of tests (Bonferroni)."""
        return any(t.p_value < self.alpha / max(1, len(self.tests)) for t in self.tests)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drifted": self.drifted}


def mmd_test(
    reference: np.ndarray, window: np.ndarray, permutations: int = 200, seed: int = 0
) -> tuple[float, float]:
    """(MMD², permutation p-value) of two samples of vectors (rows)."""
    pooled = np.vstack([reference, window]).astype(np.float64)
    sq = np.sum(pooled**2, axis=1)
    distances = np.maximum(sq[:, None] + sq[None, :] - 2 * pooled @ pooled.T, 0.0)
    off_diagonal = distances[np.triu_indices(len(pooled), k=1)]
    bandwidth = float(np.median(off_diagonal)) or 1.0
    kernel = np.exp(-distances / bandwidth)
    # MMD² (the V-statistic) is wᵀKw with w = 1/n on the reference rows and -1/m on the window's;
    # a permutation shuffles w, so every permutation is one column of K @ W
    n, m = len(reference), len(window)
    w = np.concatenate([np.full(n, 1.0 / n), np.full(m, -1.0 / m)])
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(w) for _ in range(permutations)], axis=1)
    observed = float(w @ kernel @ w)
    null = np.einsum("ip,ip->p", shuffled, kernel @ shuffled)
    return observed, float((np.sum(null >= observed) + 1) / (permutations + 1))


def psi(reference_counts: np.ndarray, window_counts: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    """PSI of binned counts; the last axis is the bins (so many permutations at once)."""
    p = np.maximum(reference_counts / np.maximum(1, reference_counts.sum(-1, keepdims=True)), floor)
    q = np.maximum(window_counts / np.maximum(1, window_counts.sum(-1, keepdims=True)), floor)
    return np.sum((q - p) * np.log(q / p), axis=-1)


def binned_test(
    name: str, reference: np.ndarray, window: np.ndarray, permutations: int = 200, seed: int = 0
) -> Test:
    """PSI of per-text bin counts (rows: texts), its p-value from permuting which texts are the
    window. Texts, not words, are the unit that is exchangeable: the words of one text are not
    independent, and a chi-square test on word counts would cry wolf."""
    pooled = np.vstack([reference, window]).astype(np.float64)
    total, n = pooled.sum(axis=0), len(reference)
    observed = float(psi(total - pooled[n:].sum(axis=0), pooled[n:].sum(axis=0)))
    rng = np.random.default_rng(seed)
    picks = np.zeros((permutations, len(pooled)))
    for row in picks:
        row[rng.permutation(len(pooled))[: len(window)]] = 1.0
    in_window = picks @ pooled
    null = psi(total[None, :] - in_window, in_window)
    p_value = float((np.sum(null >= observed) + 1) / (permutations + 1))
    return Test(name, observed, p_value, observed)


def length_test(reference: list[str], window: list[str], bins: int = 10, **kw: Any) -> Test:
    """Characters per text, binned at the reference's deciles."""
    ref = np.array([len(t) for t in reference], dtype=np.float64)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))

    def one_hot(texts: list[str]) -> np.ndarray:
        index = np.searchsorted(edges, [len(t) for t in texts], side="right")
        return np.eye(len(edges) + 1)[index]

    return binned_test("length", one_hot(reference), one_hot(window), **kw)


def vocabulary_test(reference: list[str], window: list[str], top: int = 200, **kw: Any) -> Test:
    """Word counts over the reference's ``top`` words, and one bin for every other word."""
    ref_words = Counter(w for t in reference for w in WORD.findall(t.lower()))
    index = {w: i for i, (w, _) in enumerate(ref_words.most_common(top))}

    def counts(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(index) + 1))
        for row, text in enumerate(texts):
            for word in WORD.findall(text.lower()):
                out[row, index.get(word, len(index))] += 1
        return out

    return binned_test("vocabulary", counts(reference), counts(window), **kw)


def check(
    reference: list[str],
    window: list[str],
    *,
    embed: Any = None,
    alpha: float = 0.05,
    permutations: int = 200,
    seed: int = 0,
    reference_vectors: np.ndarray | None = None,
    window_vectors: np.ndarray | None = None,
) -> DriftReport:
    """Run the three tests. ``embed(texts) -> vectors`` (default: the packaged MiniLM); vectors may
    be passed in instead (a benchmark embeds its pools once)."""
    if len(reference) < 20 or len(window) < 20:
        from lamina.core.errors import ConfigError

        raise ConfigError(
            f"drift needs at least 20 texts on each side (reference {len(reference)}, window {len(window)})"
        )
    if reference_vectors is None or window_vectors is None:
        if embed is None:
            from lamina.rag.embeddings import Embedder

            embed = Embedder().encode
        reference_vectors, window_vectors = embed(reference), embed(window)
    report = DriftReport(len(reference), len(window), alpha)
    mmd, p_value = mmd_test(reference_vectors, window_vectors, permutations, seed)
    report.tests.append(Test("meaning", mmd, p_value))
    report.tests.append(length_test(reference, window, permutations=permutations, seed=seed))
    report.tests.append(vocabulary_test(reference, window, permutations=permutations, seed=seed))
    return report


@cache
def _embedder(cache_file: str) -> Any:
    from pathlib import Path

    from lamina.rag.embeddings import Embedder

    return Embedder(cache=Path(cache_file))


def check_workspace(ws: Any, reference: list[str], window: list[str], **options: Any) -> DriftReport:
    """``check`` with the packaged MiniLM loaded once per process and the reference's vectors kept
    in the workspace's cache (the window's are not: traffic does not come again).

    A reference does not change between checks (a dataset version is immutable), yet every check,
    from the console's page, the CLI or the loop's schedule, embedded its up-to-2,000 texts again;
    on a 2-core AVX2 machine 787 texts took 37 s (docs/monitoring.md), a cached reference 0.01 s."""
    embedder = _embedder(str(ws.root / ".cache" / "embeddings.sqlite"))
    return check(
        reference,
        window,
        reference_vectors=embedder.encode(reference),
        window_vectors=embedder.encode(window, remember=False),
        **options,
    )


def recent_prompts(ws: Any, cipher: Any, limit: int = 500) -> list[str]:
    """The user text of the newest ``limit`` answered chat and completion requests (the audit log
    keeps it encrypted when ``server.audit_text`` is on)."""
    import sqlalchemy as sa

    from lamina.core.catalog.models import AuditEvent
    from lamina.core.errors import ConfigError
    from lamina.monitoring.review import messages_of

    if cipher is None:
        raise ConfigError(
            "reading traffic needs the audit text and its key",
            hint="turn on server.audit_text and set security.encryption_keys",
        )
    routes = ("/v1/chat/completions", "/v1/completions")
    query = (
        sa.select(AuditEvent.request_text)
        .where(
            AuditEvent.route.in_(routes), AuditEvent.status_code < 400, AuditEvent.request_text.is_not(None)
        )
        .order_by(AuditEvent.id.desc())
        .limit(limit)
    )
    out = []
    with ws.catalog.session() as session:
        for (stored,) in session.execute(query):
            messages = messages_of(cipher.decrypt(stored)) or []
            users = [str(m["content"]) for m in messages if m.get("role") == "user" and m.get("content")]
            if users:
                out.append(users[-1])
    return out


def reference_texts(ws: Any, reference: str, split: str | None = "train", sample: int = 2000) -> list[str]:
    """Up to ``sample`` texts (seeded) of a dataset version's split, or of a file: one text a line
    (``.txt``) or rows with ``text``/``prompt``/``instruction``/``question`` (``.jsonl``, ``.csv``)."""
    import random
    from pathlib import Path

    from lamina.guardrails.training import rows_of  # a dataset version's split, or a JSONL/CSV file

    path = Path(reference)
    if path.suffix == ".txt" and path.exists():
        texts = path.read_text(encoding="utf-8").splitlines()
    else:
        rows = rows_of(ws, reference, None if path.exists() else split)
        fields = ("text", "prompt", "instruction", "question")
        texts = [str(next((r[k] for k in fields if r.get(k)), "")) for r in rows]
    texts = [t for t in texts if t.strip()]
    return random.Random(0).sample(texts, min(sample, len(texts)))
