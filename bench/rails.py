"""Guardrails benchmark: how well the rails catch what they should, and what they cost.

- **Injection / jailbreak** (``../shared/data/guardrails/prompt-guard.shared.jsonl``): 5-fold
  stratified cross-validation. In each fold the methods train on 80 % of the training part,
  calibrate their threshold (5 % false positives) on the other 20 %, and are scored on the held-out
  fold: the *deployed* TPR/FPR use that calibrated threshold (it never saw the fold); the AUC and
  "TPR at FPR 5 %" use the pooled out-of-fold scores, comparable with the issue's baselines.
  Methods: the issue's TF-IDF + logistic regression; Lamina's linear model (word + character
  TF-IDF); the same plus MiniLM embeddings; Lamina's default (MiniLM fine-tuned, with the linear
  model as a prefilter); and the default input rail set (heuristics or that model).
- **Toxicity** (``hate-speech-offensive.shared.csv``): one stratified 80/20 split (seed 0). The
  toxic head is scored against the *neither* tweets (FPR), the hate head both against every tweet
  that is not hate (the issue's "hate speech alone") and against the *neither* tweets. Lamina's
  linear model and its default (MiniLM fine-tuned, ~12 min here) learn from the annotators' vote
  counts; the linear model also from majority labels alone (and the fine-tuned one with
  ``--toxicity-finetune``). *Deployed* = at the threshold calibrated on a validation part of the
  training split. A 5-fold table for the linear models (fine-tuning five times would take an hour).
- **PII**: running text generated with Faker (seed 0): names, e-mails, phones, cards, IBANs, street
  addresses; per-entity recall and precision. Names from locales the gazetteer knows and from ones
  it does not are reported apart.
- **Latency**: the default input rail set on a 500-token prompt in-process, and through a real
  ``lamina serve`` (the same server, rails on for user keys and off for the admin key by a policy
  rule; requests interleaved): added p50 per chat request, and streaming TTFT with output rails.

    .venv/bin/python bench/rails.py [--quick] [--toxicity-finetune] [--injection-only | --toxicity-only]

Writes bench/results/rails.json and rails.md (the CPU beside every figure).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
SHARED = ROOT.parent / "shared" / "data"
PROMPT_GUARD = SHARED / "guardrails" / "prompt-guard.shared.jsonl"
HATE = SHARED / "guardrails" / "hate-speech-offensive.shared.csv"
SHAKESPEARE = SHARED / "text" / "tinyshakespeare.txt"
ADMIN = "bench-admin-key"
FPR = 0.05

from machine import RESULTS, machine_info, machine_line, save  # noqa: E402

from lamina.guardrails.classifier import TextClassifier, tpr_at_fpr  # noqa: E402
from lamina.guardrails.training import KINDS, make_classifier, votes_of  # noqa: E402

# the issue's figures for its baselines, measured on held-back data drawn like the shared sets
ISSUE = {
    "injection_tfidf_tpr": 0.82,
    "injection_tfidf_auc": 0.947,
    "injection_minilm_tpr": 0.84,
    "toxic_tfidf_tpr": 0.944,
    "hate_tfidf_tpr": 0.52,
}


# -- injection --------------------------------------------------------------------------------------
def baseline_tfidf(texts: list[str], labels: list[str]) -> object:
    """The issue's baseline: word TF-IDF + logistic regression, nothing else."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    y = [label == "malicious" for label in labels]
    return make_pipeline(TfidfVectorizer(sublinear_tf=True), LogisticRegression(max_iter=3000)).fit(texts, y)


