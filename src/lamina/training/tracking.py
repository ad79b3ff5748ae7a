"""Experiment tracking in MLflow (a SQLite store inside the workspace unless told otherwise), plus
training curves as PNG and a self-contained HTML page for people who would rather look than read."""

from __future__ import annotations

import base64
import html
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
EXPERIMENT = "lamina"


class Tracker:
    """One MLflow run. ``tracking_uri`` defaults to ``sqlite:///<workspace>/mlflow.db``."""

    def __init__(
        self, workspace: Path, run_name: str, tracking_uri: str | None = None, system_metrics: bool = True
    ) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow

        logging.getLogger("mlflow").setLevel(
            logging.WARNING
        )  # its INFO lines would interleave with our progress
        self.mlflow = mlflow
        mlflow.set_tracking_uri(tracking_uri or f"sqlite:///{workspace / 'mlflow.db'}")
        # processes starting at once (tune workers) take turns: MLflow builds its schema on first use
        # and two doing so together collide ("table … already exists")
        from filelock import FileLock

        with FileLock(workspace / ".mlflow.lock", timeout=300):
            client = mlflow.tracking.MlflowClient()
            experiment = client.get_experiment_by_name(EXPERIMENT)
            experiment_id = (
                experiment.experiment_id
                if experiment
                else client.create_experiment(EXPERIMENT, artifact_location=(workspace / "mlruns").as_uri())
            )
        self.run = mlflow.start_run(
            experiment_id=experiment_id, run_name=run_name, log_system_metrics=system_metrics
        )

    @property
    def run_id(self) -> str:
        return str(self.run.info.run_id)

    def params(self, params: dict[str, Any]) -> None:
        flat = {k: v for k, v in _flatten(params).items()}
        self.mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(
            {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}, step=step
        )

    def artifact(self, path: Path) -> None:
        self.mlflow.log_artifact(str(path))

    def end(self, status: str = "FINISHED") -> None:
        self.mlflow.end_run(status=status)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def save_history(history: list[dict[str, float]], folder: Path, title: str) -> None:
    """What every trained model folder keeps of its run: ``history.json`` and the curves."""
    import json

    (folder / "history.json").write_text(json.dumps(history))
    plot_curves(history, folder, title)


def curve_png(history: list[dict[str, float]], title: str) -> bytes:
    """Loss and validation loss against steps, as PNG (the model folder's curve, the console's)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="#3a6fb0", alpha=0.8)
    val = [(h["step"], h["val_loss"]) for h in history if "val_loss" in h]
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation loss", color="#d9822b")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if train or val:
        ax.legend()
    ax.grid(alpha=0.3)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out.getvalue()


def compare_png(runs: list[tuple[str, list[dict[str, float]]]]) -> bytes:
    """Several runs' curves on one plot: validation loss where a run has it, else train loss."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for label, history in runs:
        key = "val_loss" if any("val_loss" in h for h in history) else "loss"
        points = [(h["step"], h[key]) for h in history if key in h]
        if points:
            ax.plot(
                *zip(*points, strict=True), marker="." if key == "val_loss" else None, label=f"{label}: {key}"
            )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out.getvalue()


def plot_curves(history: list[dict[str, float]], out_dir: Path, title: str) -> tuple[Path, Path]:
    """training_curve.png and training_curve.html (loss and validation loss against steps)."""
    png = out_dir / "training_curve.png"
    png.write_bytes(curve_png(history, title))
    val = [(h["step"], h["val_loss"]) for h in history if "val_loss" in h]
    rows = "".join(f"<tr><td>{s}</td><td>{v:.4f}</td></tr>" for s, v in val)
    page = (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<h1>{html.escape(title)}</h1>"
        f"<img src='data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}'>"
        "<h2>Validation loss</h2><table border=1 cellpadding=4>"
        f"<tr><th>step</th><th>val loss</th></tr>{rows}</table>"
    )
    page_path = out_dir / "training_curve.html"
    page_path.write_text(page)
    return png, page_path
