"""The closed loop, one round (``lamina loop run``): reviewed feedback → a dataset version (with a
replay of earlier training data, so the model does not forget) → a LoRA fine-tune of the champion
(the challenger) → challenger vs champion on a fixed held-out set → promoted only if it wins by a
margin a bootstrap says is real; otherwise the champion stays and the reason is recorded.

Every step leaves an artifact with lineage: the feedback batch (which feedback rows it froze), the
dataset version built from it, the fine-tune run and model version, and the gate's eval report;
the alias move is in the alias history, so ``lamina models rollback`` undoes it. Serving resolves
``NAME@champion`` per request, so the new champion serves without a restart. A round that fails
records why and leaves the champion serving.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lamina.core.errors import ConfigError
from lamina.core.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass
class LoopResult:
    status: str  # promoted | kept | skipped | failed
    reason: str
    champion_before: str
    champion_after: str
    batch: str | None = None
    dataset: str | None = None
    challenger: str | None = None
    gate: dict[str, Any] = field(default_factory=dict)
    report: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run(
    ws: Workspace,
    model: str,
    cipher: Any,
    *,
    eval_set: str,
    replay: str | None = None,
    replay_rows: int = 200,
    min_rows: int = 1,
    margin: float = 0.0,
    method: str = "lora",
    train_cfg: Any = None,
    resamples: int = 1000,
    seed: int = 0,
    progress: Any = None,
) -> LoopResult:
    """One round for model ``model`` (a name; its ``@champion`` is the base)."""
    from lamina.core.catalog.models import EvalReport, Feedback, FeedbackBatch
    from lamina.hub.registry import resolve_model
    from lamina.monitoring.review import training_rows

    say = progress or (lambda line: None)
    name = model.split("@")[0]
    champion = resolve_model(ws, f"{name}@champion")
    versions = _versions_of(ws, name)
    rows = training_rows(ws, cipher, pending=True, versions=versions)["sft"]
    if len(rows) < min_rows:
        return LoopResult("skipped", f"{len(rows)} reviewed corrections waiting, fewer than {min_rows}",
                          champion.ref, champion.ref)  # fmt: skip
    say(f"{len(rows)} reviewed corrections for {name} (champion {champion.ref})")
    batch = ws.record(
        FeedbackBatch(name=f"{name}-feedback", description=f"{len(rows)} corrections for the loop",
                      meta={"feedback_ids": [r["feedback_id"] for r in rows], "model": name}),
    )  # fmt: skip
    with ws.catalog.session() as session:
        for row in rows:
            item = session.get(Feedback, row["feedback_id"])
            if item is not None:
                item.batch_id = batch.id
    result = LoopResult("failed", "", champion.ref, champion.ref, batch=batch.ref)
    try:
        dataset = _dataset(ws, name, rows, batch, replay, replay_rows, seed)
        result.dataset = dataset.ref
        say(f"dataset {dataset.ref}: {len(rows)} corrections + replay of {replay or 'nothing'}")
        challenger = _finetune(ws, champion.ref, dataset.ref, name, method, train_cfg)
        result.challenger = challenger.ref
        say(f"challenger {challenger.ref} trained; gating on {eval_set}")
        gate = compare(ws, champion, challenger, eval_set, margin=margin, resamples=resamples, seed=seed)
        result.gate = gate
        passed = gate["lower"] > margin
        if passed:
            from lamina.hub.registry import promote

            ci = f"[{gate['lower']:.4f}, {gate['upper']:.4f}]"
            reason = (f"loop: held-out loss {gate['challenger_loss']:.4f} vs {gate['champion_loss']:.4f}; "
                      f"improvement 95 % CI {ci} > margin {margin}")  # fmt: skip
            promote(ws, challenger.ref, "champion", reason=reason)
            result.status, result.reason, result.champion_after = "promoted", reason, challenger.ref
        else:
            result.status = "kept"
            result.reason = (f"the challenger does not win by the margin: improvement 95 % CI "
                             f"[{gate['lower']:.4f}, {gate['upper']:.4f}], margin {margin}")  # fmt: skip
        report = ws.record(
            EvalReport(name=f"{name}-loop-gate", subject_id=challenger.id, passed=passed,
                       metrics={k: v for k, v in gate.items() if isinstance(v, int | float)},
                       description=result.reason, meta={"gate": gate, "status": result.status}),
            [(challenger.id, "evaluated"), (champion.id, "compared_with")],
        )  # fmt: skip
        result.report = report.ref
    except Exception as exc:
        result.reason = f"{type(exc).__name__}: {exc}"
        log.error("loop round for %s failed: %s (the champion stays %s)", name, exc, champion.ref)
        ws.record(
            EvalReport(name=f"{name}-loop-gate", subject_id=champion.id, passed=False, metrics={},
                       description=f"failed: {result.reason}", meta={"status": "failed", "batch": batch.ref}),
            [(batch.id, "failed_on")],
        )  # fmt: skip
        raise
    return result


def _versions_of(ws: Workspace, name: str) -> set[str]:
    import sqlalchemy as sa

    from lamina.core.catalog.models import ModelVersion

    with ws.catalog.session() as session:
        return set(session.scalars(sa.select(ModelVersion.id).where(ModelVersion.name == name)).all())


def _dataset(
    ws: Workspace, name: str, rows: list[dict[str, Any]], batch: Any, replay: str | None, replay_rows: int,
    seed: int,
) -> Any:  # fmt: skip
    """A dataset version of the corrections and a seeded sample of the replay data's train split."""
    from lamina.data.pipeline import build_dataset
    from lamina.data.recipe import Recipe

    records = [{"messages": r["messages"], "text": _last_user(r["messages"]), "feedback_id": r["feedback_id"],
                "request_id": r["request_id"]} for r in rows]  # fmt: skip
    parents = [(batch.id, "built_from")]
    if replay:
        from lamina.data.versions import iter_rows, resolve_version
        from lamina.training.sft import to_messages

        version = resolve_version(ws, replay)
        split = "train" if "train" in version.splits else None
        old = list(iter_rows(ws, version, split))
        for row in random.Random(seed).sample(old, min(replay_rows, len(old))):
            messages = to_messages(row)
            records.append({"messages": messages, "text": _last_user(messages), "replay_of": version.ref})
        parents.append((version.id, "replays"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "loop.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        recipe = Recipe(source=str(path), steps=[], description=f"loop round from {batch.ref}")
        return build_dataset(ws, f"{name}-loop", recipe, extra_parents=parents).version


def _last_user(messages: list[dict[str, Any]]) -> str:
    return next((str(m["content"]) for m in reversed(messages) if m.get("role") == "user"), "")


def _finetune(ws: Workspace, base: str, dataset: str, name: str, method: str, train_cfg: Any) -> Any:
    """LoRA merged into the weights, so the challenger is a plain model the next round can tune."""
    from lamina.training.sft import finetune, finetune_config

    if method not in ("lora", "full"):
        raise ConfigError(f"loop method must be lora or full, not {method!r}")
    cfg = train_cfg or finetune_config(method)  # type: ignore[arg-type]
    return finetune(ws, base, dataset, name, method=method, merge=method == "lora",  # type: ignore[arg-type]
                    train_cfg=cfg, alias="challenger", track=False)  # fmt: skip


def compare(
    ws: Workspace,
    champion: Any,
    challenger: Any,
    eval_set: str,
    *,
    margin: float = 0.0,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean held-out answer loss of both models on ``eval_set`` (its validation split when it has
    one) and a bootstrap 95 % interval of the improvement (champion minus challenger)."""
    from lamina.data.versions import iter_rows, resolve_version
    from lamina.hub.registry import model_path
    from lamina.training.sft import to_messages

    version = resolve_version(ws, eval_set)
    split = next((s for s in ("validation", "val", "test") if s in version.splits), None)
    examples = [to_messages(r) for r in iter_rows(ws, version, split)]
    if len(examples) < 5:
        raise ConfigError(f"the eval set {eval_set} has {len(examples)} examples; the gate needs at least 5")
    old = example_losses(model_path(ws, champion), examples)
    new = example_losses(model_path(ws, challenger), examples)
    keep = ~(np.isnan(old) | np.isnan(new))
    diff = old[keep] - new[keep]
    rng = np.random.default_rng(seed)
    means = rng.choice(diff, size=(resamples, len(diff)), replace=True).mean(axis=1)
    lower, upper = np.percentile(means, [2.5, 97.5])
    return {
        "eval_set": version.ref, "split": split, "examples": int(keep.sum()),
        "champion": champion.ref, "challenger": challenger.ref,
        "champion_loss": float(old[keep].mean()), "challenger_loss": float(new[keep].mean()),
        "improvement": float(diff.mean()), "lower": float(lower), "upper": float(upper), "margin": margin,
    }  # fmt: skip


def example_losses(folder: Path, examples: list[list[dict[str, str]]]) -> np.ndarray:
    """Mean loss on each example's answer tokens (what SFT trains), NaN where there is none."""
    import torch

    from lamina.training.sft import encode_example, ensure_chat_template, load_any

    model, tokenizer = load_any(folder)
    ensure_chat_template(tokenizer)
    model.eval()
    context = int(model.config.max_position_embeddings)
    out = np.full(len(examples), np.nan)
    with torch.no_grad():
        for i, messages in enumerate(examples):
            ids, labels = encode_example(tokenizer, messages, context)
            target = torch.tensor(labels[1:])
            mask = target != -100
            if not mask.any():
                continue
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
            out[i] = float(torch.nn.functional.cross_entropy(logits[mask], target[mask]))
    return out
