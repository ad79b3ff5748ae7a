"""The review queue: feedback a person should look at before it trains anything, and the training
rows that approved feedback becomes.

What enters the queue: thumbs-down, ratings of 1–2, corrections, preferences (all from
``/v1/feedback``), every request a rail flagged or blocked and, when
``monitoring.review_below_confidence`` is set, every answer whose mean token probability is lower
(both added by the gateway's audit writer as it records the request).
A ``reviewer`` (or ``admin``) approves, rejects or corrects each item. Approved and corrected
feedback becomes training rows, each carrying its request id and feedback id (lineage back to what
was asked and answered): a correction an SFT row (the prompt, the corrected answer), a preference a
preference row (the prompt, the chosen answer, the rejected one).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from lamina.core.catalog.models import AuditEvent, Feedback
from lamina.core.errors import ConfigError, NotFound
from lamina.core.workspace import Workspace
from lamina.monitoring.feedback import FeedbackRefused

DECISIONS = {"approve": "approved", "reject": "rejected", "correct": "corrected"}


def needs_review() -> Any:
    import sqlalchemy as sa

    return sa.and_(
        Feedback.status == "new",
        sa.or_(
            Feedback.origin != "user",
            Feedback.label.in_(("thumbs_down", "corrected", "preferred")),
            Feedback.rating <= 2,
            Feedback.correction.is_not(None),
        ),
    )


def queue(ws: Workspace, cipher: Any, limit: int = 50, request_id: str | None = None) -> list[dict[str, Any]]:
    """The oldest items waiting for a reviewer (or those on one request), with what was asked and
    answered (decrypted when the text was kept and a key is set)."""
    import sqlalchemy as sa

    from lamina.monitoring.feedback import as_public

    with ws.catalog.session() as session:
        rows = session.scalars(
            sa.select(Feedback)
            .where(needs_review(), *([Feedback.request_id == request_id] if request_id else []))
            .order_by(Feedback.id)
            .limit(limit)
        ).all()
        out = []
        for row in rows:
            item = as_public(row, cipher)
            served = audit_row(session, row.request_id)
            item["why"] = _why(row)
            item["route"] = served.route if served else None
            item["prompt"], item["answer"] = _texts(served, cipher)
            out.append(item)
        return out


def decide(
    ws: Workspace,
    item_id: int,
    decision: str,
    caller: dict[str, Any],
    cipher: Any,
    correction: str | None = None,
) -> dict[str, Any]:
    """Record a reviewer's decision on one queued item; a correction needs the prompt kept and a key."""
    from lamina.monitoring.feedback import as_public

    if decision not in DECISIONS:
        raise ConfigError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
    if decision == "correct" and not (correction and correction.strip()):
        raise ConfigError("a 'correct' decision needs the corrected answer in 'correction'")
    if decision != "correct" and correction is not None:
        raise ConfigError("'correction' goes with the 'correct' decision only")
    with ws.catalog.session() as session:
        row = session.get(Feedback, item_id)
        if row is None:
            raise NotFound(f"no feedback item {item_id}", hint="GET /v1/review lists the queue")
        if row.status != "new":
            raise FeedbackRefused(
                f"item {item_id} was already reviewed ({row.status}"
                f"{' by ' + row.reviewed_by if row.reviewed_by else ''})"
            )
        if decision == "correct":
            served = audit_row(session, row.request_id)
            if served is None or served.request_text is None:
                raise FeedbackRefused(
                    f"the prompt of request {row.request_id} was not kept, so a correction cannot "
                    "become a training row",
                    hint="turn on server.audit_text (with an encryption key) to keep prompts",
                )
            if cipher is None:
                raise FeedbackRefused(
                    "corrections are stored encrypted, and no encryption key is set",
                    hint="set LAMINA_SECURITY__ENCRYPTION_KEYS",
                )
            row.correction = cipher.encrypt(correction)
        row.status = DECISIONS[decision]
        row.reviewed_by = caller.get("id")
        row.reviewed_at = datetime.now(UTC)
        session.flush()
        return as_public(row, cipher)


