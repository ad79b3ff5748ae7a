"""A job queue in the catalog: the closed loop's rounds run as background jobs that any worker
process can take (``lamina loop worker``), one at a time per job.

Why in the catalog and not Celery or Redis: the catalog is already the one durable store every
Lamina process shares (SQLite on one machine, PostgreSQL for several), the jobs are minutes long and
few, and a job's lineage (its batch, datasets, runs) is in the same database. Claiming is a
conditional UPDATE (``… WHERE id = ? AND status = ? AND attempts = ?``), so two workers never
take the same job on either engine.

Crash safety: a running job's worker beats ``heartbeat_at`` every few seconds. A job whose
heartbeat is older than ``stale_after`` belongs to a worker that died; the next worker takes it
again (``attempts`` + 1) and its ``state`` (the feedback batch the round froze) lets the round
continue instead of starting over. After ``MAX_ATTEMPTS`` a job is failed, with why.
"""

from __future__ import annotations

import os
import socket
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from lamina.core.catalog.models import Job
from lamina.core.workspace import Workspace

MAX_ATTEMPTS = 3
OPEN = ("queued", "running")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def enqueue(
    ws: Workspace, kind: str, key: str, trigger: str, params: dict[str, Any] | None = None
) -> Job | None:
    """Queue a job unless one of this kind and key is already queued or running (a trigger that
    fires again while a round is on its way adds nothing)."""
    with ws.catalog.session() as session:
        waiting = session.scalars(
            sa.select(Job).where(Job.kind == kind, Job.key == key, Job.status.in_(OPEN)).limit(1)
        ).first()
        if waiting is not None:
            return None
        job = Job(kind=kind, key=key, trigger=trigger, params=params or {}, state={}, attempts=0)
        session.add(job)
        session.flush()
        session.expunge(job)
        return job


def claim(
    ws: Workspace, worker: str, kinds: tuple[str, ...], stale_after: timedelta, on_give_up: Any = None
) -> Job | None:
    """Take the oldest queued job, or a running one whose worker stopped beating; None when idle.
    ``on_give_up(state)`` undoes what a job that failed too often still holds."""
    now = datetime.now(UTC)
    with ws.catalog.session() as session:
        candidates = session.execute(
            sa.select(Job.id, Job.status, Job.heartbeat_at, Job.attempts)
            .where(Job.kind.in_(kinds), Job.status.in_(OPEN))
            .order_by(Job.id)
        ).all()  # fmt: skip
    for job_id, status, beat, attempts in candidates:
        if status == "running" and beat is not None and _aware(beat) > now - stale_after:
            continue  # alive: another worker has it
        with ws.catalog.session() as session:
            taken = session.execute(
                sa.update(Job)
                .where(Job.id == job_id, Job.status == status, Job.attempts == attempts)
                .values(status="running", worker=worker, started_at=now, heartbeat_at=now,
                        attempts=Job.attempts + 1)
            )  # fmt: skip
            if getattr(taken, "rowcount", 0) != 1:  # a CursorResult; typed as a plain Result
                continue  # another worker was faster
            job = session.get(Job, job_id)
            assert job is not None
            session.expunge(job)
        if job.attempts <= MAX_ATTEMPTS:
            return job
        error = f"gave up after {MAX_ATTEMPTS} attempts: each time its worker stopped"
        finish(ws, job.id, "failed", error=error)
        if on_give_up is not None:
            on_give_up(dict(job.state))
    return None


def update(ws: Workspace, job_id: int, **values: Any) -> None:
    with ws.catalog.session() as session:
        session.execute(sa.update(Job).where(Job.id == job_id).values(**values))


def finish(
    ws: Workspace, job_id: int, status: str, result: dict[str, Any] | None = None, error: str | None = None
) -> None:
    update(ws, job_id, status=status, result=result, error=error, finished_at=datetime.now(UTC))


class Heartbeat:
    """Beats a running job's ``heartbeat_at`` from a thread while the job works."""

    def __init__(self, ws: Workspace, job_id: int, every_s: float = 5.0) -> None:
        self.ws, self.job_id, self.every_s = ws, job_id, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"job-{job_id}-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            update(self.ws, self.job_id, heartbeat_at=datetime.now(UTC))

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def recent(ws: Workspace, limit: int = 20, key: str | None = None) -> list[dict[str, Any]]:
    with ws.catalog.session() as session:
        query = sa.select(Job).order_by(Job.id.desc()).limit(limit)
        if key is not None:
            query = query.where(Job.key == key)
        return [_view(j) for j in session.scalars(query).all()]


def last_finished(ws: Workspace, kind: str, key: str) -> datetime | None:
    with ws.catalog.session() as session:
        at = session.scalar(
            sa.select(sa.func.max(Job.finished_at)).where(Job.kind == kind, Job.key == key,
                                                          Job.status.in_(("done", "failed")))
        )  # fmt: skip
    return _aware(at) if at is not None else None


def _view(job: Job) -> dict[str, Any]:
    return {
        "id": job.id, "kind": job.kind, "key": job.key, "status": job.status, "trigger": job.trigger,
        "attempts": job.attempts, "worker": job.worker, "state": job.state, "result": job.result,
        "error": job.error, "created_at": _iso(job.created_at), "finished_at": _iso(job.finished_at),
    }  # fmt: skip


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)
