"""Supervised fine-tuning (SFT) of a registered causal LM, full or LoRA: ``lamina finetune``.

Each example is rendered with the tokenizer's chat template; the template marks the assistant's
words (``{% generation %}``), and only those tokens carry loss. LoRA (peft) trains low-rank
adapters beside frozen weights::

    x ─► W (frozen) ───────────────┐
    └──► A (r×d) ─► B (d×r) ─► ×α/r ┴─► +  ─► y

The adapter is saved on its own (with the absolute path of its base), loads back with peft, and
merges into a plain model with ``--merge``. QLoRA is the same adapter on a base whose linear
weights are stored in 4-bit NF4 (bitsandbytes, which runs them on CPU too): the frozen linear
weights take 4 bits each instead of 16 or 32, and the run is registered as QLoRA only if the base
really was quantized.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from lamina.core.catalog import DatasetVersion, ModelVersion
from lamina.core.errors import ConfigError, LaminaError, NotFound
from lamina.core.workspace import Workspace
from lamina.evaluation.lm import generate
from lamina.hub.registry import model_path, resolve_model
from lamina.models.causal_lm import load_pretrained
from lamina.models.tokenizer import CHAT_TEMPLATE, ROLE_TOKENS
from lamina.training import lifecycle
from lamina.training.lifecycle import TrainingRun
from lamina.training.loop import TrainConfig, train
from lamina.training.tracking import save_history

Method = Literal["full", "lora", "qlora"]
# For tokenizers without Lamina's role tokens (imported checkpoints): plain-text role markers.
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ 'Assistant: ' }}{% generation %}"
    "{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% else %}{{ message['role'] | capitalize + ': ' + message['content'] + '\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rank: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


def to_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    """Rows with ``messages``, or instruction/response, prompt/completion or question/answer fields."""
    if isinstance(row.get("messages"), list):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in row["messages"]]
    for prompt_key, answer_key in (
        ("instruction", "response"),
        ("prompt", "completion"),
        ("question", "answer"),
    ):
        if isinstance(row.get(prompt_key), str) and isinstance(row.get(answer_key), str):
            return [
                {"role": "user", "content": row[prompt_key]},
                {"role": "assistant", "content": row[answer_key]},
            ]
    raise LaminaError(
        f"SFT row {row.get('_origin', '?')} has no messages, instruction/response, prompt/completion "
        "or question/answer fields",
        hint="build the dataset with one of those layouts",
    )


def ensure_chat_template(tokenizer: Any) -> None:
    if tokenizer.chat_template:
        return
    has_roles = all(tokenizer.convert_tokens_to_ids(t) != tokenizer.unk_token_id for t in ROLE_TOKENS)
    tokenizer.chat_template = CHAT_TEMPLATE if has_roles else PLAIN_CHAT_TEMPLATE


def encode_example(
    tokenizer: Any, messages: list[dict[str, str]], context: int
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) with labels = -100 everywhere but the assistant's tokens."""
    out = tokenizer.apply_chat_template(messages, return_assistant_tokens_mask=True, return_dict=True)
    ids, mask = out["input_ids"][:context], out["assistant_masks"][:context]
    labels = [t if m else -100 for t, m in zip(ids, mask, strict=True)]
    return ids, labels