def injection(quick: bool) -> dict:
    from sklearn.model_selection import StratifiedKFold, train_test_split

    from lamina.guardrails.heuristics import InjectionHeuristics
    from lamina.guardrails.rail import RailSpec

    rows = [json.loads(line) for line in PROMPT_GUARD.open()]
    texts = [r["text"] for r in rows]
    labels = [r["label"] for r in rows]
    truth = np.array([label == "malicious" for label in labels])
    groups = np.array([r["category"] for r in rows])
    kind = KINDS["injection"]
    heuristics = InjectionHeuristics(RailSpec(rail="injection_heuristics"))
    heuristic_hit = np.array([heuristics.check(t, {}).acted for t in texts])
    from lamina.guardrails.augment import long_copies

    methods = [
        "tfidf (issue baseline)",
        "linear, no long copies",
        "linear",
        "linear + MiniLM",
        "finetune + prefilter (default)",
    ]
    long_benign, ordinary = long_benign_prompts(), ordinary_prompts()
    outside: dict[str, dict[str, list[float]]] = {m: {"long": [], "ordinary": []} for m in methods}
    oof = {m: np.zeros(len(texts)) for m in methods}
    deployed = {m: np.zeros(len(texts), dtype=bool) for m in methods}
    folds = StratifiedKFold(2 if quick else 5, shuffle=True, random_state=0)
    models: dict[str, object] = {}
    for fold, (train_idx, test_idx) in enumerate(folds.split(texts, labels)):
        fit_idx, val_idx = train_test_split(
            train_idx, test_size=0.2, stratify=truth[train_idx], random_state=0
        )

        def part(idx: np.ndarray) -> tuple[list[str], list[str]]:
            return [texts[i] for i in idx], [labels[i] for i in idx]

        (ft, fl), (vt, vl), (tt, _) = part(fit_idx), part(val_idx), part(test_idx)
        started = time.perf_counter()
        base = baseline_tfidf(ft, fl)
        val_scores = base.predict_proba(vt)[:, 1]
        cut = float(np.quantile(val_scores[[v != "malicious" for v in vl]], 1 - FPR, method="higher"))
        oof[methods[0]][test_idx] = base.predict_proba(tt)[:, 1]
        deployed[methods[0]][test_idx] = oof[methods[0]][test_idx] > cut
        outside[methods[0]]["long"].append(float((base.predict_proba(long_benign)[:, 1] > cut).mean()))
        outside[methods[0]]["ordinary"].append(float((base.predict_proba(ordinary)[:, 1] > cut).mean()))
        candidates = {
            methods[1]: TextClassifier(kind.classes, kind.heads, embed=False),
            methods[2]: TextClassifier(kind.classes, kind.heads, embed=False),
            methods[3]: TextClassifier(kind.classes, kind.heads, embed=True),
            methods[4]: make_classifier(kind, "finetune", epochs=2 if quick else None),
        }
        copies, copy_labels = long_copies(ft, fl)  # as `lamina rails train` adds them
        for name, model in candidates.items():
            if name == methods[1]:
                model.fit(ft, fl)
            else:
                model.fit(ft + copies, fl + copy_labels)
            model.calibrate(vt, vl, FPR)
            scores = model.scores(tt)["injection"]
            oof[name][test_idx] = scores
            threshold = model.thresholds["injection"]
            deployed[name][test_idx] = scores >= threshold
            outside[name]["long"].append(float((model.scores(long_benign)["injection"] >= threshold).mean()))
            outside[name]["ordinary"].append(float((model.scores(ordinary)["injection"] >= threshold).mean()))
            models[name] = model
        print(f"fold {fold}: {time.perf_counter() - started:.0f} s", flush=True)
    out = {"rows": len(texts), "positives": int(truth.sum()), "folds": folds.n_splits, "methods": {}}
    from sklearn.metrics import roc_auc_score

    for name in methods:
        tpr, _ = tpr_at_fpr(oof[name], truth, FPR)
        hit = deployed[name]
        out["methods"][name] = _row(roc_auc_score(truth, oof[name]), tpr, hit, truth, groups)
        out["methods"][name]["long_benign_fpr"] = statistics.mean(outside[name]["long"])
        out["methods"][name]["ordinary_fpr"] = statistics.mean(outside[name]["ordinary"])
    out["long_benign_prompts"], out["ordinary_prompts"] = len(long_benign), len(ordinary)
    default = deployed[methods[4]] | heuristic_hit
    out["methods"]["default input rails (heuristics or finetune)"] = _row(None, None, default, truth, groups)
    out["heuristics_alone"] = {
        "tpr": float(heuristic_hit[truth].mean()),
        "fpr": float(heuristic_hit[~truth].mean()),
    }
    out["_models"] = models  # for the latency section (not saved)
    return out


def long_benign_prompts(n: int = 200) -> list[str]:
    """Pasted Wikipedia paragraphs (SQuAD) with a question or a summary request, and the latency
    section's 2,000-character prompt: long benign text from a source rail training never sees."""
    data = json.loads((SHARED / "rag" / "squad-dev-shared.json").read_text())
    rng = random.Random(1)
    paragraphs = [p for article in data["data"] for p in article["paragraphs"] if p["qas"]]
    layouts = ["{c}\n\n{q}", "Answer from the passage.\nPassage: {c}\nQuestion: {q}", "{q}\n\n{c}"]
    prompts = [
        rng.choice(layouts).format(c=p["context"], q=p["qas"][0]["question"])
        for p in rng.sample(paragraphs, n - 1)
    ]
    return [*prompts, prompt_500_tokens()]


def ordinary_prompts(n: int = 300) -> list[str]:
    """Everyday questions people ask an assistant (Dolly open QA): short benign text from elsewhere."""
    path = SHARED / "sft" / "dolly-open_qa" / "dolly-open_qa.shared.jsonl"
    rows = [json.loads(line) for line in path.open()]
    questions = [r["text"].split("### Assistant:")[0].replace("### Human:", "").strip() for r in rows]
    return random.Random(1).sample(questions, n)


