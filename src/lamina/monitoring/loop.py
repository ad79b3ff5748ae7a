"""The closed loop, one round (``lamina loop run``): reviewed feedback → dataset versions (corrections
with a replay of earlier training data, so the model does not forget; preference pairs) → the
challenger: LoRA SFT of the champion on the corrections, then DPO (TRL) on the pairs → challenger vs
champion on a fixed held-out set, with the safety rails and, if given, a reward model judging both
models' answers → promoted only if it wins by a margin a bootstrap says is real and trips no more
rails; otherwise the champion stays and the reason is recorded.

Every step leaves an artifact with lineage: the feedback batch (which feedback rows it froze), the
dataset versions built from it, the fine-tune runs and model versions, and the gate's eval report;
the alias move is in the alias history, so ``lamina models rollback`` undoes it. Serving resolves
``NAME@champion`` per request, so the new champion serves without a restart. A round that fails
records why, gives its feedback back to the queue for the next round, and leaves the champion
serving. A round can continue a batch an interrupted round froze (``batch=``): every step after it
finds its earlier result (datasets and runs are fingerprinted), so a crash costs only the step it
interrupted.
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
    pairs: str | None = None
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
    dpo_cfg: Any = None,
    reward: str | None = None,
    rails: bool = True,
    answers: int = 16,
    resamples: int = 1000,
    seed: int = 0,
    batch: str | None = None,
    on_batch: Any = None,
    progress: Any = None,
) -> LoopResult:
    """One round for model ``model`` (a name; its ``@champion`` is the base). ``batch``: continue
    the round that froze this feedback batch instead of taking new feedback; ``on_batch(ref)`` is
    told the batch a new round froze (a job records it, to continue after a crash)."""
    from lamina.core.catalog.models import EvalReport
    from lamina.hub.registry import resolve_model

    say = progress or (lambda line: None)
    name = model.split("@")[0]
    champion = resolve_model(ws, f"{name}@champion")
    frozen, rows = _take(ws, name, cipher, min_rows, batch)
    if frozen is None:
        waiting = len(rows["sft"]) + len(rows["preference"])
        why = f"{waiting} reviewed corrections and preferences waiting, fewer than {min_rows}"
        return LoopResult("skipped", why, champion.ref, champion.ref)
    if on_batch is not None and batch is None:
        on_batch(frozen.ref)
    say(f"{len(rows['sft'])} corrections and {len(rows['preference'])} preferences for {name} "
        f"(champion {champion.ref}, batch {frozen.ref})")  # fmt: skip
    result = LoopResult("failed", "", champion.ref, champion.ref, batch=frozen.ref)
    try:
        challenger = champion
        if rows["sft"]:
            dataset = _dataset(ws, name, rows["sft"], frozen, replay, replay_rows, seed)
            result.dataset = dataset.ref
            say(f"dataset {dataset.ref}: {len(rows['sft'])} corrections + replay of {replay or 'nothing'}")
            challenger = _finetune(ws, champion.ref, dataset.ref, name, method, train_cfg)
            say(f"SFT challenger {challenger.ref}")
        if rows["preference"]:
            from lamina.training.preference import dpo

            pairs = _pairs_dataset(ws, name, rows["preference"], frozen)
            result.pairs = pairs.ref
            challenger = dpo(
                ws, challenger.ref, pairs.ref, name, cfg=dpo_cfg, alias="challenger", track=False
            )
            say(f"DPO challenger {challenger.ref} on {len(rows['preference'])} pairs ({pairs.ref})")
        result.challenger = challenger.ref
        say(f"gating {challenger.ref} against {champion.ref} on {eval_set}")
        gate = compare(ws, champion, challenger, eval_set, margin=margin, resamples=resamples, seed=seed)
        if rails or reward:
            gate.update(judge_answers(ws, champion, challenger, eval_set, reward=reward, rails=rails,
                                      limit=answers, resamples=resamples, seed=seed))  # fmt: skip
        result.gate = gate
        refused = _refusal(gate, margin)
        if refused is None:
            from lamina.hub.registry import promote

            ci = f"[{gate['lower']:.4f}, {gate['upper']:.4f}]"
            reason = (f"loop: held-out loss {gate['challenger_loss']:.4f} vs {gate['champion_loss']:.4f}; "
                      f"improvement 95 % CI {ci} > margin {margin}")  # fmt: skip
            promote(ws, challenger.ref, "champion", reason=reason)
            result.status, result.reason, result.champion_after = "promoted", reason, challenger.ref
        else:
            result.status, result.reason = "kept", refused
        report = ws.record(
            EvalReport(name=f"{name}-loop-gate", subject_id=challenger.id, passed=refused is None,
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
                       description=f"failed: {result.reason}",
                       meta={"status": "failed", "batch": frozen.ref}),
            [(frozen.id, "failed_on")],
        )  # fmt: skip
        release(ws, frozen.id)
        raise
    return result


def _refusal(gate: dict[str, Any], margin: float) -> str | None:
    """Why the challenger may not be promoted, or None: it must win on held-out loss by the margin,
    trip no more rails than the champion, and (with a reward model) not score significantly lower."""
    if gate["lower"] <= margin:
        return (f"the challenger does not win by the margin: improvement 95 % CI "
                f"[{gate['lower']:.4f}, {gate['upper']:.4f}], margin {margin}")  # fmt: skip
    if gate.get("challenger_rails", 0) > gate.get("champion_rails", 0):
        return (f"the safety rails acted on {gate['challenger_rails']} of the challenger's "
                f"{gate['answers']} answers and on {gate['champion_rails']} of the champion's")  # fmt: skip
    if "reward_upper" in gate and gate["reward_upper"] < 0:
        return (f"the reward model scores the challenger's answers lower: difference 95 % CI "
                f"[{gate['reward_lower']:.3f}, {gate['reward_upper']:.3f}]")  # fmt: skip
    return None


def _take(
    ws: Workspace, name: str, cipher: Any, min_rows: int, batch: str | None
) -> tuple[Any, dict[str, list[dict[str, Any]]]]:
    """Freeze the reviewed feedback waiting for this model into a batch (or reread an earlier batch)."""
    from lamina.core.catalog.models import Feedback, FeedbackBatch
    from lamina.monitoring.review import training_rows

    if batch is not None:
        frozen = ws.resolve(batch, kind="feedback_batch")
        return frozen, training_rows(ws, cipher, batch=frozen.id)
    rows = training_rows(ws, cipher, pending=True, versions=_versions_of(ws, name))
    taken = rows["sft"] + rows["preference"]
    if len(taken) < min_rows:
        return None, rows
    frozen = ws.record(
        FeedbackBatch(name=f"{name}-feedback", description=f"{len(taken)} reviewed items for the loop",
                      meta={"feedback_ids": [r["feedback_id"] for r in taken], "model": name}),
    )  # fmt: skip
    with ws.catalog.session() as session:
        for row in taken:
            item = session.get(Feedback, row["feedback_id"])
            if item is not None:
                item.batch_id = frozen.id
    return frozen, rows


def release(ws: Workspace, batch_id: str) -> None:
    """Give a failed round's feedback back to the queue, so the next round trains on it."""
    import sqlalchemy as sa

    from lamina.core.catalog.models import Feedback

    with ws.catalog.session() as session:
        session.execute(sa.update(Feedback).where(Feedback.batch_id == batch_id).values(batch_id=None))


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


