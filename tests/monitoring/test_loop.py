"""One round of the closed loop on a tiny chat model: reviewed corrections in a style ("Verily, …")
train a challenger that wins on a held-out set of that style and is promoted with lineage; a round
that cannot win by the margin keeps the champion and says why; a round without feedback is skipped."""

from __future__ import annotations

import json

import pytest

from lamina.core.catalog.models import Feedback
from lamina.core.workspace import Workspace
from lamina.demo import DEMO_INSTRUCTIONS
from lamina.hub.registry import resolve_model
from tests.monitoring.served import CIPHER, KEY, STEPS, served_and_corrected, served_pairs


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


def test_preferences_train_a_dpo_challenger_and_a_failed_round_gives_its_feedback_back(
    loop_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lamina.training.preference as preference
    from lamina.monitoring.loop import run
    from lamina.training.preference import PreferenceConfig

    rows = [json.loads(line) for line in DEMO_INSTRUCTIONS.open()]
    served_pairs(loop_ws, rows[:60])
    before = resolve_model(loop_ws, "chat@champion")

    def crash(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise MemoryError("the trainer ran out of memory")

    monkeypatch.setattr(preference, "dpo", crash)
    with pytest.raises(MemoryError):
        run(loop_ws, "chat", CIPHER, eval_set="style-eval", rails=False)
    monkeypatch.undo()
    assert resolve_model(loop_ws, "chat@champion").ref == before.ref
    with loop_ws.catalog.session() as session:
        assert {f.batch_id for f in session.query(Feedback)} == {None}  # back in the queue
    failed = loop_ws.catalog.latest("eval_report", "chat-loop-gate")
    assert failed is not None and "MemoryError" in (failed.description or "")

    loop_ws.settings.rails = {"preset": "none", "output": [{"rail": "secrets"}]}
    won = run(loop_ws, "chat", CIPHER, eval_set="style-eval", dpo_cfg=PreferenceConfig(max_steps=30, lr=2e-3),
              answers=8)  # fmt: skip
    assert won.pairs and won.dataset is None  # preferences only: DPO on the champion
    assert won.gate["rails"] == ["secrets"] and won.gate["answers"] == 8
    assert won.status == "promoted", won.reason
    parents = {rel: p.kind for p, rel in loop_ws.catalog.parents(resolve_model(loop_ws, "chat@champion").id)}
    assert parents["trained_on"] == "dataset_version"