def _row(
    auc: float | None, tpr: float | None, hit: np.ndarray, truth: np.ndarray, groups: np.ndarray
) -> dict:
    return {
        "auc": auc,
        "tpr_at_fpr05": tpr,
        "deployed_tpr": float(hit[truth].mean()),
        "deployed_fpr": float(hit[~truth].mean()),
        "caught_by_category": {g: float(hit[groups == g].mean()) for g in sorted(set(groups))},
    }


# -- toxicity ---------------------------------------------------------------------------------------
def toxicity(quick: bool, finetune: bool) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline

    rows = list(csv.DictReader(HATE.open(encoding="utf-8")))
    if quick:
        rows = random.Random(0).sample(rows, 4000)
    names = {"0": "hate", "1": "offensive", "2": "neither"}
    texts, labels = [r["tweet"] for r in rows], [names[r["class"]] for r in rows]
    idx = np.arange(len(texts))
    train_idx, test_idx = train_test_split(idx, test_size=0.2, stratify=labels, random_state=0)
    fit_idx, val_idx = train_test_split(
        train_idx, test_size=0.1, stratify=[labels[i] for i in train_idx], random_state=0
    )
    test_labels = np.array([labels[i] for i in test_idx])

    def measure(tox: np.ndarray, hate_score: np.ndarray) -> dict:
        return toxicity_figures(tox, hate_score, test_labels)

    out: dict = {
        "rows": len(texts),
        "test_rows": len(test_idx),
        "test_counts": {c: int((test_labels == c).sum()) for c in ("hate", "offensive", "neither")},
    }
    fit_t, fit_l = [texts[i] for i in fit_idx], [labels[i] for i in fit_idx]
    test_t = [texts[i] for i in test_idx]
    base = make_pipeline(TfidfVectorizer(sublinear_tf=True), LogisticRegression(max_iter=3000))
    base.fit(fit_t, [label != "neither" for label in fit_l])
    p = base.predict_proba(test_t)[:, 1]
    hate_base = make_pipeline(TfidfVectorizer(sublinear_tf=True), LogisticRegression(max_iter=3000))
    hate_base.fit(fit_t, [label == "hate" for label in fit_l])
    out["tfidf (issue baseline)"] = measure(p, hate_base.predict_proba(test_t)[:, 1])
    kind = KINDS["toxicity"]
    val_t, val_l = [texts[i] for i in val_idx], [labels[i] for i in val_idx]
    votes = votes_of([rows[i] for i in fit_idx], kind)
    candidates = [
        ("linear, majority labels", "linear", None),
        ("linear + annotator votes", "linear", votes),
        *([("finetune, majority labels", "finetune", None)] if finetune else []),
        ("finetune + annotator votes (default)", "finetune", votes),
    ]
    for name, method, row_votes in candidates:
        started = time.perf_counter()
        model = make_classifier(kind, method, embed=kind.embed)  # as `lamina rails train toxicity` builds it
        if method == "finetune":
            say = lambda line, name=name: print(f"  toxicity {name}: {line}", flush=True)  # noqa: E731
            model.fit(fit_t, fit_l, progress=say, votes=row_votes)
        else:
            model.fit(fit_t, fit_l, votes=row_votes)
        model.calibrate(val_t, val_l, FPR)  # the threshold it deploys with (and the prefilter's cut)
        s = model.scores(test_t)
        out[name] = {**measure(s["toxic"], s["hate"]), "train_s": time.perf_counter() - started}
        deployed = s["toxic"] >= model.thresholds["toxic"]
        out[name]["deployed_toxic_tpr"] = float(deployed[test_labels != "neither"].mean())
        out[name]["deployed_toxic_fpr"] = float(deployed[test_labels == "neither"].mean())
        print(f"toxicity {name} done ({out[name]['train_s']:.0f} s)", flush=True)
    if not quick:
        out["cross_validated"] = toxicity_cv(rows, texts, labels)
    return out


# -- PII --------------------------------------------------------------------------------------------
TEMPLATES = [
    "Please call {PERSON} on {PHONE_NUMBER} before Friday.",
    "Send the invoice to {EMAIL_ADDRESS} and copy {PERSON}.",
    "My card number is {CREDIT_CARD}, expiring next spring.",
    "Wire the deposit to {IBAN_CODE} by the end of the month.",
    "{PERSON} moved to {LOCATION} last year.",
    "You can reach me at {PHONE_NUMBER} or {EMAIL_ADDRESS}.",
    "The package for {PERSON} goes to {LOCATION}.",
    "Refund card {CREDIT_CARD} and notify {EMAIL_ADDRESS}.",
    "Our meeting with {PERSON} is at the office; her number is {PHONE_NUMBER}.",
    "Payment came from account {IBAN_CODE}, held by {PERSON}.",
]
KNOWN_LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES"]  # in the name gazetteer
OTHER_LOCALES = ["sv_SE", "pl_PL", "fi_FI", "da_DK", "cs_CZ"]  # not in it


