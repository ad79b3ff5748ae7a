"""Data-parallel training across 2 CPU processes (gloo) with ``accelerate launch``."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "ddp_train.py"


def launch(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # accelerate's --cpu launcher runs one process (or needs MPI); its torchrun launcher (--multi_gpu)
    # starts the processes, and without a GPU the loop's Accelerator(cpu=True) joins them over gloo.
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(SCRIPT),
        str(out),
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_two_cpu_processes_train_in_step_and_resume(tmp_path: Path) -> None:
    done = launch(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 and r["backend"] == "gloo" for r in ranks)
    assert ranks[0]["params"] == ranks[1]["params"]  # gradients were all-reduced: identical weights
    assert ranks[0]["last_loss"] < ranks[0]["first_loss"]
    assert sorted(p.name for p in (tmp_path / "run" / "step-20").glob("sampler_*.pt")) == [
        "sampler_0.pt",
        "sampler_1.pt",
    ]
    resumed = launch(tmp_path, "resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = [json.loads((tmp_path / f"rank{r}-resumed.json").read_text()) for r in (0, 1)]
    assert after[0]["final_step"] == 30 and after[0]["params"] == after[1]["params"]


@pytest.mark.slow
def test_two_processes_stop_together_at_a_wall_clock_budget(tmp_path: Path) -> None:
    # the processes start their clocks at different moments and rank 0 also sleeps in its progress
    # callback, so their own clocks can cross the budget at different steps; one that left the loop
    # alone would hang the other at its next collective. The slowest clock decides for both.
    done = launch(tmp_path, "timed")
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}-timed.json").read_text()) for r in (0, 1)]
    assert ranks[0]["final_step"] == ranks[1]["final_step"] < 1_000_000
    assert ranks[0]["params"] == ranks[1]["params"]


@pytest.mark.slow
def test_lamina_train_lm_under_accelerate_launch_registers_once(tmp_path: Path) -> None:
    from lamina.core.workspace import Workspace
    from lamina.data.pipeline import build_dataset
    from lamina.data.recipe import Recipe
    from lamina.demo import DEMO_TEXT

    ws, _ = Workspace.init(tmp_path / "ws")
    build_dataset(ws, "text", Recipe(source=str(DEMO_TEXT), split={"fractions": {"val": 0.1}}))
    ws.close()
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "lamina",
        "-w",
        str(tmp_path / "ws"),
        "train",
        "lm",
        "--dataset",
        "text",
        "--name",
        "ddp",
        "--max-steps",
        "8",
        "--batch-size",
        "4",
        "--eval-every",
        "4",
        "--alias",
        "champion",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ws = Workspace.open(tmp_path / "ws")
    assert [v.ref for v in ws.catalog.find("model_version")] == ["ddp@v1"]
    runs = ws.catalog.find("run")
    assert len(runs) == 1 and runs[0].status == "completed"  # type: ignore[attr-defined]
    assert ws.resolve("ddp@champion").ref == "ddp@v1"
    ws.close()
