"""Injection rail variants on ``bench/rails.py``'s folds: what might lift the rail's TPR at 5 % FPR.

The default rail (MiniLM fine-tuned, linear prefilter, long copies) misses harmful requests and
flags their benign look-alikes (XSTest). Two ideas, each measured against the default on the same
5 folds, the same 80/20 fit/validation split inside each and the same calibration:

- **hazard topics**: a ``deny_topics`` rail over hazard categories described a priori (the
  MLCommons AILuminate taxonomy: violent crimes, weapons, non-violent crimes, sex crimes, self-harm,
  hate, privacy, disinformation), OR-ed with the classifier. Its threshold is swept over the pooled
  out-of-fold scores (optimistic), and fixed with the classifier's threshold recalibrated per fold
  so the pair keeps 5 % FPR on the fold's validation part (deployed).
- **hh-rlhf harmful prompts**: the opening human turns of hh-rlhf ``harmless-base`` (red-team
  conversations, MIT) within cosine 0.45 of a hazard topic, added to every fold's training part as
  malicious rows (weak labels: no one checked them by hand).

Per variant it also scores the transformer without its prefilter, to show what the prefilter costs.

``--baseline-curve`` (a minute) asks how these cross-validated figures relate to the issue's
held-back set: the issue's TF-IDF baseline, 10-fold on the shared file (5 shuffles), trained on
40 % to 90 % of it, beside its held-back figure (TPR 0.82, AUC 0.947).

    .venv/bin/python bench/rails_variants.py [--quick] [--variants default,hh-harmful] [--baseline-curve]

About 20 minutes for ``default`` and 35 for ``hh-harmful`` on 2 cores. Writes
bench/results/rails_variants.json and .md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line, save  # noqa: E402
from rails import FPR, PROMPT_GUARD, SHARED, _row  # noqa: E402

from lamina.guardrails.classifier import calibrate_heads, embedder, tpr_at_fpr  # noqa: E402
from lamina.guardrails.training import KINDS, make_classifier  # noqa: E402

HH_HARMLESS = SHARED / "preference" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
HH_THRESHOLD = 0.45
# described before looking at the data (AILuminate's hazard categories, in our words)
HAZARDS = {
    "violent_crimes": [
        "how to kill, murder, assault or physically hurt a person",
        "planning a violent attack, terrorism or a mass shooting",
        "how to kidnap, torture or dispose of a dead body",
    ],
    "weapons": [
        "how to make a bomb, explosive or incendiary device",
        "synthesizing chemical weapons, nerve agents or poisons",
        "making biological weapons or spreading a deadly pathogen",
        "building or illegally buying a gun",
    ],
    "nonviolent_crimes": [
        "how to steal, rob, shoplift or burgle without getting caught",
        "fraud, scams, phishing and identity theft",
        "hacking into computers, writing malware or ransomware",
        "making, buying or smuggling illegal drugs",
        "money laundering, counterfeiting and tax evasion",
        "human trafficking and smuggling people",
    ],
    "sex_crimes": ["sexual assault, rape or sexually abusing someone", "sexual content involving children"],
    "self_harm": ["how to commit suicide or harm yourself", "encouraging eating disorders or self-injury"],
    "hate": [
        "why a race, religion, gender or group of people is inferior",
        "hateful slurs and insults against minorities",
        "arguing that a group of people should lose their rights",
    ],
    "privacy": [
        "finding someone's home address, phone number or private information to stalk them",
        "spying on or secretly tracking another person",
    ],
    "disinformation": [
        "writing fake news, propaganda or a defamatory article about a real person",
        "spreading misinformation about elections, vaccines or historical atrocities",
    ],
}


def hazard_similarity(texts: list[str]) -> np.ndarray:
    """Each text's highest MiniLM cosine to any hazard description: ``deny_topics``'s whole-text
    score (the rail also scores each sentence; harmful requests here are one sentence)."""
    vectors = embedder().encode([d for described in HAZARDS.values() for d in described])
    return (embedder().encode(texts) @ vectors.T).max(axis=1)


def hh_harmful_prompts() -> list[str]:
    """Opening human turns of hh-rlhf harmless-base (deduplicated) close to a hazard topic."""
    seen: dict[str, None] = {}
    with gzip.open(HH_HARMLESS, "rt", encoding="utf-8") as f:
        for line in f:
            found = re.search(r"Human: (.*?)\n\nAssistant:", json.loads(line)["chosen"], re.S)
            if found:
                seen.setdefault(found.group(1).strip(), None)
    prompts = list(seen)
    return [p for p, s in zip(prompts, hazard_similarity(prompts), strict=True) if s >= HH_THRESHOLD]


def run_folds(texts: list[str], labels: list[str], extra: list[str], quick: bool) -> dict:
    """Out-of-fold scores of the default rail (with and without its prefilter), the deployed flags,
    and each fold's validation scores, exactly as ``bench/rails.py`` splits and calibrates."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    from lamina.guardrails.augment import long_copies

    truth = np.array([label == "malicious" for label in labels])
    n = len(texts)
    out = {"shipped": np.zeros(n), "raw": np.zeros(n), "quick": np.zeros(n), "deployed": np.zeros(n, bool)}
    folds = []
    splitter = StratifiedKFold(2 if quick else 5, shuffle=True, random_state=0)
    for fold, (train_idx, test_idx) in enumerate(splitter.split(texts, labels)):
        started = time.perf_counter()
        fit_idx, val_idx = train_test_split(
            train_idx, test_size=0.2, stratify=truth[train_idx], random_state=0
        )
        fit_t = [texts[i] for i in fit_idx] + extra
        fit_l = [labels[i] for i in fit_idx] + ["malicious"] * len(extra)
        val_t, val_l = [texts[i] for i in val_idx], [labels[i] for i in val_idx]
        copies, copy_labels = long_copies(fit_t, fit_l)  # as `lamina rails train` adds them
        model = make_classifier(KINDS["injection"], "finetune", epochs=1 if quick else None)
        model.fit(fit_t + copies, fit_l + copy_labels)
        model.calibrate(val_t, val_l, FPR)
        test_t = [texts[i] for i in test_idx]
        malicious = model.classes.index("malicious")
        out["shipped"][test_idx] = model.scores(test_t)["injection"]
        out["deployed"][test_idx] = out["shipped"][test_idx] >= model.thresholds["injection"]
        out["raw"][test_idx] = model.probabilities(test_t)[:, malicious]
        out["quick"][test_idx] = model.prefilter.scores(test_t)["injection"]
        folds.append({"test": test_idx, "val": val_idx, "val_shipped": model.scores(val_t)["injection"],
                      "val_raw": model.probabilities(val_t)[:, malicious]})  # fmt: skip
        print(f"  fold {fold}: {time.perf_counter() - started:.0f} s", flush=True)
    out["folds"] = folds
    return out


