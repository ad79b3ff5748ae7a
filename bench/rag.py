"""Retrieval benchmark: question → paragraph on SQuAD (../shared/data/rag/squad-dev-shared.json).

Every paragraph is a document in a LanceDB store (chunked, embedded with the packaged MiniLM), and
each question is answered by lexical (LanceDB BM25), dense, plain RRF and Lamina's hybrid retrieval:
recall@1..10, MRR, nDCG@10. The hybrid's weight is chosen on half the articles and reported on the
other half, which it has never seen (as well as on all). Also: ingest throughput against the raw
encoder on the same chunks.

    .venv/bin/python bench/rag.py [--quick]

Writes bench/results/rag.json and rag.md.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
SQUAD = ROOT.parent / "shared" / "data" / "rag" / "squad-dev-shared.json"

from machine import machine_line, save  # noqa: E402

from lamina.rag.chunking import chunk  # noqa: E402
from lamina.rag.embeddings import Embedder  # noqa: E402
from lamina.rag.evaluate import KS, build_store, load_squad, rank, score  # noqa: E402
from lamina.rag.retrieval import ALPHA  # noqa: E402

ISSUE_BM25S = {1: 0.738, 5: 0.907, 10: 0.937}  # bm25s, as measured when the issue was written
ISSUE_DENSE = {1: 0.625, 5: 0.874, 10: 0.930}


def half(article: str) -> str:
    """A fixed split of the articles: 'tune' or 'test'."""
    return "tune" if int(hashlib.sha256(article.encode()).hexdigest(), 16) % 2 == 0 else "test"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the first 300 questions only")
    args = parser.parse_args()
    documents, questions = load_squad(SQUAD)
    if args.quick:
        questions = questions[:300]
    embedder = Embedder()
    work = Path(tempfile.mkdtemp(prefix="lamina-bench-rag-"))
    try:
        # ingest against the raw encoder, on the same chunk texts
        texts = [c.text for d in documents for c in chunk(d, embedder.tokenizer)]
        started = time.perf_counter()
        embedder._model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        raw_s = time.perf_counter() - started
        started = time.perf_counter()
        store = build_store(documents, embedder, work / "store")
        ingest_s = time.perf_counter() - started
        print(
            f"raw encoder {len(texts) / raw_s:.0f} chunks/s; ingest {len(texts) / ingest_s:.0f} chunks/s",
            flush=True,
        )
        started = time.perf_counter()
        rankings = rank(store, embedder, questions)
        query_ms = 1000 * (time.perf_counter() - started) / len(questions)
        relevance = threshold_check(documents, questions, embedder)
        grid = [round(a * 0.05, 2) for a in range(21)]
        tune = {
            a: score(rankings, ["hybrid"], a, keep=lambda q: half(q.article) == "tune")["hybrid"]
            for a in grid
        }
        best = max(grid, key=lambda a: sum(tune[a][f"recall@{k}"] for k in KS))
        report = {
            "documents": len(documents), "chunks": len(texts), "questions": len(questions),
            "raw_chunks_per_s": len(texts) / raw_s, "ingest_chunks_per_s": len(texts) / ingest_s,
            "query_ms": query_ms, "alpha_default": ALPHA, "alpha_tuned": best,
            "all": score(rankings, alpha=ALPHA),
            "test_half": score(rankings, alpha=best, keep=lambda q: half(q.article) == "test"),
            "tune_curve": {str(a): tune[a]["recall@1"] for a in grid}, "relevance": relevance,
        }  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save("rag", report, render(report))


def threshold_check(documents: list, questions: list, embedder: Embedder, n: int = 500) -> dict:
    """The extractive answer's "not found" threshold (``MIN_RELEVANCE``) against real pairs: a question
    with the best sentence of its own paragraph, and with the best sentence of another article's."""
    import random

    import numpy as np

    from lamina.rag.answer import MIN_RELEVANCE, sentences

    rng = random.Random(0)
    by_source = {d.source: d for d in documents}
    sample = rng.sample(questions, min(n, len(questions)))

    def best(question: str, text: str) -> float:
        spans = sentences(text)
        vectors = embedder.encode([text[a:b] for a, b in spans])
        return float(np.max(vectors @ embedder.encode_query(question)))

    own, other = [], []
    for q in sample:
        own.append(best(q.text, by_source[q.source].text))
        stranger = rng.choice([d for d in documents if not d.source.startswith(q.article + "#")])
        other.append(best(q.text, stranger.text))
    return {
        "threshold": MIN_RELEVANCE, "own_median": float(np.median(own)),
        "other_median": float(np.median(other)),
        "own_above": float(np.mean(np.array(own) >= MIN_RELEVANCE)),
        "other_above": float(np.mean(np.array(other) >= MIN_RELEVANCE)), "pairs": len(sample),
    }  # fmt: skip


def table(scores: dict[str, dict[str, float]]) -> list[str]:
    lines = ["| retrieval | " + " | ".join(f"R@{k}" for k in KS) + " | MRR | nDCG@10 |",
             "|---|" + "---|" * (len(KS) + 2)]  # fmt: skip
    for mode, s in scores.items():
        lines.append(f"| {mode} | " + " | ".join(f"{s[f'recall@{k}']:.3f}" for k in KS)
                     + f" | {s['mrr']:.3f} | {s['ndcg@10']:.3f} |")  # fmt: skip
    best_single = {k: max(scores["lexical"][f"recall@{k}"], scores["dense"][f"recall@{k}"]) for k in KS}
    wins = [k for k in KS if scores["hybrid"][f"recall@{k}"] > best_single[k]]
    lines.append("")
    lines.append(f"Hybrid beats the better of lexical and dense at k = {', '.join(map(str, wins)) or 'none'}"
                 f" ({len(wins)} of {len(KS)}).")  # fmt: skip
    return lines


def render(r: dict) -> str:
    from machine import machine_info

    return "\n".join([
        "# Retrieval: SQuAD question → paragraph", "",
        machine_line(machine_info()), "",
        f"{r['documents']} paragraphs ({r['chunks']} chunks), {r['questions']} questions; packaged "
        f"all-MiniLM-L6-v2; LanceDB store; {r['query_ms']:.1f} ms per question for both rankings.", "",
        f"## All questions (hybrid weight {r['alpha_default']}, the default)", "",
        *table(r["all"]), "",
        f"## Articles never used to choose the weight ({r['alpha_tuned']}, chosen on the other half)", "",
        *table(r["test_half"]), "",
        "For reference, when the issue was written: bm25s R@1/5/10 "
        + "/".join(f"{v:.3f}" for v in ISSUE_BM25S.values()) + ", MiniLM dense "
        + "/".join(f"{v:.3f}" for v in ISSUE_DENSE.values()) + ".", "",
        f"Extractive answers say \"not found\" below relevance {r['relevance']['threshold']}: "
        f"a question's best sentence in its own paragraph has median {r['relevance']['own_median']:.2f} "
        f"({100 * r['relevance']['own_above']:.0f} % above), in another article's "
        f"{r['relevance']['other_median']:.2f} ({100 * r['relevance']['other_above']:.0f} % above; "
        f"{r['relevance']['pairs']} questions).", "",
        f"Ingest: {r['ingest_chunks_per_s']:.0f} chunks/s through the store against "
        f"{r['raw_chunks_per_s']:.0f} for the raw encoder on the same texts: "
        f"{100 * r['ingest_chunks_per_s'] / r['raw_chunks_per_s']:.0f} %.",
    ]) + "\n"  # fmt: skip


if __name__ == "__main__":
    main()
