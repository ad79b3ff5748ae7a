"""What each console page shows, read through the layers' public functions (no query of its own).

Each function returns the template's context; the routes (``routes.py``) only pick the template.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from lamina.core.workspace import Workspace

TEXT_FAMILIES_SHOWN = ("causal_lm",)


def chat(ws: Workspace, pool: Any) -> dict[str, Any]:
    """The models a chat can pick (aliases first: they follow promotions) and the RAG collections."""
    from lamina.serving.pool import IMAGE_FAMILIES, TEXT_FAMILIES

    rows = pool.listing()
    text = [r["id"] for r in rows if r["family"] in TEXT_FAMILIES]
    text.sort(key=lambda ref: (not ref.endswith("@champion"), "@v" in ref, ref))
    collections = sorted({a.name for a in ws.catalog.find("vector_index")})
    images = [r["id"] for r in rows if r["family"] in IMAGE_FAMILIES]
    images.sort(key=lambda ref: ("@v" in ref, ref))
    return {"models": text, "collections": collections, "image_models": images}


def images(ws: Workspace, pool: Any) -> dict[str, Any]:
    from lamina.hub.registry import list_models

    picks = chat(ws, pool)["image_models"]
    families = {m["name"]: m["family"] for m in list_models(ws)}
    return {"models": [{"ref": r, "family": families.get(r.split("@")[0], "")} for r in picks]}


def datasets(ws: Workspace) -> dict[str, Any]:
    from lamina.data.versions import list_versions

    return {"versions": list_versions(ws)}


def dataset(ws: Workspace, ref: str, compare: str | None = None) -> dict[str, Any]:
    from lamina.core.lineage import lineage_tree
    from lamina.data.versions import diff, list_versions, resolve_version, show

    info = show(ws, ref)
    version = resolve_version(ws, ref)
    others = [v["ref"] for v in list_versions(ws, version.name) if v["ref"] != info["ref"]]
    return {
        "info": info,
        "tree": lineage_tree(ws.catalog, version),
        "others": others,
        "compare": compare,
        "diff": diff(ws, compare, info["ref"]) if compare else None,
    }


def runs(ws: Workspace, limit: int = 100) -> dict[str, Any]:
    rows = ws.catalog.find("run", limit=limit)
    return {"runs": [_run_row(r) for r in rows]}


def run(ws: Workspace, run_id: str) -> dict[str, Any]:
    from lamina.training.lifecycle import run_history

    found = ws.catalog.get(run_id)
    row = _run_row(found)
    history = run_history(ws, found)  # type: ignore[arg-type]
    return {"run": row, "points": len(history), "last": history[-1] if history else None,
            "tracking_uri": ws.settings.tracking_uri}  # fmt: skip


def compare(ws: Workspace, run_ids: list[str]) -> dict[str, Any]:
    """Runs side by side: their metrics in one table (the curves: ``compare_png``)."""
    rows = [_run_row(ws.catalog.get(i)) for i in run_ids]
    names = sorted({k for r in rows for k in r["metrics"]})
    return {"runs": rows, "metric_names": names}


def compare_png(ws: Workspace, run_ids: list[str]) -> bytes:
    from lamina.training.lifecycle import run_history
    from lamina.training.tracking import compare_png as draw

    runs = [ws.catalog.get(i) for i in run_ids]
    return draw([(f"{r.name} ({r.id[-6:]})", run_history(ws, r)) for r in runs])  # type: ignore[arg-type]


def curve(ws: Workspace, run_id: str) -> bytes:
    from lamina.training.lifecycle import run_history
    from lamina.training.tracking import curve_png

    found = ws.catalog.get(run_id)
    return curve_png(run_history(ws, found), found.name)  # type: ignore[arg-type]


def _run_row(r: Any) -> dict[str, Any]:
    from lamina.core.errors import NotFound

    if r.kind != "run":
        raise NotFound(f"{r.id} is not a training run")
    metrics = {k: v for k, v in (r.metrics or {}).items() if isinstance(v, int | float)}
    return {
        "id": r.id, "name": r.name, "task": r.task, "status": r.status,
        "started_at": r.started_at.isoformat(timespec="seconds") if r.started_at else "",
        "ended_at": r.ended_at.isoformat(timespec="seconds") if r.ended_at else "",
        "metrics": dict(sorted(metrics.items())[:8]), "tracking_run_id": r.tracking_run_id,
    }  # fmt: skip


def models(ws: Workspace) -> dict[str, Any]:
    from lamina.hub.registry import list_models

    rows = list_models(ws)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_name.setdefault(row["name"], []).append(row)
    for versions in by_name.values():
        versions.sort(key=lambda v: -v["version"])
    return {"models": dict(sorted(by_name.items()))}


def model(ws: Workspace, ref: str) -> dict[str, Any]:
    from lamina.hub.governance import report
    from lamina.hub.registry import alias_moves, show

    info = show(ws, ref)
    evaluations = [
        {"ref": a.ref, "metrics": {k: v for k, v in (getattr(a, "metrics", None) or {}).items()
                                   if isinstance(v, int | float)}, "passed": getattr(a, "passed", None)}
        for a, _ in ws.catalog.children(info["id"]) if a.kind == "eval_report"
    ]  # fmt: skip
    return {"info": info, "moves": alias_moves(ws, info["id"]), "governance": report(ws, ref),
            "evaluations": evaluations}  # fmt: skip


def monitoring(
    ws: Workspace,
    hours: float = 24,
    reference: str | None = None,
    window: int = 500,
    cipher: Any = None,
    sample: int = 2000,
) -> dict[str, Any]:
    """KPIs of the window, the alert rules on them, and (asked for a reference) drift of the newest
    ``window`` prompts from up to ``sample`` of the reference's training texts."""
    from lamina.data.versions import list_versions
    from lamina.monitoring.alerts import evaluate
    from lamina.monitoring.kpis import collect

    series = collect(ws, timedelta(hours=hours))
    fired = evaluate(ws, ws.settings.monitoring.alerts) if ws.settings.monitoring.alerts else []
    drift, drift_error = None, None
    if reference:
        from lamina.core.errors import LaminaError
        from lamina.monitoring.drift import check_workspace, recent_prompts, reference_texts

        try:
            texts = reference_texts(ws, reference, "train", sample)
            drift = check_workspace(ws, texts, recent_prompts(ws, cipher, window))
        except LaminaError as exc:
            drift_error = exc.message + (f" ({exc.hint})" if exc.hint else "")
    return {"totals": series.as_dict()["totals"], "per_key": series.per_key, "hours": hours,
            "alerts": [a.as_dict() for a in fired], "datasets": [v["ref"] for v in list_versions(ws)],
            "reference": reference, "window": window, "sample": sample, "drift": drift,
            "drift_error": drift_error}  # fmt: skip


def monitoring_png(ws: Workspace, hours: float = 24) -> bytes:
    from lamina.monitoring.kpis import collect
    from lamina.monitoring.report import plots_png

    return plots_png(collect(ws, timedelta(hours=hours)))


def review(ws: Workspace, cipher: Any, request_id: str | None = None) -> dict[str, Any]:
    from lamina.monitoring.review import queue

    return {"items": queue(ws, cipher, 100, request_id), "request_id": request_id}


def prompts(ws: Workspace) -> dict[str, Any]:
    """The templates, and every optimisation's scored candidates (``lamina prompts optimize``)."""
    from lamina.rag.prompts import listing

    runs = [a for a in ws.catalog.find("eval_report") if a.name.endswith("-prompt-optimisation")]
    return {"prompts": listing(ws), "optimisations": [{"ref": a.ref, **a.meta} for a in runs]}


def admin(ws: Workspace) -> dict[str, Any]:
    from lamina.gateway.keys import list_keys

    return {"keys": list_keys(ws)}


def audit(ws: Workspace, query: Any, limit: int = 100) -> dict[str, Any]:
    from lamina.gateway.audit import recent

    return {"rows": recent(ws, limit, query), "query": query}
