"""``lamina rails eval``: how well a rail separates labelled texts — precision and recall at the
rail's own threshold, AUC, the true-positive rate at 5 % false positives, and the ROC curve as a
PNG and an HTML page (the page embeds the image and the table, so it travels as one file)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from lamina.guardrails.classifier import roc_points, tpr_at_fpr


def metrics_of(scores: np.ndarray, truth: np.ndarray, hits: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    tp, fp = int((hits & truth).sum()), int((hits & ~truth).sum())
    fn = int((~hits & truth).sum())
    both = truth.any() and (~truth).any()
    return {
        "rows": int(len(truth)),
        "positives": int(truth.sum()),
        "precision": tp / max(tp + fp, 1),
        "recall": tp / max(tp + fn, 1),
        "fpr": fp / max(int((~truth).sum()), 1),
        "auc": float(roc_auc_score(truth, scores)) if both else None,
        "tpr_at_fpr05": tpr_at_fpr(scores, truth, 0.05)[0] if both else None,
    }


def roc_report(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    stem: Path,
    title: str,
    table: dict[str, dict[str, Any]] | None = None,
) -> tuple[Path, Path]:
    """``stem.png`` and ``stem.html``: one ROC curve per named (scores, truth)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (scores, truth) in curves.items():
        if not truth.any() or truth.all():
            continue
        fpr, tpr, _ = roc_points(scores, truth)
        tpr5, _ = tpr_at_fpr(scores, truth, 0.05)
        ax.plot(fpr, tpr, label=f"{name} (TPR {tpr5:.2f} at FPR 5 %)")
    ax.axvline(0.05, color="grey", linestyle=":", linewidth=1)
    ax.plot([0, 1], [0, 1], color="lightgrey", linewidth=1)
    ax.set(
        xlabel="false-positive rate", ylabel="true-positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01)
    )
    ax.legend(loc="lower right", fontsize=8)
    png = stem.with_suffix(".png")
    fig.savefig(png, dpi=110, bbox_inches="tight")
    plt.close(fig)
    rows = table or {}
    columns = sorted({k for m in rows.values() for k, v in m.items() if not isinstance(v, dict)})
    body = "".join(
        "<tr><th>"
        + html.escape(name)
        + "</th>"
        + "".join(f"<td>{_fmt(m.get(c))}</td>" for c in columns)
        + "</tr>"
        for name, m in rows.items()
    )
    image = base64.b64encode(png.read_bytes()).decode()
    header = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    page = f"""<!doctype html><html lang="en"><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}}</style>
<h1>{html.escape(title)}</h1><img alt="ROC curves: true-positive rate against false-positive rate"
src="data:image/png;base64,{image}"><table><tr><th></th>{header}</tr>
{body}</table><pre>{html.escape(json.dumps(rows, indent=1, default=str))}</pre></html>"""
    page_path = stem.with_suffix(".html")
    page_path.write_text(page, encoding="utf-8")
    return png, page_path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value)) if value is not None else ""


def evaluate(rail: Any, texts: list[str], truth: np.ndarray, out: Path, name: str) -> dict[str, Any]:
    """A built rail over labelled texts: its verdicts (hit = any action but allow) and scores."""
    verdicts = [rail.check(text, {"stage": "input"}) for text in texts]
    scores = np.array([v.score for v in verdicts], dtype=float)
    hits = np.array([v.acted for v in verdicts])
    metrics = metrics_of(scores, truth, hits)
    png, page = roc_report({name: (scores, truth)}, out, title=f"{name}: ROC", table={name: metrics})
    return {**metrics, "png": str(png), "html": str(page)}
