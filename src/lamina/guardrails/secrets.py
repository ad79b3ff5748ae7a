"""Secrets in an answer: API keys and tokens by their published shapes, private keys, and Lamina's
own ``lam-`` keys. Blocked by default: a secret half-redacted is still a leak worth stopping."""

from __future__ import annotations

import re
from typing import Any

from lamina.core.extensions import RAILS
from lamina.guardrails.rail import Rail
from lamina.guardrails.verdict import Span, Verdict

# Shapes from the vendors' documentation (and gitleaks' rules, which collect them).
SECRET_PATTERNS = {
    "LAMINA_KEY": r"\blam-[A-Za-z0-9_\-]{40,}",
    "OPENAI_KEY": r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}",
    "ANTHROPIC_KEY": r"\bsk-ant-[A-Za-z0-9_\-]{20,}",
    "AWS_ACCESS_KEY": r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
    "GITHUB_TOKEN": r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,})",
    "GITLAB_TOKEN": r"\bglpat-[A-Za-z0-9_\-]{20,}",
    "SLACK_TOKEN": r"\bxox[abposr]-[A-Za-z0-9\-]{10,}",
    "STRIPE_KEY": r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{20,}",
    "GOOGLE_API_KEY": r"\bAIza[0-9A-Za-z_\-]{35}\b",
    "HF_TOKEN": r"\bhf_[A-Za-z0-9]{30,}",
    "JWT": r"\beyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}",
    "PRIVATE_KEY": r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY(?: BLOCK)?-----",
    "PASSWORD_IN_URL": r"\b[a-z][a-z0-9+.\-]*://[^\s:/@]+:[^\s@/]{3,}@[^\s/]+",
}
_SECRETS = [(label, re.compile(p)) for label, p in SECRET_PATTERNS.items()]


def find_secrets(text: str) -> list[Span]:
    return [Span(m.start(), m.end(), label) for label, rx in _SECRETS for m in rx.finditer(text)]


@RAILS.register("secrets")
class SecretsRail(Rail):
    name = "secrets"

    def check(self, text: str, context: dict[str, Any]) -> Verdict:
        spans = find_secrets(text)
        return self.verdict(
            bool(spans), spans=spans, score=float(bool(spans)), reasons=sorted({s.label for s in spans})
        )
