"""``lamina governance report MODEL_REF``: one model version's accountability file, as JSON and HTML.

What it gathers, all from the catalog (nothing is typed in by hand, so it cannot drift): the model
card; the lineage down to the sources, with each dataset's license (the recipe's ``license``, or the
values of a ``license`` column); every evaluation of the version; the guardrails that guard it (the
rails policy, each rail model's validation results) and what they did in production (audit
verdicts for this version); its use (requests, tokens) and feedback history; intended use and
limitations (the version's ``intended_use``/``limitations`` metadata, else the card's text). Each
item is then mapped to ISO/IEC 42001 Annex A controls and the EU AI Act's transparency duties, with
``present`` or ``gap`` — a gap is reported, never filled with boilerplate.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from lamina.core.catalog import ModelVersion
from lamina.core.catalog.models import AuditEvent, DatasetVersion, EvalReport
from lamina.core.lineage import lineage_tree
from lamina.core.workspace import Workspace
from lamina.hub.registry import model_path, resolve_model

# (framework, clause, what it asks, the report section that answers it)
MAPPING = [
    (
        "ISO/IEC 42001",
        "A.4.3 / A.4.4 Data and tooling resources",
        "document the data and tools the AI system uses",
        "lineage",
    ),
    (
        "ISO/IEC 42001",
        "A.6.2.3 Documentation of AI system design and development",
        "record how the system was built (configuration, training, parents)",
        "model",
    ),
    (
        "ISO/IEC 42001",
        "A.6.2.4 AI system verification and validation",
        "evaluate before release",
        "evaluations",
    ),
    ("ISO/IEC 42001", "A.6.2.6 AI system operation and monitoring", "monitor the system in use", "operation"),
    (
        "ISO/IEC 42001",
        "A.7.2–A.7.5 Data for AI systems: acquisition, quality, provenance",
        "know where data came from and under what terms",
        "licenses",
    ),
    (
        "ISO/IEC 42001",
        "A.8.2 System documentation and information for users",
        "tell users what it is for",
        "intended_use",
    ),
    (
        "ISO/IEC 42001",
        "A.5.4 Assessing AI system impact on individuals",
        "state limitations and risks",
        "limitations",
    ),
    ("ISO/IEC 42001", "A.9.4 Intended use of the AI system", "controls that keep use within bounds", "rails"),
    (
        "ISO/IEC 42001",
        "A.8.3 External reporting / A.3.3 reporting of concerns",
        "a channel for feedback",
        "feedback",
    ),
    (
        "EU AI Act",
        "Art. 13 Transparency and provision of information to deployers",
        "capabilities, limitations, accuracy metrics, intended purpose",
        "evaluations",
    ),
    (
        "EU AI Act",
        "Art. 13(3)(b) characteristics, capabilities and limitations of performance",
        "limitations",
        "limitations",
    ),
    (
        "EU AI Act",
        "Art. 50(1) informing people they interact with an AI system",
        "the serving API marks every answer as model output (model, system_fingerprint)",
        "operation",
    ),
    (
        "EU AI Act",
        "Art. 50(2) marking synthetic content as artificially generated",
        "machine-readable provenance of generated output",
        "operation",
    ),
    (
        "EU AI Act",
        "Art. 53(1)(a)–(b), Annex XI/XII technical documentation for providers",
        "training process, data, evaluation results",
        "model",
    ),
    ("EU AI Act", "Art. 53(1)(d) summary of the content used for training", "the training data", "licenses"),
    (
        "EU AI Act",
        "Art. 15 accuracy, robustness and cybersecurity",
        "protection against misuse (guardrails)",
        "rails",
    ),
]


def report(ws: Workspace, ref: str) -> dict[str, Any]:
    version = resolve_model(ws, ref)
    folder = model_path(ws, version)
    card_file = folder / "README.md"
    card = card_file.read_text(encoding="utf-8") if card_file.is_file() else ""
    meta = version.meta or {}
    tree = lineage_tree(ws.catalog, version)
    lineage = [
        {"kind": n.artifact.kind, "ref": n.artifact.ref, "id": n.artifact.id, "relation": n.relation}
        for n in tree.walk()[1:]
        if not n.repeated
    ]
    licenses = [
        _dataset_license(ws, n.artifact) for n in tree.walk() if isinstance(n.artifact, DatasetVersion)
    ]
    with ws.catalog.session() as session:
        evals = session.scalars(sa.select(EvalReport).where(EvalReport.subject_id == version.id)).all()
        evaluations = [
            {
                "ref": e.ref,
                "metrics": e.metrics,
                "passed": e.passed,
                "description": e.description,
                "at": e.created_at.isoformat() if e.created_at else None,
            }
            for e in evals
        ]
        events = session.execute(
            sa.select(
                AuditEvent.status_code, AuditEvent.tokens_in, AuditEvent.tokens_out, AuditEvent.detail
            ).where(AuditEvent.model_version_id == version.id)
        ).all()
    verdicts: Counter[str] = Counter()
    for _, _, _, detail in events:
        for v in (detail or {}).get("rails", []):
            verdicts[f"{v.get('stage')}:{v.get('rail')}:{v.get('action')}"] += 1
    operation = {
        "requests": len(events),
        "errors": sum(1 for s, *_ in events if s >= 400),
        "tokens_in": sum(t or 0 for _, t, _, _ in events),
        "tokens_out": sum(t or 0 for _, _, t, _ in events),
        "rail_verdicts": dict(verdicts),
        "served_as": "OpenAI-compatible API; every answer names the model and its version "
        "(system_fingerprint)",
    }
    data: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {
            "ref": version.ref,
            "id": version.id,
            "family": version.family,
            "created_at": version.created_at.isoformat() if version.created_at else None,
            "created_by": version.created_by,
            "description": version.description,
            "metrics": version.metrics,
            "config": meta.get("config", {}),
            "card": card,
        },
        "lineage": lineage,
        "licenses": licenses,
        "evaluations": evaluations,
        "rails": _rails(ws),
        "operation": operation,
        "feedback": _feedback(ws, version),
        "intended_use": meta.get("intended_use") or _card_section(card, "intended use"),
        "limitations": meta.get("limitations") or _card_section(card, "limitations"),
    }
    data["mapping"] = [
        {
            "framework": fw,
            "clause": clause,
            "asks": asks,
            "section": section,
            "status": _status(data, section),
        }
        for fw, clause, asks, section in MAPPING
    ]
    return data


def _dataset_license(ws: Workspace, dataset: Any) -> dict[str, Any]:
    """The recipe's license, else the distinct values of the data's ``license`` column."""
    recipe = dataset.recipe or {}
    found: dict[str, int] = {}
    if recipe.get("license"):
        found = {str(recipe["license"]): int(dataset.num_rows or 0)}
    elif "license" in (dataset.data_schema or {}):
        from lamina.data.versions import iter_rows

        found = dict(Counter(str(r.get("license")) for r in iter_rows(ws, dataset, columns=["license"])))
    source = recipe.get("source")
    return {
        "dataset": dataset.ref,
        "rows": dataset.num_rows,
        "source": source if isinstance(source, str) else json.dumps(source),
        "licenses": found,
    }


def _rails(ws: Workspace) -> dict[str, Any]:
    """The rails policy in force, and the validation results of each rail model's champion."""
    policy = ws.settings.rails or {}
    models = []
    with ws.catalog.session() as session:
        versions = session.scalars(sa.select(ModelVersion).where(ModelVersion.family == "classifier")).all()
        for v in versions:
            models.append({"ref": v.ref, "metrics": v.metrics})
    return {"policy": policy or "none configured (no rails run)", "rail_models": models}


