"""Human feedback tied to served requests: a rating (thumbs or 1–5), a comment, a correction, or a
preference between two responses, each on a request id from the audit log.

Why tied to the request: a judgement is only reusable for training when Lamina knows what was asked,
what was answered and by which model version — the audit row holds all three. Who may judge what
follows the gateway's keys: a key may give feedback on its own requests; ``admin`` and ``reviewer``
keys on any. Comment and correction text is personal data like the audit text, so it is stored
encrypted with ``security.encryption_keys`` (without a key it is refused, never stored in clear).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lamina.core.catalog.models import AuditEvent, Feedback
from lamina.core.errors import ConfigError, LaminaError, NotFound
from lamina.core.workspace import Workspace

JUDGES = ("admin", "reviewer")  # roles that may judge any request; others only their own
MAX_TEXT = 32_000


class FeedbackRefused(LaminaError):
    """Feedback that cannot be recorded as asked (HTTP 409): the request's text was not kept, or no
    encryption key is set for text feedback."""

    http_status = 409
    code = "feedback_refused"


class NotYours(LaminaError):
    http_status = 403
    code = "permission_denied"


@dataclass
class FeedbackIn:
    """One piece of feedback as a client sends it (validated here, not only in the API schema)."""

    request_id: str
    thumbs: str | None = None  # "up" | "down"
    rating: int | None = None  # 1–5
    comment: str | None = None
    correction: str | None = None
    preferred_over: str | None = None  # another request id: this response was the better one

    def validate(self) -> None:
        if not self.request_id or len(self.request_id) > 64:
            raise ConfigError("request_id must be the x-request-id of a served request (1–64 characters)")
        if self.thumbs is not None and self.thumbs not in ("up", "down"):
            raise ConfigError(f"thumbs must be 'up' or 'down', not {self.thumbs!r}")
        if self.rating is not None and not (isinstance(self.rating, int) and 1 <= self.rating <= 5):
            raise ConfigError(f"rating must be an integer from 1 to 5, not {self.rating!r}")
        for name in ("comment", "correction"):
            value = getattr(self, name)
            if value is not None and (not value.strip() or len(value) > MAX_TEXT):
                raise ConfigError(f"{name} must be 1–{MAX_TEXT:,} characters of text")
        if self.preferred_over == self.request_id:
            raise ConfigError("preferred_over must name a different request")
        given = (self.thumbs, self.rating, self.comment, self.correction, self.preferred_over)
        if all(v is None for v in given):
            raise ConfigError(
                "the feedback is empty", hint="send thumbs, rating, comment, correction or preferred_over"
            )


def record(ws: Workspace, item: FeedbackIn, caller: dict[str, Any], cipher: Any) -> dict[str, Any]:
    """Store one piece of feedback; returns it as the API shows it. Raises a 4xx ``LaminaError`` for
    an unknown request, someone else's request, or text that cannot be kept."""
    import sqlalchemy as sa

    item.validate()
    with ws.catalog.session() as session:
        served = _served(session, item.request_id)
        _may_judge(caller, served)
        if item.preferred_over is not None:
            other = _served(session, item.preferred_over)
            _may_judge(caller, other)
            if other.route != served.route:
                raise ConfigError(
                    f"requests {item.request_id} and {item.preferred_over} were made to different routes "
                    f"({served.route}, {other.route}); a preference compares two answers to one prompt"
                )
        texts = item.comment is not None or item.correction is not None
        if texts and cipher is None:
            raise FeedbackRefused(
                "comment and correction text is stored encrypted, and no encryption key is set",
                hint="set LAMINA_SECURITY__ENCRYPTION_KEYS='[\"KEY\"]' (make one: lamina audit new-key)",
            )
        if (item.correction is not None or item.preferred_over is not None) and served.request_text is None:
            raise FeedbackRefused(
                f"the prompt of request {item.request_id} was not kept, so a correction or preference "
                "cannot become a training row",
                hint="turn on server.audit_text (with an encryption key) to keep prompts",
            )
        row = Feedback(
            request_id=item.request_id,
            key_id=caller.get("id"),
            model_version_id=served.model_version_id,
            rating=item.rating,
            label=_label(item),
            comment=cipher.encrypt(item.comment) if item.comment is not None else None,
            correction=cipher.encrypt(item.correction) if item.correction is not None else None,
            other_request_id=item.preferred_over,
            status="new",
            origin="user",
        )
        session.add(row)
        session.flush()
        count = session.scalar(sa.select(sa.func.count()).where(Feedback.request_id == item.request_id))
        return {**as_public(row, None), "feedback_on_request": int(count or 0)}


def _label(item: FeedbackIn) -> str | None:
    if item.preferred_over is not None:
        return "preferred"
    if item.thumbs is not None:
        return f"thumbs_{item.thumbs}"
    return "corrected" if item.correction is not None else None


def _served(session: Any, request_id: str) -> AuditEvent:
    import sqlalchemy as sa

    row = session.scalars(
        sa.select(AuditEvent)
        .where(AuditEvent.request_id == request_id)
        .order_by(AuditEvent.id.desc())
        .limit(1)
    ).first()
    if row is None:
        raise NotFound(
            f"no request {request_id!r} in the audit log",
            hint="use the x-request-id header of the response you are judging",
        )
    if row.status_code >= 400 or row.model_version_id is None:
        raise ConfigError(
            f"request {request_id} did not produce a model's answer (HTTP {row.status_code}); "
            "only answers can be judged"
        )
    return row


def _may_judge(caller: dict[str, Any], served: AuditEvent) -> None:
    if caller.get("role") in JUDGES or (caller.get("id") and caller.get("id") == served.key_id):
        return
    raise NotYours(
        f"request {served.request_id} was made with another key",
        hint="a key gives feedback on its own requests; reviewer and admin keys on any",
    )


def as_public(row: Feedback, cipher: Any) -> dict[str, Any]:
    """A feedback row as the API and ``lamina feedback list`` show it (text decrypted when a cipher
    is given, else left out)."""
    out: dict[str, Any] = {
        "id": row.id,
        "at": row.at.isoformat() if row.at else None,
        "request_id": row.request_id,
        "model_version_id": row.model_version_id,
        "label": row.label,
        "rating": row.rating,
        "preferred_over": row.other_request_id,
        "status": row.status,
        "origin": row.origin,
        "has_comment": row.comment is not None,
        "has_correction": row.correction is not None,
    }
    if cipher is not None:
        out["comment"] = cipher.decrypt(row.comment)
        out["correction"] = cipher.decrypt(row.correction)
    return out


def listing(
    ws: Workspace,
    cipher: Any = None,
    *,
    key_id: str | None = None,
    status: str | None = None,
    limit: int = 50,
    origin: str | None = "user",
) -> list[dict[str, Any]]:
    """The newest feedback people gave (of one key when ``key_id`` is given), newest first;
    ``origin=None`` includes the review items rails and low confidence add."""
    import sqlalchemy as sa

    query = sa.select(Feedback).order_by(Feedback.id.desc()).limit(limit)
    if origin is not None:
        query = query.where(Feedback.origin == origin)
    if key_id is not None:
        query = query.where(Feedback.key_id == key_id)
    if status is not None:
        query = query.where(Feedback.status == status)
    with ws.catalog.session() as session:
        return [as_public(row, cipher) for row in session.scalars(query).all()]