def toxicity_cv(rows: list[dict], texts: list[str], labels: list[str]) -> dict:
    """Majority labels against annotator votes, 5-fold on every tweet: the one split above holds 200
    hate tweets, too few to tell a few points apart."""
    from sklearn.model_selection import StratifiedKFold

    kind = KINDS["toxicity"]
    votes = votes_of(rows, kind)
    y = np.array(labels)
    oof = {
        "linear, majority labels": np.zeros((len(y), 2)),
        "linear + annotator votes": np.zeros((len(y), 2)),
    }
    for train_idx, test_idx in StratifiedKFold(5, shuffle=True, random_state=1).split(texts, y):
        for name, scores in oof.items():
            fold_votes = votes[train_idx] if votes is not None and "votes" in name else None
            model = TextClassifier(kind.classes, kind.heads, embed=False)
            model.fit([texts[i] for i in train_idx], list(y[train_idx]), votes=fold_votes)
            s = model.scores([texts[i] for i in test_idx])
            scores[test_idx, 0], scores[test_idx, 1] = s["toxic"], s["hate"]
    methods = {name: toxicity_figures(o[:, 0], o[:, 1], y) for name, o in oof.items()}
    return {"hate_rows": int((y == "hate").sum()), "methods": methods}


def toxicity_figures(tox: np.ndarray, hate_score: np.ndarray, labels: np.ndarray) -> dict:
    """TPR at 5 % FPR: toxic (negatives: the neither tweets), hate against every other tweet and
    against the neither ones; and the share of hate tweets the toxic threshold catches."""
    neither, hate = labels == "neither", labels == "hate"
    both = hate | neither
    toxic_tpr, tox_cut = tpr_at_fpr(tox, ~neither, FPR)
    return {
        "toxic_tpr_at_fpr05": toxic_tpr,
        "hate_caught_at_toxic_threshold": float((tox[hate] > tox_cut).mean()),
        "hate_vs_all_tpr_at_fpr05": tpr_at_fpr(hate_score, hate, FPR)[0],
        "hate_vs_neither_tpr_at_fpr05": tpr_at_fpr(hate_score[both], hate[both], FPR)[0],
    }


def pii(n: int) -> dict:
    from faker import Faker

    from lamina.guardrails.pii import DEFAULT_ENTITIES, analyze

    out = {}
    for label, locales in (
        ("names the gazetteer knows", KNOWN_LOCALES),
        ("names it does not", OTHER_LOCALES),
    ):
        fakers = [Faker(loc) for loc in locales]
        us = Faker("en_US")
        for f in [*fakers, us]:
            f.seed_instance(0)
        rng = random.Random(0)
        gold: list[tuple[str, list[tuple[int, int, str]]]] = []
        for i in range(n):
            person_faker = fakers[i % len(fakers)]
            values = {
                "PERSON": lambda f=person_faker: f"{f.first_name()} {f.last_name()}",
                "PHONE_NUMBER": us.phone_number,
                "EMAIL_ADDRESS": us.email,
                "CREDIT_CARD": us.credit_card_number,
                "IBAN_CODE": Faker("en_GB").iban,
                "LOCATION": us.street_address,
            }
            template = rng.choice(TEMPLATES)
            text, spans, cursor = "", [], 0
            for m in re.finditer(r"\{(\w+)\}", template):
                text += template[cursor : m.start()]
                value = values[m.group(1)]()
                spans.append((len(text), len(text) + len(value), m.group(1)))
                text += value
                cursor = m.end()
            text += template[cursor:]
            gold.append((text, spans))
        counts: dict[str, dict[str, int]] = {}
        started = time.perf_counter()
        for text, spans in gold:
            found = analyze(text, DEFAULT_ENTITIES, 0.4)
            for start, end, entity in spans:
                c = counts.setdefault(entity, {"gold": 0, "found": 0, "predicted": 0, "correct": 0})
                c["gold"] += 1
                c["found"] += any(
                    p.label == entity and _overlap(p.start, p.end, start, end) >= 0.5 for p in found
                )
            for p in found:
                c = counts.setdefault(p.label, {"gold": 0, "found": 0, "predicted": 0, "correct": 0})
                c["predicted"] += 1
                c["correct"] += any(
                    entity == p.label and _overlap(p.start, p.end, s, e) >= 0.5 for s, e, entity in spans
                )
        seconds = (time.perf_counter() - started) / len(gold)
        out[label] = {
            "texts": len(gold),
            "ms_per_text": seconds * 1000,
            "entities": {
                k: {
                    "recall": v["found"] / v["gold"] if v["gold"] else None,
                    "precision": v["correct"] / v["predicted"] if v["predicted"] else None,
                    **v,
                }
                for k, v in sorted(counts.items())
            },
        }
    return out