class SFTTask:
    """Random mini-batches of rendered examples, right-padded; loss only where labels != -100."""

    def __init__(
        self, train: list[tuple[list[int], list[int]]], val: list[tuple[list[int], list[int]]], pad_id: int
    ) -> None:
        usable = [e for e in train if any(label != -100 for label in e[1])]
        if not usable:
            raise LaminaError(
                "no SFT example has a response left after truncation to the context",
                hint="use a model with a longer context or shorter examples",
            )
        self.data = {
            "train": usable,
            "val": [e for e in val if any(label != -100 for label in e[1])] or usable,
        }
        self.pad_id = pad_id

    def batch(self, split: str, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        data = self.data[split]
        picks = torch.randint(len(data), (batch_size,), generator=generator).tolist()
        longest = max(len(data[i][0]) for i in picks)
        ids = torch.full((batch_size, longest), self.pad_id, dtype=torch.long)
        labels = torch.full((batch_size, longest), -100, dtype=torch.long)
        attention = torch.zeros((batch_size, longest), dtype=torch.long)
        for row, i in enumerate(picks):
            n = len(data[i][0])
            ids[row, :n] = torch.tensor(data[i][0])
            labels[row, :n] = torch.tensor(data[i][1])
            attention[row, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": attention}

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**batch).loss

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"].sum())


def base_folder(folder: Path) -> Path:
    """Where a model folder's architecture and tokenizer live: itself, or a LoRA adapter's base."""
    adapter = folder / "adapter_config.json"
    if not adapter.exists():
        return folder
    return Path(json.loads(adapter.read_text())["base_model_name_or_path"])


def load_any(folder: Path) -> tuple[Any, Any]:
    """A registered model folder: a full model, or a LoRA adapter on its recorded base."""
    base = base_folder(folder)
    if base == folder:
        return load_pretrained(folder)
    from peft import PeftModel

    model, tokenizer = load_pretrained(base)
    return PeftModel.from_pretrained(model, str(folder)), tokenizer


def finetune_config(method: Method = "lora", **overrides: Any) -> TrainConfig:
    """Fine-tuning defaults, with every override that is not None applied: 200 steps of 8 examples;
    lr 2e-4 for adapters and 5e-5 for full fine-tuning (full weights move further per step)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    steps = int(given.get("max_steps", 200))
    base = {
        "max_steps": steps, "batch_size": 8, "lr": 5e-5 if method == "full" else 2e-4,
        "warmup_steps": min(20, steps // 5), "eval_every": max(1, steps // 4),
        "checkpoint_every": max(1, steps // 2),
    }  # fmt: skip
    return TrainConfig(**{**base, **given})


def finetune_config_if(method: Method, **overrides: Any) -> TrainConfig | None:
    """``finetune_config`` when any override is given, else None (the caller's own default stands)."""
    return finetune_config(method, **overrides) if any(v is not None for v in overrides.values()) else None


def load_quantized(folder: Path) -> tuple[Any, Any, dict[str, Any]]:
    """A full model folder with its linear weights in 4-bit NF4 (bitsandbytes), ready for k-bit training."""
    try:
        import bitsandbytes
    except ImportError:
        raise ConfigError(
            "QLoRA needs bitsandbytes (4-bit NF4 weights), which is not installed",
            hint="pip install 'lamina[qlora]', or use --method lora",
        ) from None
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from lamina.core.machine import defaults

    if base_folder(folder) != folder:
        raise ConfigError(
            "QLoRA quantizes a full model, and this one is a LoRA adapter",
            hint="fine-tune a full model, or register this adapter merged (--merge) first",
        )
    compute = torch.bfloat16 if defaults().train_bf16 else torch.float32
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
        bnb_4bit_use_double_quant=True,
    )  # fmt: skip
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(
        str(folder), quantization_config=quantization, device_map=device
    )
    layers = [m for m in model.modules() if type(m).__name__ == "Linear4bit"]
    for layer in layers:
        # bitsandbytes 0.50 on an AVX512-BF16 CPU repacks a layer's weights for inference on its first
        # eval-mode forward, and the repacked matmul has no autograd kernel: after the loop's first
        # validation, gradients would stop flowing through the frozen base. Keep the trainable layout.
        layer.support_avx512bf16_for_cpu = False
    quantized = len(layers)
    if not quantized:  # never record a run as QLoRA when nothing was quantized
        raise LaminaError(f"bitsandbytes {bitsandbytes.__version__} left no layer of {folder} in 4 bits")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    info = {
        "bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": str(compute).split(".")[-1],
        "quantized_layers": quantized, "bitsandbytes": bitsandbytes.__version__, "device": device,
    }  # fmt: skip
    return model, AutoTokenizer.from_pretrained(str(folder)), info


def finetune(
    ws: Workspace,
    model_ref: str,
    dataset_ref: str,
    name: str,
    *,
    method: Method = "lora",
    train_cfg: TrainConfig | None = None,
    lora: LoraSettings | None = None,
    merge: bool = False,
    alias: str | None = None,
    resume: bool = False,
    track: bool = True,
    on_progress: Any = None,
) -> ModelVersion:
    from lamina.core.refs import validate_name

    validate_name(name, "model name")
    if method not in ("full", "lora", "qlora"):
        raise ConfigError(f"unknown fine-tuning method {method!r}", hint="use lora, qlora or full")
    cfg = train_cfg or finetune_config(method)
    lora = lora or LoraSettings()
    base = resolve_model(ws, model_ref)
    dataset = ws.resolve(dataset_ref, kind="dataset_version")
    if not isinstance(dataset, DatasetVersion):
        raise NotFound(f"{dataset_ref} is not a dataset version")
    train_fingerprint = lifecycle.fingerprint(
        {
            "base": base.id, "dataset": dataset.id, "method": method, "train": cfg.model_dump(),
            "lora": lora.model_dump() if method != "full" else None, "merge": merge,
        }
    )  # fmt: skip
    existing = None if resume else TrainingRun.reuse(ws, name, train_fingerprint, alias)
    if existing is not None:
        return existing
    from lamina.data.versions import iter_rows

    quantization: dict[str, Any] | None = None
    if method == "qlora":
        model, tokenizer, quantization = load_quantized(model_path(ws, base))
    else:
        model, tokenizer = load_any(model_path(ws, base))
    ensure_chat_template(tokenizer)
    context = int(model.config.max_position_embeddings)
    rows = {s: [to_messages(r) for r in iter_rows(ws, dataset, s)] for s in dataset.splits}
    train_rows = rows.get("train") or next(iter(rows.values()))
    val_rows = (
        rows.get("val")
        or rows.get("validation")
        or random.Random(cfg.seed).sample(train_rows, max(1, len(train_rows) // 10))
    )
    task = SFTTask(
        [encode_example(tokenizer, m, context) for m in train_rows],
        [encode_example(tokenizer, m, context) for m in val_rows],
        tokenizer.pad_token_id,
    )
    if method in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=lora.rank,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
                task_type="CAUSAL_LM",
            ),
        )
    params = {
        "train": cfg.model_dump(), "method": method, "lora": lora.model_dump(), "base": base.ref,
        "dataset": dataset.ref, "quantization": quantization,
    }  # fmt: skip
    with TrainingRun.start(
        ws, name, kind="finetune", task=f"sft-{method}", params=params,
        parents=[(base.id, "fine_tunes"), (dataset.id, "trained_on")], fingerprint=train_fingerprint,
        resume=resume, track=track,
    ) as training:  # fmt: skip
        result = train(
            model, task, cfg, training.run_dir, resume=resume, on_progress=on_progress, on_eval=training.log
        )
        sample = generate(
            model,
            tokenizer,
            tokenizer.apply_chat_template(
                [to_messages({"instruction": "What is 2 plus 3?", "response": ""})[0]],
                tokenize=False,
                add_generation_prompt=True,
            ),
            max_new_tokens=40,
            temperature=0,
            seed=cfg.seed,
        )
        metrics = {
            "val_loss": result.best_val_loss,
            "train_loss": result.history[-1]["loss"],
            "steps": result.final_step,
            "tokens_per_s": result.tokens_per_s,
        }
        with training.scratch() as folder:
            if method == "full":
                model.save_pretrained(str(folder))
            elif merge:
                _merged(ws, base, model, folder)
            else:
                model.save_pretrained(str(folder))  # the adapter alone
                config_path = folder / "adapter_config.json"
                adapter = json.loads(config_path.read_text())
                adapter["base_model_name_or_path"] = str(
                    model_path(ws, base).resolve()
                )  # absolute: see ENVIRONMENT
                config_path.write_text(json.dumps(adapter, indent=1))
            tokenizer.save_pretrained(str(folder))
            save_history(result.history, folder, f"{name}: {method} fine-tune, {result.final_step} steps")
            version = training.finish(
                folder, family="causal_lm",
                config={
                    "method": method, "lora": lora.model_dump() if method != "full" else None,
                    "train": cfg.model_dump(), "merged": merge, "quantization": quantization,
                },
                metrics=metrics, parents=[(base.id, "fine_tuned_from"), (dataset.id, "trained_on")],
                meta={"adapter": method != "full" and not merge, "base": base.id, "sample": sample},
                evaluation={"val_loss": metrics["val_loss"]},
                samples=[{"prompt": "What is 2 plus 3?", "output": sample}],
                alias=alias, step=result.final_step,
            )  # fmt: skip
    return version


def _merged(ws: Workspace, base: ModelVersion, model: Any, folder: Path) -> None:
    """Save adapter + base as one plain model. A QLoRA adapter is merged into the full-precision base
    (the 4-bit weights were only for training), as the QLoRA paper's authors recommend."""
    if not getattr(model, "is_loaded_in_4bit", False) and not any(
        type(m).__name__ == "Linear4bit" for m in model.modules()
    ):
        model.merge_and_unload().save_pretrained(str(folder))
        return
    from peft import PeftModel

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        full, _ = load_pretrained(model_path(ws, base))
        PeftModel.from_pretrained(full, tmp).merge_and_unload().save_pretrained(str(folder))
