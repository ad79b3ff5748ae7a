"""Near-duplicate removal benchmark: Lamina's dedup step vs rensa alone vs datasketch's MinHashLSH.

- ``datasketch``: configured as its documentation recommends for many documents: one set of
  permutations shared by every MinHash (``MinHash.generator``), ``LeanMinHash`` for what is kept.
- ``rensa``: the library Lamina uses, called directly in the smallest loop (shingle, hash, query,
  verify, insert), so Lamina's own overhead shows as the gap to the next row.
- ``lamina``: the ``dedup`` step exactly as a recipe runs it (exact key set + near index, batches).


Builds >= 50 MB of text from ../shared/data (documents are random runs of real sentences), plants
near-duplicate copies (5-20 % of words replaced, deleted or inserted), then runs each method in its
own process (so peak RSS is its own) with the same shingles (word bigrams), the same 192
permutations in 64 bands x 3 rows, and the same verification threshold, keeping first occurrences.

    .venv/bin/python bench/data_dedup.py [--mb 50] [--seed 0]

Prints a table, and writes bench/results/data_dedup.json and .md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
THRESHOLD, NUM_PERM, BANDS, NGRAM = 0.35, 192, 64, 2


def corpus_sentences() -> list[str]:
    texts: list[str] = [(SHARED / "text" / "tinyshakespeare.txt").read_text()]
    for line in open(SHARED / "sft" / "gsm8k" / "train.jsonl"):
        row = json.loads(line)
        texts.append(row["question"] + " " + row["answer"])
    for line in open(SHARED / "sft" / "dolly-open_qa" / "dolly-open_qa.shared.jsonl"):
        texts.append(json.loads(line)["text"])
    squad = json.loads((SHARED / "rag" / "squad-dev-shared.json").read_text())
    texts += [p["context"] for a in squad["data"] for p in a["paragraphs"]]
    for path in (SHARED / "preference" / "hh-rlhf").glob("*.jsonl.gz"):
        with gzip.open(path, "rt") as fh:
            texts += [json.loads(line)["chosen"] for line in fh]
    sentences = {s.strip() for t in texts for s in re.split(r"(?<=[.!?])\s+|\n+", t) if len(s.split()) >= 4}
    return sorted(sentences)


def edit(words: list[str], frac: float, vocab: list[str], rng: random.Random) -> list[str]:
    words = list(words)
    for _ in range(max(1, round(len(words) * frac))):
        i = rng.randrange(len(words))
        op = rng.random()
        if op < 0.5:
            words[i] = rng.choice(vocab)
        elif op < 0.75 and len(words) > 5:
            del words[i]
        else:
            words.insert(i, rng.choice(vocab))
    return words


def make_data(path: Path, target_mb: float, seed: int) -> dict:
    rng = random.Random(seed)
    sentences = corpus_sentences()
    vocab = sorted({w for s in sentences[:20000] for w in s.split()})
    docs: list[str] = []
    size = 0
    target = target_mb * 1e6 / 1.2  # originals; planted copies add ~20 %
    while size < target:
        doc = " ".join(rng.choice(sentences) for _ in range(rng.randint(6, 16)))
        docs.append(doc)
        size += len(doc.encode())
    originals = len(docs)
    pairs = []
    for i in rng.sample(range(originals), originals // 5):
        docs.append(" ".join(edit(docs[i].split(), rng.uniform(0.05, 0.20), vocab, rng)))
        pairs.append((i, len(docs) - 1))
    order = list(range(len(docs)))
    rng.shuffle(order)
    position = {old: new for new, old in enumerate(order)}
    with open(path, "w") as out:
        for old in order:
            out.write(json.dumps({"text": docs[old]}) + "\n")
    pairs = [(position[a], position[b]) for a, b in pairs]
    return {"docs": len(docs), "bytes": path.stat().st_size, "pairs": pairs, "sentences": len(sentences)}


# -- the methods (each runs in a child process) -----------------------------------------------------


def run_lamina(texts: list[str]) -> list[int]:
    """The recipe step ``{dedup: {method: near}}`` over batches of records, as ingest runs it."""
    sys.path.insert(0, str(ROOT / "src"))
    import lamina.data.pipeline  # noqa: F401 - registers the built-in steps
    from lamina.data.steps import StepContext, StepStats, make_step

    step = make_step(
        {"dedup": {"method": "near", "threshold": THRESHOLD, "num_perm": NUM_PERM, "bands": BANDS}}
    )
    step.start(StepContext(text_field="text", seed=1))
    stats = StepStats("dedup")
    removed = []
    for start in range(0, len(texts), 1000):
        batch = [{"text": t, "i": start + k} for k, t in enumerate(texts[start : start + 1000])]
        kept = {r["i"] for r in step.apply(batch, stats)}
        removed += [r["i"] for r in batch if r["i"] not in kept]
    return removed


def run_rensa(texts: list[str]) -> list[int]:
    """rensa with nothing around it: the floor Lamina's step is measured against."""
    import rensa

    sys.path.insert(0, str(ROOT / "src"))
    from lamina.data.dedup import shingles

    lsh = rensa.RMinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, num_bands=BANDS)
    kept: list[object] = []
    removed = []
    for i, text in enumerate(texts):
        m = rensa.RMinHash(num_perm=NUM_PERM, seed=1)
        m.update(shingles(text, NGRAM))
        if any(m.jaccard(kept[k]) >= THRESHOLD for k in lsh.query(m)):
            removed.append(i)
            continue
        lsh.insert(len(kept), m)
        kept.append(m)
    return removed


