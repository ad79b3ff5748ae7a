"""One round of the closed loop on a tiny chat model: reviewed corrections in a style ("Verily, …")
train a challenger that wins on a held-out set of that style and is promoted with lineage; a round
that cannot win by the margin keeps the champion and says why; a round without feedback is skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lamina.core.catalog.models import AuditEvent, Feedback
from lamina.core.crypto import TextCipher, new_key
from lamina.core.workspace import Workspace
from lamina.data.pipeline import build_dataset
from lamina.data.recipe import Recipe
from lamina.demo import DEMO_INSTRUCTIONS, DEMO_TEXT
from lamina.hub.registry import resolve_model
from lamina.training.lm import train_lm
from lamina.training.loop import TrainConfig

KEY = new_key()
CIPHER = TextCipher([KEY])
STEPS = TrainConfig(max_steps=40, batch_size=8, lr=3e-3, warmup_steps=4, eval_every=20, eval_batches=2,
                    checkpoint_every=40)  # fmt: skip


@pytest.fixture
def loop_ws(workspace: Workspace, tmp_path: Path) -> Workspace:
    """A champion LM, the instructions as replay data, a held-out set in the preferred style."""
    build_dataset(workspace, "text", Recipe(source=str(DEMO_TEXT), split={"fractions": {"val": 0.1}}))
    build_dataset(workspace, "inst", Recipe(source=str(DEMO_INSTRUCTIONS), text_field="instruction"))
    train_lm(workspace, "text", "chat", train_cfg=TrainConfig(max_steps=20, batch_size=8, eval_every=10,
             eval_batches=2), track=False, overrides={"context_length": 128}, alias="champion")  # fmt: skip
    rows = [json.loads(line) for line in DEMO_INSTRUCTIONS.open()]
    held_out = tmp_path / "style-eval.jsonl"
    styled = [{"instruction": r["instruction"], "response": f"Verily, {r['response']}"} for r in rows[80:110]]
    held_out.write_text("".join(json.dumps(r) + "\n" for r in styled))
    build_dataset(workspace, "style-eval", Recipe(source=str(held_out), text_field="instruction"))
    return workspace


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


def test_a_round_promotes_a_challenger_that_wins_and_keeps_one_that_does_not(
    loop_ws: Workspace,
    cli,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    from lamina.monitoring.loop import run

    monkeypatch.setenv("LAMINA_SECURITY__ENCRYPTION_KEYS", json.dumps([KEY]))
    made = cli("--workspace", str(loop_ws.root), "loop", "run", "chat", "--eval", "style-eval", "--json")
    assert made.code == 0, made.err
    assert json.loads(made.out)["status"] == "skipped"  # nothing reviewed yet
    rows = [json.loads(line) for line in DEMO_INSTRUCTIONS.open()]
    before = resolve_model(loop_ws, "chat@champion")
    served_and_corrected(loop_ws, rows[:60])
    served_and_corrected(loop_ws, rows[60:70], status="rejected")  # rejected feedback trains nothing
    won = run(loop_ws, "chat", CIPHER, eval_set="style-eval", replay="inst", replay_rows=20, method="full",
              train_cfg=STEPS)  # fmt: skip
    assert won.status == "promoted", won.reason
    assert won.gate["challenger_loss"] < won.gate["champion_loss"] and won.gate["lower"] > 0
    after = resolve_model(loop_ws, "chat@champion")
    assert after.ref == won.challenger != before.ref
    # lineage: feedback batch → dataset → model version, and the gate's report on the challenger
    parents = {rel: p for p, rel in loop_ws.catalog.parents(after.id)}
    dataset = parents["trained_on"]
    dataset_parents = {rel: p.kind for p, rel in loop_ws.catalog.parents(dataset.id)}
    assert (
        dataset_parents["built_from"] == "feedback_batch" and dataset_parents["replays"] == "dataset_version"
    )
    with loop_ws.catalog.session() as session:
        taken = [f.batch_id for f in session.query(Feedback).filter_by(status="corrected")]
        untouched = [f.batch_id for f in session.query(Feedback).filter_by(status="rejected")]
    assert len(set(taken)) == 1 and None not in taken and untouched == [None] * 10

    served_and_corrected(loop_ws, rows[70:80])  # a second round that cannot clear a high bar
    kept = run(loop_ws, "chat", CIPHER, eval_set="style-eval", method="full", train_cfg=STEPS, margin=100.0)
    assert kept.status == "kept" and "margin 100.0" in kept.reason and kept.report
    assert resolve_model(loop_ws, "chat@champion").ref == won.challenger  # the champion stays
    assert run(loop_ws, "chat", CIPHER, eval_set="style-eval").status == "skipped"  # each row used once
