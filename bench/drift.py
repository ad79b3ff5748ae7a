"""Drift benchmark: does ``lamina.monitoring.drift.check`` fire on planted shifts (power) and stay
quiet on windows drawn like the reference (false alarms), over windows of 500 requests?

- reference: 1,000 questions people ask an assistant (Dolly open QA, ``../shared/data/sft``);
- no shift: 500 other Dolly questions per window (disjoint from the reference);
- topic: grade-school maths word problems (GSM8K) mixed into the window;
- length: Dolly questions sent with a pasted answer as context (``Context: … Question: …``);
- language: German and French sentences (Faker's word lists: a language change, not real prose).

Each shift is planted at 10 %, 30 % and 100 % of a window; each cell is ``--trials`` windows, each
checked at alpha 0.05 (Bonferroni over the three tests). Embeddings are MiniLM, computed once per
pool. Writes bench/results/drift.json and drift.md (the CPU beside every figure).

    .venv/bin/python bench/drift.py [--trials 40]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
SHARED = ROOT.parent / "shared" / "data"
WINDOW, REFERENCE = 500, 1000

from machine import machine_info, machine_line, save  # noqa: E402


def pools(rng: random.Random) -> dict[str, list[str]]:
    dolly = [
        json.loads(line) for line in (SHARED / "sft" / "dolly-open_qa" / "dolly-open_qa.shared.jsonl").open()
    ]
    pairs = []
    for row in dolly:
        question, _, answer = row["text"].partition("### Assistant:")
        pairs.append((question.replace("### Human:", "").strip(), answer.strip()))
    rng.shuffle(pairs)
    questions = [q for q, _ in pairs]
    gsm = [json.loads(line)["question"] for line in (SHARED / "sft" / "gsm8k" / "train.jsonl").open()]
    from faker import Faker

    foreign = [Faker(loc).sentence(nb_words=rng.randint(6, 18)) + "?" for loc in ("de_DE", "fr_FR")
               for _ in range(500)]  # fmt: skip
    return {
        "reference": questions[:REFERENCE],
        "none": questions[REFERENCE:],
        "topic": rng.sample(gsm, 1500),
        "length": [f"Context: {a}\n\nQuestion: {q}" for q, a in pairs[REFERENCE:] if len(a) > 200],
        "language": foreign,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=40)
    args = parser.parse_args()
    from lamina.monitoring.drift import check
    from lamina.rag.embeddings import Embedder

    rng = random.Random(0)
    texts = pools(rng)
    embedder = Embedder()
    started = time.perf_counter()
    vectors = {name: embedder.encode(pool) for name, pool in texts.items()}
    embed_s = time.perf_counter() - started
    print(f"embedded {sum(len(p) for p in texts.values())} texts in {embed_s:.0f} s", flush=True)
    sizes = {k: len(v) for k, v in texts.items()}
    results: dict = {"window": WINDOW, "reference": REFERENCE, "trials": args.trials, "cells": {},
                     "pool_sizes": sizes, "embed_seconds": embed_s}  # fmt: skip
    check_seconds = []
    for shift in ("none", "topic", "length", "language"):
        for share in (0.0,) if shift == "none" else (0.1, 0.3, 1.0):
            fired, by_test = 0, {"meaning": 0, "length": 0, "vocabulary": 0}
            for trial in range(args.trials):
                pick = random.Random(zlib.crc32(f"{shift}:{share}:{trial}".encode()))  # reproducible
                planted = round(WINDOW * share)
                base = pick.sample(range(len(texts["none"])), WINDOW - planted)
                moved = pick.sample(range(len(texts[shift])), planted) if planted else []
                window = [texts["none"][i] for i in base] + [texts[shift][i] for i in moved]
                window_vectors = np.vstack(
                    [vectors["none"][base]] + ([vectors[shift][moved]] if moved else [])
                )
                t = time.perf_counter()
                report = check(texts["reference"], window, reference_vectors=vectors["reference"],
                               window_vectors=window_vectors, seed=trial)  # fmt: skip
                check_seconds.append(time.perf_counter() - t)
                fired += report.drifted
                for test in report.tests:
                    by_test[test.name] += test.p_value < report.alpha / len(report.tests)
            key = f"{shift}@{share:.0%}" if shift != "none" else "none"
            results["cells"][key] = {"rate": fired / args.trials,
                                     "by_test": {k: v / args.trials for k, v in by_test.items()}}  # fmt: skip
            print(key, results["cells"][key], flush=True)
    results["check_seconds_p50"] = float(np.median(check_seconds))
    save("drift", results, render({**results, "machine": machine_info()}))


def render(r: dict) -> str:
    lines = [
        "# Drift benchmark (`bench/drift.py`)",
        "",
        machine_line(r["machine"]),
        "",
        f"Reference {r['reference']} Dolly questions; windows of {r['window']} requests; {r['trials']} "
        "windows per cell; alpha 0.05 with Bonferroni over three tests. *Rate* is the share of windows "
        "where the check fired: the false-alarm rate on the `none` row, the power on the others.",
        "",
        "| window | fired | meaning (MMD) | length (PSI) | vocabulary (PSI) |",
        "|---|---|---|---|---|",
    ]
    for key, cell in r["cells"].items():
        b = cell["by_test"]
        lines.append(
            f"| {key} | {cell['rate']:.3f} | {b['meaning']:.3f} | {b['length']:.3f} | {b['vocabulary']:.3f} |"
        )
    lines += [
        "",
        "Target: power ≥ 0.9 on planted shifts at a false-alarm rate ≤ 0.05, windows of 500.",
        f"Embedding the pools took {r['embed_seconds']:.0f} s; one check (three tests, 200 permutations "
        f"each, embeddings given) {r['check_seconds_p50'] * 1000:.0f} ms p50.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