def run_datasketch(texts: list[str]) -> list[int]:
    """datasketch as documented for bulk use: shared permutations (``MinHash.generator``) and
    ``LeanMinHash`` for stored signatures (no hash function or permutations kept per signature)."""
    from datasketch import LeanMinHash, MinHash, MinHashLSH

    sys.path.insert(0, str(ROOT / "src"))
    from lamina.data.dedup import shingles

    lsh = MinHashLSH(num_perm=NUM_PERM, params=(BANDS, NUM_PERM // BANDS))
    kept: dict[int, LeanMinHash] = {}
    removed = []
    hashed = MinHash.generator(
        ([s.encode() for s in shingles(t, NGRAM)] for t in texts), num_perm=NUM_PERM, seed=1
    )
    for i, m in enumerate(hashed):
        if any(m.jaccard(kept[k]) >= THRESHOLD for k in lsh.query(m)):
            removed.append(i)
            continue
        lean = LeanMinHash(m)
        kept[i] = lean
        lsh.insert(i, lean)
    return removed


METHODS = {"datasketch": run_datasketch, "rensa": run_rensa, "lamina": run_lamina}


def child(method: str, data: Path) -> None:
    texts = [json.loads(line)["text"] for line in open(data)]
    start = time.perf_counter()
    removed = METHODS[method](texts)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"removed": removed, "seconds": seconds, "peak_rss_mb": peak_kb / 1024}))


def end_to_end(data: Path) -> dict:
    """The whole 'lamina data ingest --dedup near' path (parse, normalise, dedup, split, Parquet, report)."""
    with tempfile.TemporaryDirectory() as tmp:
        lamina = [sys.executable, "-m", "lamina"]
        subprocess.run([*lamina, "init", tmp], check=True, capture_output=True)
        start = time.perf_counter()
        done = subprocess.run(
            [*lamina, "-w", tmp, "data", "ingest", str(data), "--name", "bench", "--dedup", "near"],
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
        if done.returncode:
            raise RuntimeError(done.stderr)
        show = json.loads(
            subprocess.run(
                [*lamina, "-w", tmp, "data", "show", "bench", "--json"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
    return {"seconds": seconds, "rows": show["rows"]}


def score(removed: list[int], pairs: list[tuple[int, int]]) -> tuple[float, float]:
    removed_set = set(removed)
    members = {i for pair in pairs for i in pair}
    true_removed = sum(1 for i in removed_set if i in members)
    found = sum(1 for a, b in pairs if a in removed_set or b in removed_set)
    precision = true_removed / len(removed_set) if removed_set else 1.0
    return precision, found / len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=list(METHODS))
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "docs.jsonl"
        print(f"generating ~{args.mb:.0f} MB of text with planted near-duplicates …", flush=True)
        meta = make_data(data, args.mb, args.seed)
        mb = meta["bytes"] / 1e6
        print(f"{meta['docs']:,} documents, {mb:.1f} MB, {len(meta['pairs']):,} planted pairs", flush=True)
        rows = []
        for method in METHODS:
            out = subprocess.run(
                [sys.executable, __file__, "--child", method, "--data", str(data)],
                check=True,
                capture_output=True,
                text=True,
            )
            result = json.loads(out.stdout)
            precision, recall = score(result["removed"], [tuple(p) for p in meta["pairs"]])
            rows.append(
                {
                    "method": method,
                    "precision": precision,
                    "recall": recall,
                    "seconds": result["seconds"],
                    "mb_per_s": mb / result["seconds"],
                    "peak_rss_mb": result["peak_rss_mb"],
                    "removed": len(result["removed"]),
                }
            )
            print(f"  {method}: done in {result['seconds']:.1f} s", flush=True)
        e2e = end_to_end(data)
    by = {r["method"]: r for r in rows}
    speedup = by["lamina"]["mb_per_s"] / by["datasketch"]["mb_per_s"]
    overhead = by["rensa"]["mb_per_s"] / by["lamina"]["mb_per_s"] - 1
    header = (
        "| method | precision | recall | MB/s | seconds | peak RSS (MB) | removed |\n"
        "|---|---|---|---|---|---|---|\n"
    )
    table = header + "".join(
        f"| {r['method']} | {r['precision']:.4f} | {r['recall']:.4f} | {r['mb_per_s']:.2f} | "
        f"{r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['removed']:,} |\n"
        for r in rows
    )
    summary = (
        f"\n{meta['docs']:,} docs, {mb:.1f} MB, {len(meta['pairs']):,} planted pairs; "
        f"Lamina / datasketch throughput: {speedup:.2f}x (target >= 3x, P and R >= 0.95); "
        f"Lamina's step costs {overhead:+.0%} time over rensa alone (exact-key set, batches, records)\n"
        f"End to end `lamina data ingest --dedup near` (parse, normalise, dedup, Parquet, report): "
        f"{e2e['seconds']:.1f} s = {mb / e2e['seconds']:.2f} MB/s, {e2e['rows']:,} rows kept\n"
    )
    record = {
        "data": {k: v for k, v in meta.items() if k != "pairs"},
        "results": rows,
        "speedup": speedup,
        "end_to_end": e2e,
        "settings": {"threshold": THRESHOLD, "num_perm": NUM_PERM, "bands": BANDS, "ngram": NGRAM},
    }
    sys.path.insert(0, str(ROOT / "bench"))
    from machine import machine_info, machine_line, save

    save(
        "data_dedup", record, f"# bench/data_dedup.py\n\n{machine_line(machine_info())}\n\n" + table + summary
    )


if __name__ == "__main__":
    main()
