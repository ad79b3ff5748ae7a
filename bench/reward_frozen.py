"""Is there more signal in hh-rlhf than the fine-tuned reward model finds? A probe beside
``bench/reward.py``: the packaged all-MiniLM-L6-v2 kept frozen, a logistic regression on the
difference of (answer embedding, question × answer, cosine, log length) between the chosen and the
rejected answer, the same split rule (by opening human turn, a quarter held out). If a linear head
on frozen features did better than fine-tuning, the fine-tuning would be at fault; if it does worse,
the data (6,552 test-split pairs; the 160k training split is not in ../shared) and the 22M-parameter
encoder are the limit.

    .venv/bin/python bench/reward_frozen.py       (about 6 minutes on 2 cores: it embeds 19,656 texts)
"""

from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
SHARED = ROOT.parent / "shared" / "data" / "preference" / "hh-rlhf"

from machine import machine_info, machine_line, save  # noqa: E402


def features(question: np.ndarray, answer: np.ndarray, texts: list[str]) -> np.ndarray:
    cosine = (question * answer).sum(1, keepdims=True)
    length = np.log1p(np.array([[len(t)] for t in texts]))
    return np.hstack([answer, question * answer, cosine, length])


def main() -> None:
    from sklearn.linear_model import LogisticRegression

    from lamina.core.errors import LaminaError
    from lamina.rag.embeddings import Embedder
    from lamina.training.preference import pair_of

    rows = []
    for path in sorted(SHARED.glob("*.jsonl.gz")):
        subset = path.name.split("-test")[0]
        for line in gzip.open(path, "rt"):
            raw = json.loads(line)
            try:
                pair = pair_of(raw)
            except LaminaError:
                continue
            question = [m["content"] for m in pair["prompt"] if m["role"] == "user"][-1]
            opening = raw["chosen"].split("\n\nAssistant:")[0]
            rows.append(
                (subset, question, pair["chosen"][0]["content"], pair["rejected"][0]["content"], opening)
            )
    openings = sorted({r[4] for r in rows})
    random.Random(0).shuffle(openings)
    held_out = set(openings[: len(openings) // 4])
    embed = Embedder().encode
    q, c, r = (embed([row[i] for row in rows]) for i in (1, 2, 3))
    diff = features(q, c, [row[2] for row in rows]) - features(q, r, [row[3] for row in rows])
    test = np.array([row[4] in held_out for row in rows])
    subsets = np.array([row[0] for row in rows])
    x = np.vstack([diff[~test], -diff[~test]])
    y = np.r_[np.ones((~test).sum()), np.zeros((~test).sum())]
    table = []
    for strength in (0.01, 0.1, 1.0):
        model = LogisticRegression(C=strength, max_iter=2000, fit_intercept=False).fit(x, y)
        won = diff[test] @ model.coef_[0] > 0
        per = {s: float(won[subsets[test] == s].mean()) for s in sorted(set(subsets))}
        table.append({"C": strength, "all": float(won.mean()), **per})
    names = sorted(set(subsets))
    info = machine_info()
    lines = [
        "# Frozen MiniLM + logistic regression on hh-rlhf pairs it never saw (a probe)",
        "",
        f"Machine: {machine_line(info)}",
        "Command: `.venv/bin/python bench/reward_frozen.py`",
        f"{(~test).sum()} training pairs, {test.sum()} held out (by opening human turn). Compare "
        "bench/results/reward.md (the fine-tuned reward model, same data).",
        "",
        "| C | all | " + " | ".join(names) + " |",
        "|---:|---:|" + "---:|" * len(names),
        *[f"| {t['C']} | {t['all']:.3f} | " + " | ".join(f"{t[n]:.3f}" for n in names) + " |" for t in table],
    ]
    save("reward_frozen", {"table": table, "train_pairs": int((~test).sum()), "held_out": int(test.sum())},
         "\n".join(lines) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
