"""Closed-loop benchmark: how long does one round of ``lamina loop run`` take on the quickstart's
model (target: ≤ 10 minutes on 2 cores), and does the round move the model toward the feedback?

The quickstart runs first (or ``--workspace`` reuses one). Then 60 served requests with corrected
answers in one style ("Verily, …") and 20 preference pairs (the styled answer chosen) are written
to the catalog as the API and the review queue leave them (audit rows with encrypted text, approved
feedback), and one round runs with the defaults a user gets: LoRA SFT (200 steps) on the
corrections + a replay of the quickstart's instruction data, DPO (60 steps) on the pairs, and the
gate (held-out loss with a bootstrap, the output rails on 16 answers of each model). Times per
phase come from the round's own progress lines. Writes bench/results/loop.json and loop.md.

    .venv/bin/python bench/loop.py [--workspace DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from machine import machine_info, machine_line, save  # noqa: E402


def feedback(ws, cipher, rows: list[dict], model: str) -> None:  # type: ignore[no-untyped-def]
    """What the API and a reviewer leave behind: served requests, approved corrections and pairs."""
    from lamina.core.catalog.models import AuditEvent, Feedback
    from lamina.hub.registry import resolve_model

    version = resolve_model(ws, f"{model}@champion")
    with ws.catalog.session() as session:
        for i, row in enumerate(rows):
            body = {
                "model": f"{model}@champion",
                "messages": [{"role": "user", "content": row["instruction"]}],
            }
            answers = {f"a-{i}": f"Verily, {row['response']}", f"b-{i}": row["response"]}
            asked = cipher.encrypt(json.dumps(body))
            for rid, answer in answers.items():
                session.add(AuditEvent(request_id=rid, method="POST", route="/v1/chat/completions",
                                       status_code=200, model_version_id=version.id, request_text=asked,
                                       response_text=cipher.encrypt(answer), detail={}))  # fmt: skip
            if i < 60:
                corrected = cipher.encrypt(answers[f"a-{i}"])
                session.add(Feedback(request_id=f"b-{i}", model_version_id=version.id, label="thumbs_down",
                                     status="approved", correction=corrected))  # fmt: skip
            else:
                session.add(Feedback(request_id=f"a-{i}", other_request_id=f"b-{i}", label="preferred",
                                     model_version_id=version.id, status="approved"))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workspace", type=Path, help="an existing quickstart workspace (else one is made)")
    args = parser.parse_args()

    from lamina.core.crypto import TextCipher, new_key
    from lamina.core.workspace import Workspace
    from lamina.data.pipeline import build_dataset
    from lamina.data.recipe import Recipe
    from lamina.demo import DEMO_INSTRUCTIONS
    from lamina.monitoring.loop import run
    from lamina.quickstart import run_quickstart

    info = machine_info()
    tmp = tempfile.TemporaryDirectory()
    root = args.workspace or Path(tmp.name) / "demo"
    quickstart_s = None
    if args.workspace is None:
        started = time.perf_counter()
        run_quickstart(root)
        quickstart_s = time.perf_counter() - started
    ws = Workspace.open(root)
    rows = [json.loads(line) for line in DEMO_INSTRUCTIONS.open()]
    held = Path(tmp.name) / "style-eval.jsonl"
    styled = [{"instruction": r["instruction"], "response": f"Verily, {r['response']}"} for r in rows[90:118]]
    held.write_text("".join(json.dumps(r) + "\n" for r in styled))
    eval_set = build_dataset(ws, "style-eval", Recipe(source=str(held), text_field="instruction")).version
    replay = build_dataset(
        ws, "replay", Recipe(source=str(DEMO_INSTRUCTIONS), text_field="instruction")
    ).version
    cipher = TextCipher([new_key()])
    feedback(ws, cipher, rows[:80], "shakes")
    marks: list[tuple[float, str]] = []
    started = time.perf_counter()
    result = run(ws, "shakes", cipher, eval_set=eval_set.ref, replay=replay.ref,
                 progress=lambda line: marks.append((time.perf_counter() - started, line)))  # fmt: skip
    total = time.perf_counter() - started
    ws.close()
    phases = [{"at_s": round(at, 1), "step": line} for at, line in marks]
    gate = result.gate
    report = {"machine": info, "quickstart_s": quickstart_s, "round_s": total, "status": result.status,
              "reason": result.reason, "phases": phases, "gate": gate}  # fmt: skip
    lines = [
        "# One closed-loop round on the quickstart's model",
        "",
        f"Machine: {machine_line(info)}",
        "Command: `.venv/bin/python bench/loop.py`",
        "",
        '60 approved corrections + 20 preference pairs (style: answers opening with "Verily,"), replay of '
        "the demo instructions, defaults: LoRA SFT 200 steps, DPO 60 steps, gate with output rails.",
        "",
        f"**Round: {total:.0f} s** (target ≤ 600 s on 2 cores)"
        + (f"; the quickstart before it took {quickstart_s:.0f} s" if quickstart_s else ""),
        f"Outcome: {result.status} — {result.reason}",
        "",
        "| at (s) | step |",
        "|---:|---|",
        *[f"| {p['at_s']} | {p['step']} |" for p in phases],
        f"| {total:.1f} | done |",
        "",
        f"Held-out loss: champion {gate.get('champion_loss', float('nan')):.4f}, challenger "
        f"{gate.get('challenger_loss', float('nan')):.4f} (improvement 95 % CI "
        f"[{gate.get('lower', float('nan')):.4f}, {gate.get('upper', float('nan')):.4f}]); rails acted on "
        f"{gate.get('champion_rails', '-')} / {gate.get('challenger_rails', '-')} of "
        f"{gate.get('answers', '-')} answers.",
    ]
    save("loop", report, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
