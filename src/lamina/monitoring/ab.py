"""The arms of an A/B test (``lamina.serving.experiments``), compared: per-arm KPIs read from the
audit log and the feedback on each arm's answers, and a **sequential test** on the thumbs-up rate
that may be looked at after every vote (``lamina monitor ab NAME``).

Why sequential: a fixed-sample test read every day ("is it significant yet?") finds a difference
that is not there far more often than its alpha says. The mixture sequential probability ratio test
(mSPRT; Johari, Koomen, Pekelis & Walsh, "Always Valid Inference", 2017 — the test behind
Optimizely's stats engine) gives an always-valid p-value: with the normal approximation of the
difference of the two rates θ̂ (variance V), mixing the alternative over N(0, τ²),

    Λ = √(V / (V + τ²)) · exp(τ² θ̂² / (2 V (V + τ²))),   p = min over looks of 1 / Λ,

and stopping the first time p ≤ alpha keeps false alarms at most alpha however often one looks.
Written here: scipy and statsmodels have fixed-sample tests only. τ is the size of a difference
worth finding (default 0.1 in thumbs-up rate).
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from lamina.core.workspace import Workspace

MIN_VOTES = 10  # per arm, before the normal approximation is trusted


def msprt_p(up: tuple[int, int], votes: tuple[int, int], tau: float) -> float:
    """1/Λ for arms with ``up`` thumbs-up out of ``votes`` (1 when either arm has too few votes)."""
    if min(votes) < MIN_VOTES:
        return 1.0
    rates = [u / n for u, n in zip(up, votes, strict=True)]
    # a rate of 0 or 1 has no variance; a pseudo-count keeps V > 0 (Agresti–Caffo style)
    var = sum(((u + 1) / (n + 2)) * (1 - (u + 1) / (n + 2)) / n for u, n in zip(up, votes, strict=True))
    diff = rates[1] - rates[0]
    t2 = tau * tau
    log_lr = 0.5 * math.log(var / (var + t2)) + t2 * diff * diff / (2 * var * (var + t2))
    return float(min(1.0, math.exp(-log_lr)))


def sequential(votes: list[tuple[int, bool]], tau: float = 0.1, alpha: float = 0.05) -> dict[str, Any]:
    """Run the test over ``votes`` in the order they came: (arm index 0/1, thumbs up?). Returns the
    always-valid p-value and the vote at which it first fell to alpha (None: not yet)."""
    up, n = [0, 0], [0, 0]
    p, stopped_at = 1.0, None
    for i, (arm, liked) in enumerate(votes, start=1):
        up[arm] += liked
        n[arm] += 1
        p = min(p, msprt_p((up[0], up[1]), (n[0], n[1]), tau))
        if stopped_at is None and p <= alpha:
            stopped_at = i
    return {"p_value": p, "significant": p <= alpha, "decided_at_vote": stopped_at, "votes": n, "up": up}


def report(
    ws: Workspace,
    name: str,
    *,
    since: timedelta = timedelta(days=30),
    alpha: float = 0.05,
    tau: float = 0.1,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Per arm: requests, error rate, latency p50/p95, output tokens, thumbs and thumbs-up rate;
    and the sequential test of the thumbs-up rates (second arm minus first)."""
    import sqlalchemy as sa

    from lamina.core.catalog.models import AuditEvent, Feedback
    from lamina.core.errors import NotFound

    end = now or datetime.now(UTC)
    arms: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"requests": 0, "errors": 0, "latency": [], "tokens_out": 0, "models": set()}
    )
    arm_of: dict[str, str] = {}
    with ws.catalog.session() as session:
        rows = session.execute(
            sa.select(AuditEvent.request_id, AuditEvent.status_code, AuditEvent.latency_ms,
                      AuditEvent.tokens_out, AuditEvent.model_version_id, AuditEvent.detail)
            .where(AuditEvent.at >= end - since, AuditEvent.at < end)
            .execution_options(yield_per=2000)
        )  # fmt: skip
        for rid, status, latency, tokens, version, detail in rows:
            experiment = (detail or {}).get("experiment") or {}
            if experiment.get("name") != name:
                continue
            arm = arms[experiment["arm"]]
            arm_of[rid] = experiment["arm"]
            arm["requests"] += 1
            arm["errors"] += status >= 400
            arm["tokens_out"] += tokens or 0
            if latency is not None:
                arm["latency"].append(latency)
            if version:
                arm["models"].add(version)
        if not arms:
            raise NotFound(
                f"no request of experiment {name!r} in the last {since}",
                hint="check server.experiments in lamina.yaml, and that the server got traffic",
            )
        votes = session.execute(
            sa.select(Feedback.request_id, Feedback.label).where(
                Feedback.request_id.in_(list(arm_of)), Feedback.label.in_(("thumbs_up", "thumbs_down"))
            ).order_by(Feedback.at, Feedback.id)
        ).all()  # fmt: skip
    names = sorted(arms)
    order = _arm_order(ws, name, names)
    table = {}
    for arm_name in order:
        arm = arms[arm_name]
        mine = [label for rid, label in votes if arm_of.get(rid) == arm_name]
        up = sum(label == "thumbs_up" for label in mine)
        lat = np.asarray(arm["latency"], dtype=float)
        table[arm_name] = {
            "requests": arm["requests"], "error_rate": arm["errors"] / arm["requests"],
            "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
            "latency_p95_ms": float(np.percentile(lat, 95)) if lat.size else None,
            "tokens_out": arm["tokens_out"], "thumbs_up": up, "thumbs_down": len(mine) - up,
            "thumbs_up_rate": up / len(mine) if mine else None, "model_versions": sorted(arm["models"]),
        }  # fmt: skip
    paired = [
        (order.index(arm_of[rid]), label == "thumbs_up")
        for rid, label in votes
        if arm_of.get(rid) in order[:2]
    ]
    test = sequential(paired, tau=tau, alpha=alpha)
    verdict = "keep collecting: no significant difference yet"
    if test["significant"] and len(order) == 2:
        rates = [table[a]["thumbs_up_rate"] or 0.0 for a in order]
        better = order[int(rates[1] > rates[0])]
        verdict = f"{better} has the higher thumbs-up rate (significant at alpha {alpha})"
    return {"experiment": name, "arms": table, "order": order, "test": {**test, "alpha": alpha, "tau": tau},
            "verdict": verdict, "since": str(since)}  # fmt: skip


def _arm_order(ws: Workspace, name: str, seen: list[str]) -> list[str]:
    """Arms in the order the experiment declares them (control first), else alphabetical."""
    for entry in ws.settings.server.experiments:
        if entry.get("name") == name and isinstance(entry.get("arms"), dict):
            declared = [a for a in entry["arms"] if a in seen]
            return declared + [a for a in seen if a not in declared]
    return seen