def _pairs_dataset(ws: Workspace, name: str, rows: list[dict[str, Any]], batch: Any) -> Any:
    """A dataset version of the reviewed preference pairs (prompt, chosen, rejected)."""
    from lamina.data.pipeline import build_dataset
    from lamina.data.recipe import Recipe

    records = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
                "text": _last_user(r["prompt"]), "feedback_id": r["feedback_id"],
                "request_id": r["request_id"],
                "rejected_request_id": r["rejected_request_id"]} for r in rows]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        recipe = Recipe(source=str(path), steps=[], description=f"loop preferences from {batch.ref}")
        return build_dataset(
            ws, f"{name}-loop-pairs", recipe, extra_parents=[(batch.id, "built_from")]
        ).version


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
    from lamina.hub.registry import model_path

    version, split, examples = eval_examples(ws, eval_set)
    old = example_losses(model_path(ws, champion), examples)
    new = example_losses(model_path(ws, challenger), examples)
    keep = ~(np.isnan(old) | np.isnan(new))
    diff = old[keep] - new[keep]
    lower, upper = _bootstrap(diff, resamples, seed)
    return {
        "eval_set": version.ref, "split": split, "examples": int(keep.sum()),
        "champion": champion.ref, "challenger": challenger.ref,
        "champion_loss": float(old[keep].mean()), "challenger_loss": float(new[keep].mean()),
        "improvement": float(diff.mean()), "lower": float(lower), "upper": float(upper), "margin": margin,
    }  # fmt: skip