def _overlap(a0: int, a1: int, b0: int, b1: int) -> float:
    inter = max(0, min(a1, b1) - max(a0, b0))
    return inter / max(1, min(a1 - a0, b1 - b0))


# -- latency ----------------------------------------------------------------------------------------
def prompt_500_tokens() -> str:
    """About 500 tokens of plain English (~2,000 characters of Wikipedia from SQuAD: names, dates
    and numbers included), the kind of text users paste to be summarised."""
    data = json.loads((SHARED / "rag" / "squad-dev-shared.json").read_text())
    paragraphs = [p["context"] for article in data["data"][:3] for p in article["paragraphs"]]
    words = " ".join(" ".join(paragraphs).split())[:1950]
    return "Summarise this passage in 120 words: " + words


def in_process_latency(model: object, runs: int) -> dict:
    from lamina.guardrails.guard import Guard
    from lamina.guardrails.model_rails import InjectionRail
    from lamina.guardrails.policy import PRESETS
    from lamina.guardrails.rail import RailSpec, build

    rails = []
    for spec in PRESETS["default"]["input"]:
        if spec["rail"] == "injection":
            rail = object.__new__(InjectionRail)  # the fold model, without a hub
            rail.spec, rail.action, rail.threshold = RailSpec(rail="injection"), "block", None
            rail.opts = {"heads": None, "max_chars": 4000}
            rail.model, rail.model_ref = model, "bench"
            rail.cutoffs = {"injection": model.thresholds["injection"]}  # type: ignore[attr-defined]
            rails.append(rail)
        else:
            rails.append(build(RailSpec(**spec), "input"))
    guard = Guard(rails, [])
    prompt = prompt_500_tokens()
    per_rail: dict[str, list[float]] = {r.name: [] for r in rails}
    totals = []
    guard.check([prompt], {})
    for _ in range(runs):
        started = time.perf_counter()
        for rail in rails:
            t = time.perf_counter()
            rail.check(prompt, {})
            per_rail[rail.name].append(time.perf_counter() - t)
        totals.append(time.perf_counter() - started)
    return {
        "prompt_chars": len(prompt),
        "p50_ms": statistics.median(totals) * 1000,
        "per_rail_p50_ms": {k: statistics.median(v) * 1000 for k, v in per_rail.items()},
    }


def served_latency(model_folder: Path, runs: int, settings: dict[str, str] | None = None) -> dict:
    """One ``lamina serve`` with the default policy for user keys and none for the admin key."""
    import httpx

    from lamina.core.workspace import Workspace
    from lamina.data.pipeline import build_dataset
    from lamina.data.recipe import parse_recipe
    from lamina.gateway.keys import create_key
    from lamina.hub.registry import register
    from lamina.training.lm import train_lm
    from lamina.training.loop import TrainConfig

    work = Path(tempfile.mkdtemp(prefix="lamina-bench-rails-"))
    ws, _ = Workspace.init(work / "ws")
    recipe = {
        "source": {"type": "text", "path": str(SHAKESPEARE), "split_by": "paragraph"},
        "split": {"fractions": {"val": 0.1}, "seed": 0},
    }
    build_dataset(ws, "shakespeare", parse_recipe("shakespeare", recipe, "bench"))
    cfg = TrainConfig(max_steps=20, batch_size=8, lr=2e-3, warmup_steps=5, eval_every=20, checkpoint_every=20)
    overrides = {
        "hidden_size": 128,
        "num_layers": 2,
        "num_heads": 4,
        "num_kv_heads": 4,
        "intermediate_size": 512,
        "context_length": 2304,
    }
    train_lm(
        ws,
        "shakespeare",
        "bench",
        preset="tiny",
        overrides=overrides,
        train_cfg=cfg,
        alias="champion",
        track=False,
    )
    import shutil

    copy = work / "rail"
    shutil.copytree(model_folder, copy)
    version = register(ws, copy, "injection-guard", "classifier", config={"kind": "injection"})
    ws.catalog.set_alias("injection-guard", "champion", version.id, reason="bench")
    (ws.root / "lamina.yaml").write_text(
        "rails:\n  preset: default\n  rules:\n    - when: {role: admin}\n      input: []\n      output: []\n"
        "    - when: {model: 'bench@v1'}\n      input: []\n"  # output rails only: their effect on TTFT
    )
    user = create_key(ws, "bench", "user", limits={}).secret
    ws.close()
    from serve import start_server  # bench/serve.py: `lamina serve` on a free port, waited for

    process, url = start_server(work / "ws", "bench@champion", settings)
    prompt = prompt_500_tokens()
    timings: dict[str, list[float]] = {"rails": [], "none": [], "ttft_rails": [], "ttft_none": []}
    statuses: dict[str, list[int]] = {"rails": [], "none": []}
    try:
        with httpx.Client(timeout=120) as client:
            for i in range(runs + 3):
                for key, label in ((user, "rails"), (ADMIN, "none")):
                    # a new prompt each time: the server remembers input verdicts, and a repeated
                    # prompt would measure that memory, not the rails
                    body = {
                        "model": "bench@champion",
                        "messages": [{"role": "user", "content": f"Request {i}, {label}. {prompt}"}],
                        "max_tokens": 1,
                        "temperature": 0,
                    }
                    started = time.perf_counter()
                    r = client.post(
                        f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
                    )
                    elapsed = time.perf_counter() - started
                    statuses[label].append(r.status_code)
                    if i >= 3:  # warm-up first
                        timings[label].append(elapsed)
                    stream = {  # bench@v1: the same model, output rails only for user keys
                        "model": "bench@v1",
                        "messages": [{"role": "user", "content": f"Stream {i}, {label}. {prompt}"}],
                        "max_tokens": 48,
                        "temperature": 1.0,
                        "seed": i,
                        "stream": True,
                    }
                    started = time.perf_counter()
                    first = None
                    with client.stream(
                        "POST",
                        f"{url}/v1/chat/completions",
                        json=stream,
                        headers={"Authorization": f"Bearer {key}"},
                    ) as response:
                        for line in response.iter_lines():
                            if line.startswith("data: {") and first is None:
                                chunk = json.loads(line[6:])
                                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                                    first = time.perf_counter() - started
                    if i >= 3 and first is not None:
                        timings[f"ttft_{label}"].append(first)
    finally:
        process.terminate()
        process.wait(timeout=30)
    p50 = {k: statistics.median(v) * 1000 for k, v in timings.items() if v}
    return {
        "requests_each": runs,
        "p50_ms": p50,
        "statuses": {k: sorted(set(v)) for k, v in statuses.items()},
        "added_p50_ms": p50["rails"] - p50["none"],
        "ttft_ratio": p50["ttft_rails"] / p50["ttft_none"],
    }


