"""The closed loop in the background (``lamina loop worker``): triggers queue rounds, a worker runs
them one at a time from the catalog's job queue, and a worker that dies mid-round is replaced by the
next one, which continues the round (``lamina.monitoring.jobs``).

Declared per model in ``lamina.yaml``::

    monitoring:
      loop:
        - model: chat                    # its @champion is the base of each round
          eval: chat-eval@v1             # the fixed held-out set of the gate
          replay: instructions@v1        # optional: earlier training data mixed in
          reward: rm                     # optional: a reward model judges both models' answers
          margin: 0.0
          triggers:                      # any one fires a round
            every: 1d                    # a schedule
            min_feedback: 50             # reviewed corrections and preferences waiting
            thumbs_drop: 0.15            # thumbs-up rate of the last `window` fell this much
            window: 1d                   #   against the window before it
            drift: {reference: chat-sft@v1, every: 6h}   # prompts drifted from the training data

A trigger that fires while a round for the model is queued or running adds nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lamina.core.durations import parse_duration
from lamina.core.errors import validated
from lamina.core.workspace import Workspace
from lamina.monitoring import jobs

log = logging.getLogger("lamina.monitoring.worker")
KIND = "loop"


class DriftTrigger(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reference: str  # a dataset version the model was trained on
    every: str = "6h"
    window: int = Field(500, ge=20)  # recent prompts compared


class Triggers(BaseModel):
    model_config = ConfigDict(extra="forbid")
    every: str | None = None
    min_feedback: int | None = Field(None, ge=1)
    thumbs_drop: float | None = Field(None, gt=0, lt=1)
    window: str = "1d"
    min_thumbs: int = Field(20, ge=1)  # per window, before a drop counts
    drift: DriftTrigger | None = None


class LoopSpec(BaseModel):
    """One model's background loop: the round's options (as ``lamina loop run``) and its triggers."""

    model_config = ConfigDict(extra="forbid")
    model: str
    eval: str
    replay: str | None = None
    replay_rows: int = Field(200, ge=0)
    reward: str | None = None
    rails: bool = True
    margin: float = 0.0
    method: str = "lora"
    steps: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    min_rows: int = Field(1, ge=1)
    triggers: Triggers = Field(default_factory=Triggers)


def specs(settings: Any) -> list[LoopSpec]:
    """The ``monitoring.loop`` entries, each refused by position and field when wrong."""
    out = []
    for i, entry in enumerate(settings.monitoring.loop):
        spec = validated(LoopSpec, entry, f"monitoring.loop.{i}")
        for what, text in (("every", spec.triggers.every), ("window", spec.triggers.window)):
            if text is not None:
                parse_duration(text, f"monitoring.loop.{i}.triggers.{what}", positive=True)
        if spec.triggers.drift is not None:
            parse_duration(
                spec.triggers.drift.every, f"monitoring.loop.{i}.triggers.drift.every", positive=True
            )
        out.append(spec)
    return out


# -- triggers -------------------------------------------------------------------------------------------
def due(ws: Workspace, spec: LoopSpec, cipher: Any, now: datetime | None = None) -> str | None:
    """Why a round for ``spec.model`` should start now (the first trigger that fires), or None."""
    now = now or datetime.now(UTC)
    t = spec.triggers
    if t.every is not None:
        last = jobs.last_finished(ws, KIND, spec.model)
        if last is None or now - last >= parse_duration(t.every, "every"):
            return f"schedule (every {t.every})"
    if t.min_feedback is not None:
        waiting = pending_feedback(ws, spec.model)
        if waiting >= t.min_feedback:
            return f"feedback volume ({waiting} reviewed items waiting, ≥ {t.min_feedback})"
    if t.thumbs_drop is not None:
        drop = thumbs_drop(ws, parse_duration(t.window, "window"), t.min_thumbs, now)
        if drop is not None and drop[0] - drop[1] >= t.thumbs_drop:
            return f"KPI drop (thumbs-up rate {drop[0]:.2f} → {drop[1]:.2f} over {t.window})"
    if t.drift is not None:
        return _drift(ws, spec, cipher, now)
    return None


def pending_feedback(ws: Workspace, model: str) -> int:
    """Reviewed feedback on this model's answers that no round has taken yet."""
    import sqlalchemy as sa

    from lamina.core.catalog.models import Feedback, ModelVersion

    versions = sa.select(ModelVersion.id).where(ModelVersion.name == model)
    with ws.catalog.session() as session:
        return int(session.scalar(
            sa.select(sa.func.count()).select_from(Feedback).where(
                Feedback.status.in_(("approved", "corrected")), Feedback.batch_id.is_(None),
                Feedback.model_version_id.in_(versions))
        ) or 0)  # fmt: skip


