"""Language-model training on Ray Train workers (``lamina train lm --ray-workers N``).

Ray Train's ``TorchTrainer`` starts N workers and joins them in one torch.distributed group (gloo on
CPU, NCCL on GPUs). Each worker runs the same ``train_lm`` as one process does: accelerate sees the
group Ray made (``MULTI_CPU``/``MULTI_GPU``), so gradients are all-reduced, rank 0 registers the model
once and the others adopt it, and checkpoints hold every rank's sampler state, so ``--resume`` continues
a run whose workers died. Each worker reports to Ray at every evaluation (``eval_every`` steps, the
loop's epoch), not every step: a report costs about 2 s here.

The workspace must be one every worker reaches: a folder on one machine (a local Ray), or the cluster
profile (catalog on PostgreSQL, artifacts on S3) across machines.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lamina.core.cluster import ensure_ray
from lamina.core.errors import LaminaError
from lamina.core.workspace import Workspace
from lamina.training.lm import LMTrainResult

RESULT_FILE = "lamina-result.json"


def _worker_loop(config: dict[str, Any]) -> None:
    """What each Ray Train worker runs: ``train_lm`` with a Ray report at every evaluation."""
    import ray.train

    from lamina.training.lm import train_lm

    def report(step: int, point: dict[str, float]) -> None:
        ray.train.report({k: v for k, v in point.items() if isinstance(v, int | float)})

    ws = Workspace.open(config["root"])
    try:
        result = train_lm(ws, config["dataset"], config["name"], on_eval=report, **config["kwargs"])
    finally:
        ws.close()
    if ray.train.get_context().get_world_rank() == 0:
        Path(config["result_file"]).write_text(
            json.dumps({"version": result.version.id, "reused": result.reused, "run_id": result.run_id})
        )


def train_lm_on_ray(
    ws: Workspace,
    dataset_ref: str,
    name: str,
    *,
    workers: int,
    address: str | None = None,
    **kwargs: Any,
) -> LMTrainResult:
    """``train_lm`` across ``workers`` Ray Train workers; returns what rank 0 registered."""
    if workers < 1:
        raise LaminaError(f"--ray-workers must be at least 1, got {workers}")
    ensure_ray(address)  # a local Ray's workers inherit this process's LAMINA_* and HF_* settings
    import torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    storage = ws.root / ".cache" / "ray-train"
    storage.mkdir(parents=True, exist_ok=True)
    result_file = storage / f"{name}-{os.getpid()}-{RESULT_FILE}"
    result_file.unlink(missing_ok=True)
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={
            "root": str(ws.root),
            "dataset": dataset_ref,
            "name": name,
            "kwargs": kwargs,
            "result_file": str(result_file),
        },  # fmt: skip
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=torch.cuda.is_available()),
        run_config=RunConfig(name=f"{name}-train", storage_path=str(storage)),
    )
    try:
        trainer.fit()
    except Exception as exc:  # Ray wraps a worker's error (TrainingFailedError); say which it was
        cause = exc.__cause__ or exc
        raise LaminaError(
            f"Ray training of {name!r} failed: {type(cause).__name__}: {cause}",
            hint="continue with the same command plus --resume (the checkpoints are kept)",
        ) from exc
    done = json.loads(result_file.read_text())
    result_file.unlink(missing_ok=True)
    version = ws.catalog.get(done["version"])
    from lamina.core.catalog import ModelVersion

    assert isinstance(version, ModelVersion)
    return LMTrainResult(
        version, done["reused"], version.metrics, version.meta.get("sample", ""), done["run_id"]
    )