def _feedback(ws: Workspace, version: Any) -> dict[str, Any]:
    """Feedback on this version's answers (``/v1/feedback`` and rail flags): counts by label and by
    review status, never the text. None recorded is a gap in the mapping."""
    import sqlalchemy as sa

    from lamina.core.catalog.models import Feedback

    with ws.catalog.session() as session:
        rows = session.execute(
            sa.select(Feedback.label, Feedback.status, Feedback.origin, Feedback.at).where(
                Feedback.model_version_id == version.id
            )
        ).all()
    by_label: dict[str, int] = {}
    by_status: dict[str, int] = {}
    for label, status, origin, _ in rows:
        key = label if origin == "user" else f"{origin}: {label}"
        by_label[key or "other"] = by_label.get(key or "other", 0) + 1
        by_status[status] = by_status.get(status, 0) + 1
    out: dict[str, Any] = {"records": len(rows), "by_label": by_label, "by_review_status": by_status}
    if rows:
        out["first"], out["last"] = min(r.at for r in rows).isoformat(), max(r.at for r in rows).isoformat()
    else:
        out["note"] = "no feedback recorded on this version (POST /v1/feedback; rail flags are added)"
    return out


def _card_section(card: str, title: str) -> str | None:
    lines, taking, out = card.splitlines(), False, []
    for line in lines:
        if line.startswith("#"):
            taking = title in line.lower()
            continue
        if taking:
            out.append(line)
    text = "\n".join(out).strip()
    return text or None


