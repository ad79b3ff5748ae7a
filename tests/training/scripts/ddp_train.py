"""Run by tests/training/test_ddp.py under ``accelerate launch --num_processes 2 --cpu``."""

import hashlib
import json
import sys
import time
from pathlib import Path

from lamina.models.causal_lm import LMConfig, build_model
from lamina.models.tokenizer import train_tokenizer
from lamina.training.lm_task import LMTask, encode_texts
from lamina.training.loop import TrainConfig, train

out = Path(sys.argv[1])
mode = sys.argv[2] if len(sys.argv) > 2 else "train"  # train, resume, or timed (a 3-second budget)
resume = mode == "resume"
text = "Now is the winter of our discontent\nMade glorious summer by this sun of York;\n" * 40
tok = train_tokenizer([text], "char")
ids = encode_texts(tok, [text])
cfg = LMConfig.from_preset(
    "tiny",
    vocab_size=len(tok),
    context_length=32,
    num_layers=2,
    hidden_size=64,
    num_heads=2,
    num_kv_heads=2,
    intermediate_size=128,
)
model = build_model(cfg, tok, seed=0)
import torch.distributed as dist  # noqa: E402


def uneven(point: dict) -> None:
    """Rank 0 (the only one called) takes longer per step, so the two clocks drift apart."""
    time.sleep(0.02)


result = train(
    model,
    LMTask(ids, ids, 32),
    TrainConfig(
        max_steps={"train": 20, "resume": 30, "timed": 1_000_000}[mode],
        max_seconds=3.0 if mode == "timed" else None,
        batch_size=4,
        lr=3e-3,
        warmup_steps=2,
        eval_every=10,
        eval_batches=2,
        checkpoint_every=10,
        bf16=False,
    ),
    out / ("timed-run" if mode == "timed" else "run"),
    resume=resume,
    on_progress=uneven if mode == "timed" else None,
)

rank = dist.get_rank() if dist.is_initialized() else 0
digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())).hexdigest()
(out / f"rank{rank}{ {'train': '', 'resume': '-resumed', 'timed': '-timed'}[mode] }.json").write_text(
    json.dumps(
        {
            "world": dist.get_world_size() if dist.is_initialized() else 1,
            "backend": dist.get_backend() if dist.is_initialized() else None,
            "params": digest,
            "first_loss": result.history[0]["loss"],
            "last_loss": result.history[-1]["loss"],
            "final_step": result.final_step,
        }
    )
)