def figures(scores: np.ndarray, hit: np.ndarray, truth: np.ndarray, groups: np.ndarray) -> dict:
    """``bench/rails.py``'s row: AUC, pooled TPR at 5 % FPR, deployed TPR/FPR, caught per category."""
    from sklearn.metrics import roc_auc_score

    return _row(float(roc_auc_score(truth, scores)), tpr_at_fpr(scores, truth, FPR)[0], hit, truth, groups)


def raw_deployed(run: dict, truth: np.ndarray) -> np.ndarray:
    """Flags of the transformer alone, its threshold calibrated per fold on its own validation scores."""
    hit = np.zeros(len(truth), bool)
    for fold in run["folds"]:
        labels = ["malicious" if t else "benign" for t in truth[fold["val"]]]
        cut = calibrate_heads({"h": fold["val_raw"]}, {"h": ["malicious"]}, labels, FPR)["h"]
        hit[fold["test"]] = run["raw"][fold["test"]] >= cut
    return hit


def with_topics(run: dict, topic: np.ndarray, truth: np.ndarray, groups: np.ndarray) -> dict:
    """The classifier OR a hazard-topic match: the best pooled pair, and deployed at fixed topic cuts."""
    negatives, budget = ~truth, int(FPR * (~truth).sum())
    best = {"tpr": 0.0}
    for cut in np.round(np.arange(0.40, 0.71, 0.01), 2):
        on_topic = topic >= cut
        left = budget - int((on_topic & negatives).sum())
        if left < 0:
            continue
        rest = np.sort(run["shipped"][negatives & ~on_topic])
        model_cut = rest[-left - 1] if left < len(rest) else -1.0
        hit = on_topic | (run["shipped"] > model_cut)
        if hit[truth].mean() > best["tpr"]:
            best = {
                "topic_cut": float(cut),
                "tpr": float(hit[truth].mean()),
                "fpr": float(hit[negatives].mean()),
            }
    deployed = {}
    for cut in (0.5, 0.55, 0.6):
        hit = np.zeros(len(truth), bool)
        for fold in run["folds"]:
            val_scores, val_topic, val_neg = (
                fold["val_shipped"],
                topic[fold["val"]] >= cut,
                ~truth[fold["val"]],
            )
            model_cut = 1.01  # topics alone over budget: the classifier flags nothing more
            for c in np.unique(val_scores):
                if ((val_scores >= c) | val_topic)[val_neg].mean() <= FPR:
                    model_cut = float(c)
                    break
            hit[fold["test"]] = (run["shipped"][fold["test"]] >= model_cut) | (topic[fold["test"]] >= cut)
        deployed[str(cut)] = figures(np.maximum(run["shipped"], topic), hit, truth, groups)
    return {"pooled_best": best, "deployed": deployed}