# -- report -----------------------------------------------------------------------------------------
def pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def render(r: dict) -> str:
    inj, tox, pii_r, lat = r["injection"], r["toxicity"], r["pii"], r["latency"]
    lines = [
        "# Guardrails benchmark (`bench/rails.py`)",
        "",
        machine_line(r["machine"]),
        "",
        f"## Prompt injection and jailbreaks ({inj['rows']} prompts, {inj['folds']}-fold CV)",
        "",
        *([machine_line(inj["run"]) + " (this part alone, `--injection-only`)", ""] if "run" in inj else []),
        "| method | AUC | TPR at FPR 5 % (pooled) | deployed "
        "TPR | deployed FPR | jailbreak | indirect | harmful "
        "| benign look-alike flagged | benign trigger-word flagged "
        "| long benign flagged | ordinary flagged |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in inj["methods"].items():
        c = m["caught_by_category"]
        lines.append(
            f"| {name} | {pct(m['auc'])} | {pct(m['tpr_at_fpr05'])} | {pct(m['deployed_tpr'])} | "
            f"{pct(m['deployed_fpr'])} | {pct(c['jailbreak'])} | {pct(c['indirect_prompt_injection'])} | "
            f"{pct(c['harmful_request'])} | {pct(c['benign_lookalike'])} | "
            f"{pct(c['benign_trigger_words'])} | {pct(m.get('long_benign_fpr'))} | "
            f"{pct(m.get('ordinary_fpr'))} |"
        )
    lines += [
        "",
        f"Issue's baselines on its held-back set: TF-IDF + LR TPR {ISSUE['injection_tfidf_tpr']} "
        f"(AUC {ISSUE['injection_tfidf_auc']}), MiniLM + LR "
        f"{ISSUE['injection_minilm_tpr']}; target ≥ 0.90 at "
        "FPR ≤ 0.05. *Deployed* = the threshold calibrated "
        "on a validation split, applied to the unseen fold. *Long benign*: "
        f"{inj['long_benign_prompts']} Wikipedia paragraphs (SQuAD) with a question or a summary request; "
        f"*ordinary*: {inj['ordinary_prompts']} everyday questions (Dolly open QA) — sources no training "
        "row comes from, flagged at the deployed threshold (mean over folds). Lamina's methods train with "
        "long-context copies (`guardrails/augment.py`) as `lamina rails train` does, except the row that "
        "says not.",
        "",
        f"## Toxicity ({tox['rows']} tweets; test {tox['test_counts']})",
        "",
        *([machine_line(tox["run"]) + " (this part alone, `--toxicity-only`)", ""] if "run" in tox else []),
        "| method | toxic TPR at FPR 5 % (vs neither) | hate "
        "caught at that threshold | hate vs all, TPR at FPR 5 % "
        "| hate vs neither, TPR at FPR 5 % | deployed toxic TPR | deployed toxic FPR | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in tox.items():
        if isinstance(m, dict) and "toxic_tpr_at_fpr05" in m:
            train_s = f"{m['train_s']:.0f}" if "train_s" in m else "–"
            lines.append(
                f"| {name} | {pct(m['toxic_tpr_at_fpr05'])} | {pct(m['hate_caught_at_toxic_threshold'])} | "
                f"{pct(m['hate_vs_all_tpr_at_fpr05'])} | {pct(m['hate_vs_neither_tpr_at_fpr05'])} | "
                f"{pct(m.get('deployed_toxic_tpr'))} | {pct(m.get('deployed_toxic_fpr'))} | {train_s} |"
            )
    if "cross_validated" in tox:
        lines += [
            "",
            f"5-fold cross-validation on all {tox['rows']} tweets (pooled out-of-fold scores; "
            f"{tox['cross_validated']['hate_rows']:,} hate tweets instead of {tox['test_counts']['hate']}):",
            "",
            "| method | toxic TPR at FPR 5 % (vs neither) | hate vs all, TPR at FPR 5 % "
            "| hate vs neither, TPR at FPR 5 % |",
            "|---|---|---|---|",
        ]
        for name, m in tox["cross_validated"]["methods"].items():
            lines.append(
                f"| {name} | {pct(m['toxic_tpr_at_fpr05'])} | {pct(m['hate_vs_all_tpr_at_fpr05'])} | "
                f"{pct(m['hate_vs_neither_tpr_at_fpr05'])} |"
            )
    lines += [
        "",
        f"Issue: TF-IDF + LR {ISSUE['toxic_tfidf_tpr']} toxic, {ISSUE['hate_tfidf_tpr']} hate alone; target "
        "≥ 0.95 toxic and ≥ 0.70 hate at FPR ≤ 0.05.",
        "",
        "## PII (Faker, running text)",
        "",
    ]
    for label, block in pii_r.items():
        lines += [
            f"{label} ({block['texts']} texts, {block['ms_per_text']:.1f} ms a text):",
            "",
            "| entity | recall | precision | gold | predicted |",
            "|---|---|---|---|---|",
        ]
        for entity, m in block["entities"].items():
            lines.append(
                f"| {entity} | {pct(m['recall'])} | {pct(m['precision'])} | {m['gold']} | {m['predicted']} |"
            )
        lines.append("")
    lines += [
        "Target: recall ≥ 0.95 and precision ≥ 0.90 per entity type.",
        "",
        "## Latency",
        "",
        "In-process, the default input rail set on a "
        f"{lat['in_process']['prompt_chars']}-character (~500-token) "
        f"prompt: p50 {lat['in_process']['p50_ms']:.2f} ms "
        f"({', '.join(f'{k} {v:.2f}' for k, v in lat['in_process']['per_rail_p50_ms'].items())} ms).",
    ]
    served = lat.get("served")
    if served and served.get("statuses", {}).get("rails") != [200]:
        lines += [
            "",
            f"**The served comparison is not valid in this run**: with rails the 500-token prompt was "
            f"answered {served['statuses']['rails']} (the injection rail blocked it — a false positive on a "
            "long benign prompt), so those requests skipped the model. Raw figures, for the record:",
        ]
    if served:
        p = served["p50_ms"]
        lines += [
            "",
            f"Through `lamina serve` ({served['requests_each']} interleaved requests each, same server): "
            f"chat with the 500-token prompt p50 {p['rails']:.1f} "
            f"ms with rails vs {p['none']:.1f} ms without "
            f"(**+{served['added_p50_ms']:.1f} ms**; target ≤ 10 "
            f"ms); streaming TTFT p50 {p['ttft_rails']:.1f} ms "
            f"with output rails vs {p['ttft_none']:.1f} ms "
            f"(**×{served['ttft_ratio']:.2f}**; target ≤ ×1.10).",
        ]
    later = RESULTS / "rails_latency.json"  # `--latency-only` writes there, and may be newer than this run
    if later.exists():
        run = json.loads(later.read_text())["machine"]
        if run["date"] > r["machine"]["date"]:
            lines += [
                "",
                f"**Superseded**: a later latency run ({run['git_sha']}, {run['date'][:10]}, "
                "`--latency-only`) is in `rails_latency.md`; its figures are the current ones.",
            ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 folds, a toxicity sample, fewer requests")
    parser.add_argument(
        "--toxicity-finetune",
        action="store_true",
        help="also fine-tune MiniLM on toxicity's majority labels, to compare with votes (~12 min more)",
    )
    parser.add_argument(
        "--latency-only", action="store_true",
        help="only the latency part, with the default rail's model trained for 1 epoch on 200 prompts "
        "(the same architecture and input length as the full run's: its speed, not its accuracy)",
    )  # fmt: skip
    parser.add_argument(
        "--injection-only", action="store_true",
        help="rerun only the injection part (about 20 minutes); the others are kept from "
        "bench/results/rails.json, and the injection part names the run it came from",
    )  # fmt: skip
    parser.add_argument(
        "--toxicity-only", action="store_true",
        help="rerun only the toxicity part; the others are kept from bench/results/rails.json, and the "
        "toxicity part names the run it came from",
    )  # fmt: skip
    args = parser.parse_args()
    if args.latency_only:
        latency_only()
        return
    if args.toxicity_only or args.injection_only:
        flag = "--toxicity-only" if args.toxicity_only else "--injection-only"
        path = RESULTS / "rails.json"
        if not path.exists():
            raise SystemExit(f"{flag}: no earlier {path} to keep the other parts from; run it all")
        results = json.loads(path.read_text())  # its "machine" stays: it measured the kept parts
        now = _machine()
        if args.toxicity_only:
            results["toxicity"] = {**toxicity(False, args.toxicity_finetune), "run": now}
        else:
            part = injection(False)
            part.pop("_models")
            results["injection"] = {**part, "run": now}
        save("rails", results, render(results))
        return
    results: dict = {"injection": injection(args.quick)}
    models = results["injection"].pop("_models")
    results["toxicity"] = toxicity(args.quick, args.toxicity_finetune)
    results["pii"] = pii(100 if args.quick else 500)
    print("pii done", flush=True)
    model = models["finetune + prefilter (default)"]
    folder = Path(tempfile.mkdtemp(prefix="lamina-bench-railmodel-")) / "model"
    model.save(folder)  # type: ignore[attr-defined]
    from lamina.guardrails.classifier import load_classifier

    loaded = load_classifier(folder)  # as the server loads it (bf16 where native)
    results["latency"] = {"in_process": in_process_latency(loaded, 20 if args.quick else 100)}
    results["latency"]["served"] = served_latency(folder, 10 if args.quick else 40)
    save("rails" if not args.quick else "rails_quick", results, render({**results, "machine": _machine()}))


def latency_only() -> None:
    from lamina.guardrails.classifier import load_classifier

    rows = [json.loads(line) for line in PROMPT_GUARD.open()][::4][:200]
    kind = KINDS["injection"]
    model = make_classifier(kind, "finetune", epochs=1)
    model.fit([r["text"] for r in rows], [r["label"] for r in rows])
    model.calibrate([r["text"] for r in rows], [r["label"] for r in rows])
    folder = Path(tempfile.mkdtemp(prefix="lamina-bench-railmodel-")) / "model"
    model.save(folder)
    latency = {"in_process": in_process_latency(load_classifier(folder), 100)}
    latency["served"] = served_latency(folder, 40)
    # the same, with the input rails run before the model starts instead of beside its prefill
    latency["served_rails_first"] = served_latency(folder, 40, {"LAMINA_RAILS__OVERLAP_PREFILL": "false"})
    inner, served, first = latency["in_process"], latency["served"], latency["served_rails_first"]
    lines = [
        "# Guardrails latency (`bench/rails.py --latency-only`)", "", machine_line(machine_info()), "",
        f"In-process, the default input rail set on a {inner['prompt_chars']}-character (~500-token) prompt: "
        f"p50 {inner['p50_ms']:.2f} ms ("
        + ", ".join(f"{k} {v:.2f}" for k, v in inner["per_rail_p50_ms"].items()) + " ms).", "",
        f"Through `lamina serve` ({served['requests_each']} interleaved requests each, same server): chat "
        f"with the 500-token prompt p50 {served['p50_ms']['rails']:.1f} ms with rails vs "
        f"{served['p50_ms']['none']:.1f} ms without (**{served['added_p50_ms']:+.1f} ms**; target ≤ 10 ms); "
        f"streaming TTFT p50 {served['p50_ms']['ttft_rails']:.1f} ms with output rails vs "
        f"{served['p50_ms']['ttft_none']:.1f} ms (**×{served['ttft_ratio']:.2f}**; target ≤ ×1.10). "
        f"The input rails ran beside the prefill (`rails.overlap_prefill`, the default).", "",
        f"With `rails.overlap_prefill: false` (rails first, then the model; a second server, same "
        f"workspace): {first['p50_ms']['rails']:.1f} ms with rails vs {first['p50_ms']['none']:.1f} ms "
        f"without (**{first['added_p50_ms']:+.1f} ms**).", "",
    ]  # fmt: skip
    save("rails_latency", {"latency": latency}, "\n".join(lines))


def _machine() -> dict:
    return machine_info()


if __name__ == "__main__":
    main()
