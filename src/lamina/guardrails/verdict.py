"""What a rail says about a text: a ``Verdict`` (allow, redact, block or flag, with reasons, spans and
a score), and how several verdicts combine and redactions apply.

Kept free of any rail so the serving path, the CLI and the audit log share one shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Action = Literal["allow", "redact", "block", "flag"]
ACTIONS: tuple[Action, ...] = ("allow", "flag", "redact", "block")  # weakest → strongest


@dataclass(frozen=True)
class Span:
    """A stretch of the checked text a rail points at (``label`` says what it is: PHONE_NUMBER, …)."""

    start: int
    end: int
    label: str
    score: float = 1.0

    def shifted(self, by: int) -> Span:
        return Span(self.start + by, self.end + by, self.label, self.score)


@dataclass
class Verdict:
    rail: str
    action: Action = "allow"
    reasons: list[str] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    score: float = 0.0
    error: str | None = None  # the rail crashed: it failed closed (block) or is reported (flag)

    @property
    def acted(self) -> bool:
        return self.action != "allow"

    def summary(self) -> dict[str, Any]:
        """The audit record's and the API's view: no span text (it may be the very thing redacted)."""
        out = asdict(self)
        out["spans"] = [{"start": s.start, "end": s.end, "label": s.label} for s in self.spans]
        out["score"] = round(float(self.score), 4)
        return {k: v for k, v in out.items() if v not in (None, [])}


def strongest(verdicts: list[Verdict]) -> Action:
    return max((v.action for v in verdicts), key=ACTIONS.index, default="allow")


def redact(text: str, spans: list[Span]) -> str:
    """``text`` with every span replaced by ``<LABEL>``; overlapping spans merge into the first label."""
    out, cursor = [], 0
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if span.end <= cursor:
            continue
        start = max(span.start, cursor)
        out.append(text[cursor:start])
        if span.start >= cursor:
            out.append(f"<{span.label}>")
        cursor = span.end
    out.append(text[cursor:])
    return "".join(out)
