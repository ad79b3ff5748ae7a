"""Reward-model benchmark: does a reward model trained with Lamina (TRL's ``RewardTrainer`` on the
packaged all-MiniLM-L6-v2) rank the chosen answer above the rejected one on hh-rlhf pairs it never
saw? Reported per subset, beside two baselines measured in the same run: chance (50 %) and "the
longer answer wins" (hh-rlhf's helpful subsets reward length).

Data: ``../shared/data/preference/hh-rlhf`` (four test files; the 2,000 helpful-base pairs held back
by the data's curators are not here). The split is by opening human turn (``by: group``), so no
dialogue of a held-out pair shares its start with a training pair. Writes bench/results/reward.json
and reward.md (the CPU beside every figure).

    .venv/bin/python bench/reward.py [--pairs 3000] [--steps 190] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
SHARED = ROOT.parent / "shared" / "data" / "preference" / "hh-rlhf"

from machine import machine_info, machine_line, save  # noqa: E402


def rows(limit: int, subsets: list[str] | None = None) -> list[dict]:
    """Pairs from every subset (the same share of each; ``subsets``: only those whose name starts so),
    tagged with subset and opening turn."""
    files = sorted(p for p in SHARED.glob("*.jsonl.gz") if not subsets or p.name.startswith(tuple(subsets)))
    out = []
    for path in files:
        subset = path.name.split("-test")[0]
        for line in list(gzip.open(path, "rt"))[: limit // len(files)]:
            row = json.loads(line)
            out.append({**row, "subset": subset, "opening": row["chosen"].split("\n\nAssistant:")[0]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=3000, help="pairs read (train + held out)")
    parser.add_argument("--steps", type=int, default=190)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--subsets", default="", help="train and test only on these subsets (e.g. helpful)")
    parser.add_argument("--name", default="reward", help="results file name (bench/results/NAME.md)")
    args = parser.parse_args()

    from lamina.core.errors import LaminaError
    from lamina.core.workspace import Workspace
    from lamina.data.pipeline import build_dataset
    from lamina.data.recipe import Recipe
    from lamina.data.versions import iter_rows
    from lamina.training.preference import PreferenceConfig, RewardScorer, pair_of, train_reward

    info = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        ws, _ = Workspace.init(Path(tmp) / "ws")
        source = Path(tmp) / "pairs.jsonl"
        picked = [x for x in args.subsets.split(",") if x]
        source.write_text("".join(json.dumps(r) + "\n" for r in rows(args.pairs, picked)))
        recipe = Recipe(source=str(source), text_field="chosen",
                        split={"fractions": {"test": 0.25}, "by": "group", "field": "opening"})  # fmt: skip
        dataset = build_dataset(ws, "hh", recipe).version
        cfg = PreferenceConfig(max_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                               max_tokens=args.max_tokens)  # fmt: skip
        started = time.perf_counter()
        version = train_reward(ws, dataset.ref, "rm", cfg=cfg, track=False)
        train_s = time.perf_counter() - started
        scorer = RewardScorer.load(ws, "rm")
        held = list(iter_rows(ws, dataset, "test"))
        train_n = sum(1 for _ in iter_rows(ws, dataset, "train"))
        pairs, kept = [], []
        for row in held:  # a few hh-rlhf dialogues do not parse (training skips them too)
            try:
                pairs.append(pair_of(row))
                kept.append(row)
            except LaminaError:
                pass
        held = kept
        chosen = scorer.score_messages([p["prompt"] + p["chosen"] for p in pairs])
        rejected = scorer.score_messages([p["prompt"] + p["rejected"] for p in pairs])
        ws.close()
    longer = np.array([len(p["chosen"][0]["content"]) > len(p["rejected"][0]["content"]) for p in pairs])
    won = chosen > rejected
    subsets = sorted({r["subset"] for r in held})
    table = []
    for subset in [*subsets, "all"]:
        mask = np.array([subset in ("all", r["subset"]) for r in held])
        table.append({"subset": subset, "pairs": int(mask.sum()), "reward_model": float(won[mask].mean()),
                      "longer_wins": float(longer[mask].mean())})  # fmt: skip
    report = {"machine": info, "args": vars(args), "train_pairs": train_n, "train_s": train_s,
              "version": version.ref, "table": table}  # fmt: skip
    lines = [
        "# Reward model on hh-rlhf pairs it never saw",
        "",
        f"Machine: {machine_line(info)}",
        f"Command: `.venv/bin/python bench/reward.py --pairs {args.pairs} --steps {args.steps} "
        f"--max-tokens {args.max_tokens}" + (f" --subsets {args.subsets}" if args.subsets else "") + "`",
        f"Trained on {train_n} pairs ({args.steps} steps of {args.batch_size}, lr {args.lr}, last "
        f"{args.max_tokens} tokens of each dialogue) in {train_s:.0f} s. Target: ≥ 60 % (chance 50 %).",
        "",
        "| subset | held-out pairs | reward model | longer answer wins |",
        "|---|---:|---:|---:|",
        *[
            f"| {r['subset']} | {r['pairs']} | {r['reward_model']:.3f} | {r['longer_wins']:.3f} |"
            for r in table
        ],
    ]
    save(args.name, report, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
