"""What the API leaves behind for the loop, written straight into the catalog: audit rows with the
prompts and answers kept (encrypted), and reviewed corrections and preferences."""

from __future__ import annotations

import json

from lamina.core.catalog.models import AuditEvent, Feedback
from lamina.core.crypto import TextCipher, new_key
from lamina.core.workspace import Workspace
from lamina.hub.registry import resolve_model
from lamina.training.loop import TrainConfig

KEY = new_key()
CIPHER = TextCipher([KEY])
STEPS = TrainConfig(max_steps=40, batch_size=8, lr=3e-3, warmup_steps=4, eval_every=20, eval_batches=2,
                    checkpoint_every=40)  # fmt: skip


def served_and_corrected(ws: Workspace, rows: list[dict], status: str = "corrected") -> None:
    """What the API leaves behind: audit rows with the prompts kept, and reviewed corrections."""
    version = resolve_model(ws, "chat@champion")
    with ws.catalog.session() as session:
        for i, row in enumerate(rows):
            rid = f"req-{status}-{i}"
            body = {"model": "chat@champion", "messages": [{"role": "user", "content": row["instruction"]}]}
            session.add(AuditEvent(request_id=rid, method="POST", route="/v1/chat/completions",
                                   status_code=200, model_version_id=version.id,
                                   request_text=CIPHER.encrypt(json.dumps(body)),
                                   response_text=CIPHER.encrypt("..."), detail={}))  # fmt: skip
            corrected = CIPHER.encrypt(f"Verily, {row['response']}")
            session.add(Feedback(request_id=rid, model_version_id=version.id, label="thumbs_down",
                                 status=status, correction=corrected))  # fmt: skip


def served_pairs(ws: Workspace, rows: list[dict], chosen: str = "Verily, {}") -> None:
    """Two served answers per prompt and a reviewed preference for the styled one."""
    version = resolve_model(ws, "chat@champion")
    with ws.catalog.session() as session:
        for i, row in enumerate(rows):
            body = {"model": "chat@champion", "messages": [{"role": "user", "content": row["instruction"]}]}
            for rid, answer in ((f"pa-{i}", chosen.format(row["response"])), (f"pb-{i}", row["response"])):
                session.add(AuditEvent(request_id=rid, method="POST", route="/v1/chat/completions",
                                       status_code=200, model_version_id=version.id,
                                       request_text=CIPHER.encrypt(json.dumps(body)),
                                       response_text=CIPHER.encrypt(answer), detail={}))  # fmt: skip
            session.add(Feedback(request_id=f"pa-{i}", other_request_id=f"pb-{i}", label="preferred",
                                 model_version_id=version.id, status="approved"))  # fmt: skip