def eval_examples(ws: Workspace, eval_set: str) -> tuple[Any, str | None, list[list[dict[str, str]]]]:
    """The gate's fixed held-out chats: the eval set's validation split when it has one."""
    from lamina.data.versions import iter_rows, resolve_version
    from lamina.training.sft import to_messages

    version = resolve_version(ws, eval_set)
    split = next((s for s in ("validation", "val", "test") if s in version.splits), None)
    examples = [to_messages(r) for r in iter_rows(ws, version, split)]
    if len(examples) < 5:
        raise ConfigError(f"the eval set {eval_set} has {len(examples)} examples; the gate needs at least 5")
    return version, split, examples


def judge_answers(
    ws: Workspace,
    champion: Any,
    challenger: Any,
    eval_set: str,
    *,
    reward: str | None,
    rails: bool,
    limit: int = 16,
    max_new_tokens: int = 48,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Both models answer the first ``limit`` held-out prompts (greedy); the workspace's output rails
    judge every answer (how many they acted on), and a reward model, if given, scores them (mean
    difference with a bootstrap 95 % interval)."""
    from lamina.hub.registry import model_path

    _, _, examples = eval_examples(ws, eval_set)
    prompts = [m[:-1] if m and m[-1]["role"] == "assistant" else m for m in examples[:limit]]
    said = {
        "champion": _answers(model_path(ws, champion), prompts, max_new_tokens),
        "challenger": _answers(model_path(ws, challenger), prompts, max_new_tokens),
    }
    out: dict[str, Any] = {"answers": len(prompts),
                           "sample": [{"prompt": p[-1]["content"], **{k: v[i] for k, v in said.items()}}
                                      for i, p in enumerate(prompts[:3])]}  # fmt: skip
    if rails:
        out.update(_rails_on(ws, said))
    if reward:
        from lamina.training.preference import RewardScorer

        scorer = RewardScorer.load(ws, reward)
        scores = {k: scorer.score_messages([p + [{"role": "assistant", "content": a}]
                                            for p, a in zip(prompts, v, strict=True)])
                  for k, v in said.items()}  # fmt: skip
        diff = scores["challenger"] - scores["champion"]
        lower, upper = _bootstrap(diff, resamples, seed)
        out.update({"reward_model": scorer.ref, "champion_reward": float(scores["champion"].mean()),
                    "challenger_reward": float(scores["challenger"].mean()), "reward_lower": lower,
                    "reward_upper": upper})  # fmt: skip
    return out


def _answers(folder: Path, prompts: list[list[dict[str, str]]], max_new_tokens: int) -> list[str]:
    from lamina.evaluation.lm import generate
    from lamina.training.sft import ensure_chat_template, load_any

    model, tokenizer = load_any(folder)
    ensure_chat_template(tokenizer)
    model.eval()
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    return [generate(model, tokenizer, t, max_new_tokens=max_new_tokens, temperature=0) for t in texts]


def _rails_on(ws: Workspace, said: dict[str, list[str]]) -> dict[str, Any]:
    """How many of each model's answers the workspace's output rails act on (block, redact, flag)."""
    from lamina.guardrails.policy import Policies

    policies = Policies.build(ws.settings.rails, ws)
    if policies is None or not policies.base.output:
        return {"rails": []}
    guard = policies.base
    counts = {
        f"{who}_rails": sum(
            any(v.acted for v in guard.check([a], {"route": "loop-gate"}, "output").verdicts) for a in answers
        )
        for who, answers in said.items()
    }
    return {"rails": [r.name for r in guard.output], **counts}


def _bootstrap(diff: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """A percentile bootstrap 95 % interval of the mean of ``diff``."""
    rng = np.random.default_rng(seed)
    means = rng.choice(diff, size=(resamples, len(diff)), replace=True).mean(axis=1)
    lower, upper = np.percentile(means, [2.5, 97.5])
    return float(lower), float(upper)


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