def _status(data: dict[str, Any], section: str) -> str:
    value: Any = data.get(section)
    if section == "licenses":
        return "present" if value and all(d["licenses"] for d in value) else "gap"
    if section == "rails":
        return "present" if isinstance(value["policy"], dict) and value["policy"] else "gap"
    if section == "feedback":
        return "present" if value.get("records") else "gap"
    if section == "operation":
        return "present"
    return "present" if value else "gap"


def write(data: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``out.json`` and ``out.html``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out.with_suffix(".json"), out.with_suffix(".html")
    json_path.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    html_path.write_text(render_html(data), encoding="utf-8")
    return json_path, html_path


def render_html(data: dict[str, Any]) -> str:
    e = html.escape
    model = data["model"]

    def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
        if not rows:
            return "<p><em>none recorded</em></p>"
        head = "".join(f"<th>{e(c)}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{e(_text(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows
        )
        return f"<table><tr>{head}</tr>{body}</table>"

    license_rows = [
        {
            "dataset": d["dataset"],
            "rows": d["rows"],
            "source": d["source"],
            "licenses": ", ".join(f"{k} ({v})" for k, v in d["licenses"].items()) or "NOT RECORDED",
        }
        for d in data["licenses"]
    ]
    mapping = "".join(
        f"<tr class='{m['status']}'><td>{e(m['framework'])}</td><td>{e(m['clause'])}</td>"
        f"<td>{e(m['asks'])}</td>"
        f"<td><a href='#{m['section']}'>{e(m['section'])}</a></td><td>{m['status']}</td></tr>"
        for m in data["mapping"]
    )
    return f"""<!doctype html><html lang="en"><meta charset="utf-8">
<title>Governance report: {e(model["ref"])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#111}}
table{{border-collapse:collapse;margin:.5rem 0}}
td,th{{border:1px solid #bbb;padding:.3rem .5rem;vertical-align:top;text-align:left}}
tr.gap td:last-child{{background:#fde2e1;font-weight:bold}}tr.present td:last-child{{background:#e3f5e1}}
pre{{white-space:pre-wrap;background:#f6f6f6;padding:.6rem}}</style>
<h1>Governance report: {e(model["ref"])}</h1>
<p>Generated {e(data["generated_at"])} from the Lamina catalog. Family {e(str(model["family"]))}, created
{e(str(model["created_at"]))} by {e(str(model["created_by"]))}.</p>
<h2>Framework mapping</h2><table><tr><th>framework</th><th>clause</th><th>asks for</th><th>answered in</th>
<th>status</th></tr>{mapping}</table>
<h2 id="model">Model</h2><p>{e(str(model["description"] or ""))}</p>
<h3>Metrics</h3><pre>{e(json.dumps(model["metrics"], indent=1, default=str))}</pre>
<h3>Configuration</h3><pre>{e(json.dumps(model["config"], indent=1, default=str))}</pre>
<h3>Model card</h3><pre>{e(model["card"])}</pre>
<h2 id="lineage">Lineage</h2>{table(data["lineage"], ["relation", "kind", "ref", "id"])}
<h2 id="licenses">Data and licenses</h2>{table(license_rows, ["dataset", "rows", "source", "licenses"])}
<h2 id="evaluations">Evaluations</h2>{table(data["evaluations"], ["ref", "passed", "description", "metrics"])}
<h2 id="rails">Guardrails</h2><h3>Policy</h3><pre>{e(json.dumps(data["rails"]["policy"], indent=1))}</pre>
<h3>Rail models</h3>{table(data["rails"]["rail_models"], ["ref", "metrics"])}
<h2 id="operation">Operation</h2><pre>{e(json.dumps(data["operation"], indent=1))}</pre>
<h2 id="feedback">Feedback</h2><pre>{e(json.dumps(data["feedback"], indent=1))}</pre>
<h2 id="intended_use">Intended use</h2><p>{e(data["intended_use"] or "NOT STATED (a gap)")}</p>
<h2 id="limitations">Limitations</h2><p>{e(data["limitations"] or "NOT STATED (a gap)")}</p>
</html>"""


def _text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)[:400]
    return "" if value is None else str(value)