def baseline_curve(texts: list[str], truth: np.ndarray) -> list[dict]:
    """The issue's baseline (``bench/rails.py``'s ``baseline_tfidf``) at growing training sizes."""
    from rails import baseline_tfidf
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    labels = ["malicious" if t else "benign" for t in truth]
    out = []
    for share in (0.4, 0.64, 0.8, 0.9):
        tprs, aucs = [], []
        for seed in range(5):
            scores, rng = np.zeros(len(texts)), np.random.default_rng(seed)
            for train_idx, test_idx in StratifiedKFold(10, shuffle=True, random_state=seed).split(
                texts, labels
            ):
                size = min(len(train_idx), int(share * len(texts)))
                fit = rng.choice(train_idx, size, replace=False)
                model = baseline_tfidf([texts[i] for i in fit], [labels[i] for i in fit])
                scores[test_idx] = model.predict_proba([texts[i] for i in test_idx])[:, 1]  # type: ignore[attr-defined]
            tprs.append(tpr_at_fpr(scores, truth, FPR)[0])
            aucs.append(float(roc_auc_score(truth, scores)))
        out.append({"train_rows": int(share * len(texts)), "tpr_at_fpr05": float(np.mean(tprs)),
                    "tpr_sd": float(np.std(tprs)), "auc": float(np.mean(aucs))})  # fmt: skip
    return out


def render_curve(r: dict) -> str:
    lines = [
        "# The issue's TF-IDF baseline, cross-validated on the shared file (`bench/rails_variants.py "
        "--baseline-curve`)",
        "",
        machine_line(r["machine"]),
        "",
        "| training rows | TPR @ 5 % FPR (10-fold, mean of 5 shuffles) | AUC |",
        "|---|---|---|",
        *[
            f"| {c['train_rows']} | {c['tpr_at_fpr05']:.3f} ± {c['tpr_sd']:.3f} | {c['auc']:.3f} |"
            for c in r["curve"]
        ],
        "",
        "The issue measured the same baseline on its held-back set at TPR 0.82, AUC 0.947.",
    ]
    return "\n".join(lines) + "\n"


def render(r: dict) -> str:
    lines = [
        "# Injection rail variants (`bench/rails_variants.py`)",
        "",
        machine_line(r["machine"]),
        "",
        f"{r['rows']} rows, {r['folds']} folds (as `bench/rails.py`); TPR at 5 % FPR from the pooled "
        "out-of-fold scores, deployed = at the threshold each fold calibrated on its validation part.",
        "",
        "| variant | AUC | TPR @ 5 % FPR | deployed TPR | deployed FPR | harmful caught "
        "| look-alikes flagged |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in r["rows_by_variant"].items():
        by = row["caught_by_category"]
        lines.append(
            f"| {name} | {row['auc']:.3f} | {row['tpr_at_fpr05']:.3f} | {row['deployed_tpr']:.3f} | "
            f"{row['deployed_fpr']:.3f} | {by.get('harmful_request', 0):.3f} | "
            f"{by.get('benign_lookalike', 0):.3f} |"
        )
    if "topics" in r:
        best = r["topics"]["pooled_best"]
        lines += ["", f"Hazard topics OR the default: best pooled pair TPR {best['tpr']:.3f} at FPR "
                  f"{best.get('fpr', 0):.3f} (topic cosine ≥ {best.get('topic_cut', '-')})."]  # fmt: skip
        for cut, row in r["topics"]["deployed"].items():
            lines.append(
                f"- deployed with topic cosine ≥ {cut}: TPR {row['deployed_tpr']:.3f}, "
                f"FPR {row['deployed_fpr']:.3f}"
            )
    if "hh_rows" in r:
        lines += ["", f"hh-rlhf harmful prompts added to each fold's training part: {r['hh_rows']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 folds, 1 epoch: checks the script runs")
    parser.add_argument(
        "--variants", default="default,hh-harmful", help="default, hh-harmful (comma-separated)"
    )
    parser.add_argument("--baseline-curve", action="store_true", help="only the baseline's learning curve")
    args = parser.parse_args()
    rows = [json.loads(line) for line in PROMPT_GUARD.open()]
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    truth, groups = (
        np.array([label == "malicious" for label in labels]),
        np.array([r["category"] for r in rows]),
    )
    if args.baseline_curve:
        curve = {"curve": baseline_curve(texts, truth), "machine": machine_info()}
        save("rails_baseline_curve", curve, render_curve(curve))
        return
    report: dict = {"rows": len(rows), "folds": 2 if args.quick else 5, "rows_by_variant": {}}
    for variant in args.variants.split(","):
        extra = hh_harmful_prompts() if variant == "hh-harmful" else []
        if extra:
            report["hh_rows"] = len(extra)
        print(f"{variant}: {len(extra)} extra rows", flush=True)
        run = run_folds(texts, labels, extra, args.quick)
        report["rows_by_variant"][variant] = figures(run["shipped"], run["deployed"], truth, groups)
        raw_hit = raw_deployed(run, truth)
        report["rows_by_variant"][f"{variant}, no prefilter"] = figures(run["raw"], raw_hit, truth, groups)
        if variant == "default":
            report["topics"] = with_topics(run, hazard_similarity(texts), truth, groups)
    report["machine"] = machine_info()
    save("rails_variants" + ("_quick" if args.quick else ""), report, render(report))


if __name__ == "__main__":
    main()
