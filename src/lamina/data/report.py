"""Quality reports: what each step did, duplicate rate, lengths, label balance, outliers, drift.

The JSON summary keeps a bounded sample of every field, so the next version can test drift against
it without reading this version's data: numeric fields (and text lengths) with a two-sample
Kolmogorov-Smirnov test, categorical fields with a chi-square test of homogeneity.
"""

from __future__ import annotations

import base64
import html
import io
import random
from array import array
from collections import Counter, defaultdict
from typing import Any

import numpy as np

SAMPLE_SIZE = 5000
MAX_CATEGORIES = 50
DRIFT_P_VALUE = 0.01


class _Reservoir:
    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seen, self.items = size, 0, []
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(value)
        else:
            j = self._rng.randrange(self.seen)
            if j < self.size:
                self.items[j] = value


class StatsCollector:
    """Collects per-field statistics of the rows that end up in a version."""

    def __init__(self, text_field: str, seed: int = 0) -> None:
        self.text_field = text_field
        self.seed = seed
        self.split_rows: Counter[str] = Counter()
        self.text_chars = array("I")  # 4 bytes per row, not a Python int each
        self.text_words = array("I")
        self.numeric: dict[str, _Reservoir] = {}
        self.categories: dict[str, Counter[Any]] = defaultdict(Counter)
        self.too_many: set[str] = set()
        self.split_labels: dict[str, Counter[Any]] = defaultdict(Counter)
        self.synthetic = 0

    def add(self, row: dict[str, Any], split: str) -> None:
        self.split_rows[split] += 1
        if row.get("synthetic"):
            self.synthetic += 1
        for name, value in row.items():
            if name.startswith("_") or name == "synthetic":
                continue
            if name == self.text_field and isinstance(value, str):
                self.text_chars.append(len(value))
                self.text_words.append(len(value.split()))
            elif isinstance(value, bool) or (isinstance(value, str) and name not in self.too_many):
                counter = self.categories[name]
                counter[value] += 1
                if len(counter) > MAX_CATEGORIES:
                    self.too_many.add(name)
                    del self.categories[name]
            elif isinstance(value, int | float) and not isinstance(value, bool):
                if name not in self.numeric:
                    self.numeric[name] = _Reservoir(SAMPLE_SIZE, self.seed)
                self.numeric[name].add(float(value))
                if isinstance(value, int) and name not in self.too_many:
                    counter = self.categories[name]
                    counter[value] += 1
                    if len(counter) > MAX_CATEGORIES:
                        self.too_many.add(name)
                        del self.categories[name]
        label = row.get("label")
        if label is not None and not isinstance(label, bytes):
            self.split_labels[split][label] += 1

    def summary(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if self.text_chars:
            chars = np.frombuffer(self.text_chars, dtype=np.uint32).astype(np.int64)
            words = np.frombuffer(self.text_words, dtype=np.uint32).astype(np.int64)
            fields[f"{self.text_field}.chars"] = _numeric_summary(chars, self.seed)
            fields[f"{self.text_field}.words"] = _numeric_summary(words, self.seed)
        for name, res in self.numeric.items():
            fields[name] = _numeric_summary(np.asarray(res.items), self.seed) | {"count": res.seen}
        for name, counter in self.categories.items():
            fields.setdefault(name, {})
            fields[name]["categories"] = {str(k): v for k, v in counter.most_common()}
        return {
            "split_rows": dict(self.split_rows),
            "synthetic_rows": self.synthetic,
            "fields": fields,
            "label_balance": {
                s: {str(k): v for k, v in c.most_common()} for s, c in self.split_labels.items()
            },
        }


def _numeric_summary(values: np.ndarray, seed: int) -> dict[str, Any]:
    if values.size == 0:
        return {"count": 0}
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    iqr = q3 - q1
    low, high = q1 - 3 * iqr, q3 + 3 * iqr
    outliers = int(((values < low) | (values > high)).sum()) if iqr > 0 else 0
    rng = np.random.default_rng(seed)
    sample = values if values.size <= SAMPLE_SIZE else rng.choice(values, SAMPLE_SIZE, replace=False)
    hist, edges = np.histogram(values, bins=30)
    return {
        "count": int(values.size),
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "median": float(median),
        "p25": float(q1),
        "p75": float(q3),
        "outliers": outliers,
        "outlier_bounds": [float(low), float(high)],
        "histogram": {"counts": hist.tolist(), "edges": [float(e) for e in edges]},
        "sample": [float(v) for v in sample],
    }


def drift(parent: dict[str, Any], current: dict[str, Any]) -> list[dict[str, Any]]:
    """One test per field present in both summaries."""
    from scipy import stats

    results = []
    for name, now in current.get("fields", {}).items():
        before = parent.get("fields", {}).get(name)
        if not before:
            continue
        if now.get("sample") and before.get("sample"):
            test = stats.ks_2samp(before["sample"], now["sample"])
            results.append(_drift_row(name, "ks", float(test.statistic), float(test.pvalue)))
        elif now.get("categories") and before.get("categories"):
            keys = sorted(set(now["categories"]) | set(before["categories"]))
            table = np.array(
                [[before["categories"].get(k, 0) for k in keys], [now["categories"].get(k, 0) for k in keys]]
            )
            table = table[:, table.sum(axis=0) > 0]
            if table.shape[1] < 2:
                continue
            chi2, p, _, _ = stats.chi2_contingency(table)
            results.append(_drift_row(name, "chi2", float(chi2), float(p)))
    return results


def _drift_row(name: str, test: str, statistic: float, p_value: float) -> dict[str, Any]:
    return {
        "field": name,
        "test": test,
        "statistic": statistic,
        "p_value": p_value,
        "drifted": p_value < DRIFT_P_VALUE,
    }


def strip_samples(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without the raw samples (for compact display)."""
    fields = {
        k: {kk: vv for kk, vv in v.items() if kk not in ("sample", "histogram")}
        for k, v in summary["fields"].items()
    }
    return {**summary, "fields": fields}


# -- HTML ------------------------------------------------------------------------------------------


def _figure_png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def render_html(report: dict[str, Any]) -> str:
    """A self-contained page (plots embedded as PNG) people can open from the artifact folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images: list[tuple[str, str]] = []
    steps = report["steps"]
    if steps:
        fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(steps)))
        labels = [s["name"] for s in steps]
        ax.barh(labels, [s["rows_in"] for s in steps], color="#c7d7ee", label="rows in")
        ax.barh(labels, [s["rows_out"] for s in steps], color="#3a6fb0", label="rows out")
        ax.invert_yaxis()
        ax.set_xlabel("rows")
        ax.legend(loc="lower right")
        images.append(("Rows through each step", _figure_png(fig)))
    for name, info in report["stats"]["fields"].items():
        hist = info.get("histogram")
        if hist:
            fig, ax = plt.subplots(figsize=(7, 2.6))
            edges = hist["edges"]
            ax.bar(edges[:-1], hist["counts"], width=np.diff(edges), align="edge", color="#3a6fb0")
            ax.set_xlabel(name)
            ax.set_ylabel("rows")
            images.append((f"Distribution of {name}", _figure_png(fig)))
    balance = report["stats"].get("label_balance") or {}
    if balance:
        fig, ax = plt.subplots(figsize=(7, 2.8))
        labels = sorted({k for c in balance.values() for k in c})[:MAX_CATEGORIES]
        width = 0.8 / max(1, len(balance))
        for i, (split, counts) in enumerate(sorted(balance.items())):
            ax.bar(np.arange(len(labels)) + i * width, [counts.get(k, 0) for k in labels], width, label=split)
        ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=45, ha="right")
        ax.legend()
        images.append(("Label balance by split", _figure_png(fig)))

    def table(rows: list[list[Any]], header: list[str]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    step_rows = [
        [s["name"], s["rows_in"], s["rows_out"], ", ".join(f"{k}: {v}" for k, v in s["dropped"].items())]
        for s in steps
    ]
    check_rows = [
        [c["check"], c["value"], c["limit"], "pass" if c["passed"] else "FAIL"] for c in report["checks"]
    ]
    drift_rows = [
        [
            d["field"],
            d["test"],
            f"{d['statistic']:.4f}",
            f"{d['p_value']:.3g}",
            "yes" if d["drifted"] else "no",
        ]
        for d in report.get("drift", [])
    ]
    field_rows = [
        [
            name,
            info.get("count", ""),
            info.get("mean", ""),
            info.get("outliers", ""),
            len(info.get("categories", {})) or "",
        ]
        for name, info in report["stats"]["fields"].items()
    ]
    parts = [
        f"<h1>Dataset {html.escape(report['name'])}</h1>",
        f"<p>{report['rows']:,} rows · splits {html.escape(str(report['splits']))} · duplicate rate "
        f"{report['duplicate_rate']:.2%} · dropped {report['drop_rate']:.2%} · bad records skipped "
        f"{report['errors']['skipped']:,} · synthetic rows {report['stats']['synthetic_rows']:,}</p>",
        "<h2>Steps</h2>",
        table(step_rows, ["step", "rows in", "rows out", "dropped (reason: rows)"]),
        "<h2>Checks</h2>",
        table(check_rows, ["check", "value", "limit", "result"]) if check_rows else "<p>none</p>",
        "<h2>Fields</h2>",
        table(field_rows, ["field", "count", "mean", "outliers (3×IQR)", "categories"]),
        "<h2>Drift against the previous version</h2>",
        table(drift_rows, ["field", "test", "statistic", "p-value", f"drifted (p < {DRIFT_P_VALUE})"])
        if drift_rows
        else "<p>no previous version to compare with</p>",
    ]
    parts += [f"<h2>{html.escape(t)}</h2><img src='data:image/png;base64,{png}'/>" for t, png in images]
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}img{max-width:100%}"
    )
    return (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(report['name'])}</title>"
        f"<style>{style}</style>" + "".join(parts)
    )