def training_rows(
    ws: Workspace,
    cipher: Any,
    *,
    pending: bool = False,
    versions: set[str] | None = None,
    batch: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """``{"sft": [...], "preference": [...], "skipped": [...]}`` from approved and corrected
    feedback (``pending``: only what no training batch has taken; ``versions``: only feedback on
    answers of those model versions; ``batch``: only what that batch took); a row whose prompt or
    answers cannot be read is listed in
    ``skipped`` with why."""
    import sqlalchemy as sa

    if cipher is None:
        raise FeedbackRefused(
            "feedback text is encrypted, and no encryption key is set to read it",
            hint="set LAMINA_SECURITY__ENCRYPTION_KEYS",
        )
    out: dict[str, list[dict[str, Any]]] = {"sft": [], "preference": [], "skipped": []}
    with ws.catalog.session() as session:
        reviewed = Feedback.status.in_(("approved", "corrected"))
        query = sa.select(Feedback).where(reviewed).order_by(Feedback.id)
        if pending:
            query = query.where(Feedback.batch_id.is_(None))
        if versions is not None:
            query = query.where(Feedback.model_version_id.in_(versions))
        if batch is not None:
            query = query.where(Feedback.batch_id == batch)
        rows = session.scalars(query).all()
        for row in rows:
            lineage = {"feedback_id": row.id, "request_id": row.request_id}
            served = audit_row(session, row.request_id)
            prompt, answer = _texts(served, cipher)
            messages = messages_of(prompt)
            if messages is None:
                out["skipped"].append({**lineage, "why": "the prompt was not kept or is not a JSON request"})
            elif row.correction is not None:
                corrected = {"role": "assistant", "content": cipher.decrypt(row.correction)}
                out["sft"].append({**lineage, "messages": [*messages, corrected]})
            elif row.other_request_id is not None:
                _, rejected = _texts(audit_row(session, row.other_request_id), cipher)
                if answer is None or rejected is None:
                    out["skipped"].append({**lineage, "why": "an answer of the pair was not kept"})
                else:
                    pair = {"prompt": messages, "chosen": answer, "rejected": rejected}
                    out["preference"].append({**lineage, "rejected_request_id": row.other_request_id, **pair})
        return out


def _why(row: Feedback) -> str:
    if row.origin == "rail":
        return (row.label or "rail").replace("rail ", "rails: ", 1)
    if row.origin == "confidence":
        return f"a low-{row.label}" if row.label else "a low-confidence answer"
    if row.correction is not None:
        return "a correction"
    if row.label == "preferred":
        return f"preferred over {row.other_request_id}"
    if row.label == "thumbs_down":
        return "thumbs down"
    return f"rating {row.rating}"


def audit_row(session: Any, request_id: str) -> AuditEvent | None:
    """The newest audit record of a request (what feedback, review and explanations point at)."""
    import sqlalchemy as sa

    query = sa.select(AuditEvent).where(AuditEvent.request_id == request_id).order_by(AuditEvent.id.desc())
    return session.scalars(query.limit(1)).first()


def _texts(served: AuditEvent | None, cipher: Any) -> tuple[str | None, str | None]:
    if served is None or cipher is None:
        return None, None
    return cipher.decrypt(served.request_text), cipher.decrypt(served.response_text)


def messages_of(request_text: str | None) -> list[dict[str, Any]] | None:
    """The chat messages (or a completion prompt as one user message) of a stored request body."""
    if not request_text:
        return None
    try:
        body = json.loads(request_text)
    except ValueError:  # clipped or not JSON
        return None
    if isinstance(body.get("messages"), list):
        return [{"role": m.get("role"), "content": m.get("content")} for m in body["messages"]]
    if isinstance(body.get("prompt"), str):
        return [{"role": "user", "content": body["prompt"]}]
    return None