def thumbs_drop(
    ws: Workspace, window: timedelta, min_thumbs: int, now: datetime
) -> tuple[float, float] | None:
    """(thumbs-up rate of the window before, of the last window), when both have enough thumbs."""
    from lamina.monitoring.kpis import collect

    series = collect(ws, 2 * window, bucket=window, now=now)
    if len(series.thumbs_up) < 2:
        return None
    rates = []
    for i in (-2, -1):
        n = series.thumbs_up[i] + series.thumbs_down[i]
        if n < min_thumbs:
            return None
        rates.append(series.thumbs_up[i] / n)
    return rates[0], rates[1]


def _drift(ws: Workspace, spec: LoopSpec, cipher: Any, now: datetime) -> str | None:
    """The drift test at most once per ``drift.every`` (it embeds hundreds of prompts); each check
    is a finished job of kind ``drift`` with its report, so the next one knows when it ran."""
    from lamina.monitoring.drift import check_workspace, recent_prompts, reference_texts

    drift = spec.triggers.drift
    assert drift is not None
    last = jobs.last_finished(ws, "drift", spec.model)
    if last is not None and now - last < parse_duration(drift.every, "drift.every"):
        return None
    window = recent_prompts(ws, cipher, drift.window)
    if len(window) < 20:
        return None
    job = jobs.enqueue(ws, "drift", spec.model, "drift schedule")
    report = check_workspace(ws, reference_texts(ws, drift.reference), window)
    if job is not None:
        jobs.finish(ws, job.id, "done", report.as_dict())
    if report.drifted:
        worst = min(report.tests, key=lambda test: test.p_value)
        return f"drift from {drift.reference} ({worst.name} p = {worst.p_value:.3g})"
    return None


# -- the worker -----------------------------------------------------------------------------------------
def tick(
    ws: Workspace,
    cipher: Any,
    *,
    worker: str | None = None,
    stale_after: timedelta = timedelta(minutes=2),
    heartbeat_s: float = 5.0,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """Queue the rounds whose triggers fire, then run one queued (or abandoned) round; the job's
    view when one ran, else None."""
    say = say or (lambda line: None)
    loops = {s.model: s for s in specs(ws.settings)}
    for entry in loops.values():
        reason = due(ws, entry, cipher)
        if reason and jobs.enqueue(ws, KIND, entry.model, reason, entry.model_dump()) is not None:
            say(f"queued a round for {entry.model}: {reason}")
    job = jobs.claim(ws, worker or jobs.worker_name(), (KIND,), stale_after, on_give_up=_give_back(ws))
    if job is None:
        return None
    resumed = job.state.get("batch")
    say(f"job {job.id}: round for {job.key} ({job.trigger})" + (f", continuing {resumed}" if resumed else ""))
    spec: LoopSpec | None = LoopSpec.model_validate(job.params) if job.params else loops.get(job.key)
    if spec is None:
        jobs.finish(ws, job.id, "failed", error=f"no monitoring.loop entry for {job.key!r}")
        return _view(ws, job.id)
    with jobs.Heartbeat(ws, job.id, heartbeat_s):
        try:
            remember = lambda ref: jobs.update(ws, job.id, state={"batch": ref})  # noqa: E731
            result = run_round(ws, cipher, spec, batch=resumed, on_batch=remember, say=say)
        except Exception as exc:  # the round recorded its failure; the job says so too
            log.exception("job %s failed", job.id)
            jobs.finish(ws, job.id, "failed", error=f"{type(exc).__name__}: {exc}")
        else:
            jobs.finish(ws, job.id, "done", result.as_dict())
    return _view(ws, job.id)


def run_round(
    ws: Workspace,
    cipher: Any,
    spec: LoopSpec,
    *,
    batch: str | None = None,
    on_batch: Any = None,
    say: Any = None,
) -> Any:
    from lamina.monitoring.loop import run
    from lamina.training.sft import finetune_config_if

    cfg = finetune_config_if(spec.method, max_steps=spec.steps, lr=spec.lr)  # type: ignore[arg-type]
    passed = {"replay", "replay_rows", "min_rows", "margin", "method", "reward", "rails"}
    options = spec.model_dump(include=passed)
    return run(ws, spec.model, cipher, eval_set=spec.eval, train_cfg=cfg, batch=batch, on_batch=on_batch,
               progress=say, **options)  # fmt: skip


def _give_back(ws: Workspace) -> Callable[[dict[str, Any]], None]:
    def give_back(state: dict[str, Any]) -> None:
        if state.get("batch"):
            from lamina.monitoring.loop import release

            release(ws, ws.resolve(state["batch"], kind="feedback_batch").id)

    return give_back


def _view(ws: Workspace, job_id: int) -> dict[str, Any]:
    return next(j for j in jobs.recent(ws, 50) if j["id"] == job_id)


def serve(
    ws: Workspace, cipher: Any, *, interval_s: float = 60.0, once: bool = False, say: Any = None, **kw: Any
) -> None:
    """Tick until stopped (Ctrl-C); ``once``: one tick."""
    while True:
        ran = tick(ws, cipher, say=say, **kw)
        if once:
            return
        if ran is None:
            time.sleep(interval_s)
