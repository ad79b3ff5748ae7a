"""Scale-out on Ray (issue 19): data builds on Ray Data workers and training on Ray Train workers
give what one process gives. One local Ray cluster with 2 worker CPUs serves every test here."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lamina.core.workspace import Workspace
from lamina.data.pipeline import build_dataset
from lamina.data.recipe import Recipe

ray = pytest.importorskip("ray", reason="Ray comes with the dev extra (lamina[ray])")


@pytest.fixture
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def dirty_corpus(path: Path, rows: int = 3000) -> Path:
    """Text with what the steps clean: stray whitespace and control characters, short rows, repeats."""
    rng = random.Random(7)
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxes".split()
    lines = []
    for i in range(rows):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 30)))
        if i % 11 == 0:
            text = "  " + text.upper() + "\u200b\t "
        if i % 17 == 0 and lines:
            text = json.loads(lines[-1])["text"]  # an exact repeat
        lines.append(json.dumps({"text": text, "label": i % 3}))
    path.write_text("\n".join(lines) + "\n")
    return path


def version_rows(ws: Workspace, version_id: str) -> dict[str, list[dict]]:
    folder = ws.store.local_path(version_id) / "data"
    return {p.stem: pq.read_table(p).to_pylist() for p in sorted(folder.glob("*.parquet"))}


@pytest.mark.slow
def test_a_recipe_built_on_ray_data_workers_gives_the_same_version(tmp_path: Path, local_ray: None) -> None:
    source = dirty_corpus(tmp_path / "corpus.jsonl")
    recipe = Recipe(
        source=str(source),
        steps=["normalize", {"filter": {"min_chars": 20}}, "lowercase", {"dedup": {"method": "exact"}}],
        split={"fractions": {"val": 0.1, "test": 0.1}, "by": "stratified", "field": "label"},
        batch_size=100,  # 30 source batches: two Ray Data windows
    )
    built = {}
    for executor in ("local", "ray"):
        ws = Workspace.init(tmp_path / executor)[0]
        built[executor] = (ws, build_dataset(ws, "corpus", recipe, executor=executor))
    (local_ws, local), (ray_ws, remote) = built["local"], built["ray"]
    assert remote.version.fingerprint == local.version.fingerprint
    assert version_rows(ray_ws, remote.version.id) == version_rows(local_ws, local.version.id)
    steps = {r: [s for s in b.report["steps"]] for r, b in (("local", local), ("ray", remote))}
    assert steps["ray"] == steps["local"]  # same counts, drops and drop examples per step
    assert steps["local"][1]["dropped"] and steps["local"][3]["dropped"]  # the filter and dedup did work
    assert remote.report["rows"] == local.report["rows"]
    assert remote.report["executor"] == {
        "kind": "ray",
        "steps_on_workers": ["normalize", "filter", "lowercase"],
    }
    assert local.report["executor"]["kind"] == "local"
    for ws, _ in built.values():
        ws.close()


# 40 steps of the tiny LM, an evaluation (Ray report) every 10 and a checkpoint every 10. The global
# batch is the same: 8 sequences in one process, 4 on each of 2 workers.
TRAIN = ["--max-steps", "40", "--eval-every", "10", "--checkpoint-every", "10", "--warmup", "5",
         "--context", "64", "--no-track"]  # fmt: skip
LOSS_TOLERANCE = 0.05  # relative difference in validation loss, one process vs 2 Ray workers


def lamina(ws: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAMINA_", "RAY_"))}
    env["COLUMNS"] = "200"
    command = [sys.executable, "-m", "lamina", "-w", str(ws), *args]
    return subprocess.Popen(
        command, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )


def finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.fixture(scope="module")
def text_ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from lamina.demo import DEMO_TEXT

    root = tmp_path_factory.mktemp("ray-train") / "ws"
    ws = Workspace.init(root)[0]
    build_dataset(ws, "text", Recipe(source=str(DEMO_TEXT), split={"fractions": {"val": 0.1}}))
    ws.close()
    yield root


def val_loss(root: Path, name: str) -> tuple[float, dict]:
    ws = Workspace.open(root)
    try:
        [version] = ws.catalog.find("model_version", name)
        return float(version.metrics["val_loss"]), version.metrics  # type: ignore[attr-defined]
    finally:
        ws.close()


@pytest.mark.slow
def test_two_ray_train_workers_reach_the_one_process_loss_and_resume_after_a_kill(text_ws: Path) -> None:
    finish(lamina(text_ws, "train", "lm", "-d", "text@v1", "-n", "single", "--batch-size", "8", *TRAIN))
    out = finish(lamina(text_ws, "train", "lm", "-d", "text@v1", "-n", "onray", "--batch-size", "4",
                        "--ray-workers", "2", *TRAIN))  # fmt: skip
    assert "Registered onray@v1" in out
    single, _ = val_loss(text_ws, "single")
    on_ray, metrics = val_loss(text_ws, "onray")
    print(f"val loss: one process {single:.4f}, 2 Ray workers {on_ray:.4f}")
    assert metrics["steps"] == 40 and on_ray < 3.6  # it learned (untrained: about ln(vocab) = 4.2)
    assert abs(on_ray - single) / single < LOSS_TOLERANCE, (single, on_ray)

    # Kill the whole Ray job (driver, workers, the local cluster) once step 20 is checkpointed ...
    command = [
        "train",
        "lm",
        "-d",
        "text@v1",
        "-n",
        "killed",
        "--batch-size",
        "4",
        "--ray-workers",
        "2",
        *TRAIN,
    ]
    proc = lamina(text_ws, *command)
    deadline = time.monotonic() + 300
    while not list((text_ws / "runs").glob("*/step-20")) and time.monotonic() < deadline:
        assert proc.poll() is None, (proc.stdout.read() if proc.stdout else "")[-4000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    [run_dir] = [p.parent for p in (text_ws / "runs").glob("*/step-20")]
    assert sorted(p.name for p in (run_dir / "step-20").glob("sampler_*.pt")) == [
        "sampler_0.pt",
        "sampler_1.pt",
    ]
    # ... then the same command with --resume continues it on two new workers, from step 20
    out = finish(lamina(text_ws, *command, "--resume"))
    resumed, metrics = val_loss(text_ws, "killed")
    assert metrics["steps"] == 40
    print(f"val loss: killed at step 20 and resumed {resumed:.4f}")
    assert abs(resumed - on_ray) / on_ray < 1e-3, (on_ray, resumed)  # measured: identical
