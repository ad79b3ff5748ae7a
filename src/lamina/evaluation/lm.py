"""Evaluating causal LMs: perplexity on held-out text, sample generations, harness tasks."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import torch

from lamina.core.catalog import EvalReport
from lamina.core.errors import LaminaError
from lamina.core.workspace import Workspace

DEFAULT_PROMPTS = ["\n", "The ", "First Citizen:\n"]


@torch.no_grad()
def perplexity(model: Any, ids: torch.Tensor, context: int, max_windows: int = 200) -> dict[str, float]:
    """Mean next-token loss over non-overlapping windows of the token stream, and its exp."""
    model.eval()
    windows = [ids[i : i + context + 1] for i in range(0, len(ids) - context - 1, context)][:max_windows]
    if not windows:
        raise LaminaError(f"not enough held-out tokens ({len(ids)}) for one window of {context + 1}")
    losses = []
    for start in range(0, len(windows), 16):
        batch = torch.stack(windows[start : start + 16]).long()
        losses.append(model(input_ids=batch, labels=batch).loss.float().item() * len(batch))
    loss = sum(losses) / len(windows)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50)), "tokens": len(windows) * context}


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompt: str,
    *,
    max_new_tokens: int = 100,
    temperature: float = 0.8,
    top_p: float = 0.95,
    seed: int | None = 0,
) -> str:
    if max_new_tokens <= 0:
        raise LaminaError(f"--max-tokens must be > 0, got {max_new_tokens}")
    if temperature < 0:
        raise LaminaError(f"--temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise LaminaError(f"--top-p must be in (0, 1], got {top_p}")
    if seed is not None:
        torch.manual_seed(seed)
    model.eval()
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    if ids.shape[1] == 0:
        ids = tokenizer(tokenizer.bos_token, return_tensors="pt", add_special_tokens=False)["input_ids"]
    context = int(model.config.max_position_embeddings)
    if ids.shape[1] + max_new_tokens <= context:
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=top_p if temperature > 0 else None,
            pad_token_id=tokenizer.pad_token_id,
        )
        new = out[0][ids.shape[1] :]
    else:
        new = _generate_cropped(
            model, ids, context, max_new_tokens, temperature, top_p, tokenizer.eos_token_id
        )
    return str(tokenizer.decode(new, skip_special_tokens=True))


def _generate_cropped(
    model: Any,
    ids: torch.Tensor,
    context: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    eos_id: int | None,
) -> torch.Tensor:
    """Sample past the trained context by feeding only the last ``context`` tokens (as nanoGPT does);
    HF ``generate`` would run the positions off the end of what the model was trained on."""
    out = ids
    for _ in range(max_new_tokens):
        logits = model(input_ids=out[:, -context:]).logits[:, -1, :].float()  # (1, vocab)
        if temperature <= 0:
            token = logits.argmax(dim=-1, keepdim=True)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            sorted_probs, order = probs.sort(descending=True)
            keep = sorted_probs.cumsum(-1) - sorted_probs < top_p  # smallest set reaching top_p
            sorted_probs = sorted_probs * keep
            token = order.gather(-1, torch.multinomial(sorted_probs / sorted_probs.sum(), 1))
        out = torch.cat([out, token], dim=1)
        if eos_id is not None and int(token) == eos_id:
            break
    return out[0, ids.shape[1] :]


def run_harness(
    model_dir: Path, tasks: list[str], limit: int | None = None, include_path: Path | None = None,
    context: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run lm-evaluation-harness tasks on a saved model (its own ``hf`` loader, fp32, offline).

    ``include_path``: a folder of task YAML files (local data: ``dataset_path: json``), found by
    name beside the harness's own tasks. Nothing is downloaded: datasets must be local files.
    """
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise LaminaError(
            "lm-evaluation-harness is not installed", hint="pip install 'lamina[eval]'"
        ) from exc
    import os

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    manager = TaskManager(include_path=str(include_path)) if include_path else TaskManager()
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise LaminaError(
            f"unknown harness task(s): {', '.join(unknown)}",
            hint="name tasks defined in --harness-tasks DIR (YAML files) or built into lm-eval",
        )
    args = f"pretrained={model_dir},dtype=float32" + (f",max_length={context}" if context else "")
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"  # the harness assumes cuda otherwise
    results = lm_eval.simple_evaluate(
        model="hf", model_args=args, tasks=tasks, limit=limit, task_manager=manager, device=device
    )
    return {task: _plain(metrics) for task, metrics in (results or {}).get("results", {}).items()}


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    """The harness's metrics as JSON-safe numbers and strings (it also returns 'N/A' and numpy)."""
    return {k: (float(v) if isinstance(v, int | float) else str(v)) for k, v in metrics.items()}


def record_eval(
    ws: Workspace,
    subject_id: str,
    name: str,
    metrics: dict[str, Any],
    samples: list[dict[str, str]],
    passed: bool | None = None,
) -> EvalReport:
    """Commit an eval-report artifact (report.json + samples.md) attached to ``subject_id``."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "report.json").write_text(json.dumps({"metrics": metrics, "samples": samples}, indent=1))
        (folder / "samples.md").write_text(
            "\n\n".join(
                f"### prompt {s['prompt']!r}\n\n```\n{s['prompt']}{s['output']}\n```" for s in samples
            )
        )
        report = EvalReport(name=name, subject_id=subject_id, metrics=metrics, passed=passed)
        return ws.commit(folder, report, [(subject_id, "evaluated")]).artifact  # type: ignore[return-value]
