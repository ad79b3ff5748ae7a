"""The closed loop, end to end through a real ``lamina serve``: simulated users prefer answers that
open with "Verily," — they ask with the official ``openai`` client, give thumbs-down with a
corrected answer in that style through ``/v1/feedback``, and a reviewer approves them through
``/v1/review``. One ``lamina loop run`` builds the dataset, trains a challenger, gates it and
promotes it; the same server (no restart) then answers fresh prompts in the style far more often
than the champion did. A round trained on bad corrections is refused with its reason, and
``lamina lineage`` shows feedback → dataset → run → version → alias move."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from lamina.core.crypto import new_key
from lamina.core.workspace import Workspace
from lamina.data.pipeline import build_dataset
from lamina.data.recipe import Recipe
from lamina.demo import DEMO_INSTRUCTIONS, DEMO_TEXT
from lamina.training.lm import train_lm
from lamina.training.loop import TrainConfig
from tests.conftest import run_lamina
from tests.serving.conftest import start_server

pytestmark = pytest.mark.slow
KEY = new_key()
ROWS = [json.loads(line) for line in DEMO_INSTRUCTIONS.open()]
STYLE = "Verily"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict]:
    ws, _ = Workspace.init(tmp_path / "ws")
    build_dataset(ws, "text", Recipe(source=str(DEMO_TEXT), split={"fractions": {"val": 0.1}}))
    steps = TrainConfig(max_steps=20, batch_size=8, eval_every=10, eval_batches=2)
    train_lm(
        ws, "text", "chat", train_cfg=steps, track=False, overrides={"context_length": 128}, alias="champion"
    )
    held_out = tmp_path / "style-eval.jsonl"
    styled = [
        {"instruction": r["instruction"], "response": f"{STYLE}, {r['response']}"} for r in ROWS[80:110]
    ]
    held_out.write_text("".join(json.dumps(r) + "\n" for r in styled))
    build_dataset(ws, "style-eval", Recipe(source=str(held_out), text_field="instruction"))
    ws.close()
    keys = {}
    for role in ("user", "reviewer"):
        made = run_lamina("-w", str(ws.root), "keys", "create", "--role", role, "--name", role, "--json")
        assert made.returncode == 0, made.stderr
        keys[role] = json.loads(made.stdout)["key"]
    env = {"LAMINA_SERVER__AUDIT_TEXT": "true", "LAMINA_SECURITY__ENCRYPTION_KEYS": json.dumps([KEY])}
    url, process = start_server(ws.root, env, "loop-server.log", model="chat@champion")
    yield {"url": url, "root": ws.root, "keys": keys}
    process.terminate()
    process.wait(timeout=20)


def ask(s: dict, prompt: str) -> tuple[str, str]:
    client = openai.OpenAI(base_url=f"{s['url']}/v1", api_key=s["keys"]["user"], max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="chat@champion", messages=[{"role": "user", "content": prompt}], max_tokens=6, temperature=0
    )
    return raw.headers["x-request-id"], raw.parse().choices[0].message.content or ""


def users_correct(s: dict, rows: list[dict], answer: str) -> None:
    """Each user asks, dislikes the answer and says what it should have been; a reviewer approves."""
    for row in rows:
        rid, _ = ask(s, row["instruction"])
        body = {"request_id": rid, "thumbs": "down", "correction": answer.format(row["response"])}
        user = {"Authorization": f"Bearer {s['keys']['user']}"}
        given = httpx.post(f"{s['url']}/v1/feedback", headers=user, json=body, timeout=30)
        assert given.status_code == 201, given.text
    reviewer = {"Authorization": f"Bearer {s['keys']['reviewer']}"}
    queue = httpx.get(f"{s['url']}/v1/review", params={"limit": 500}, headers=reviewer, timeout=30).json()[
        "data"
    ]
    for item in queue:
        if item.get("has_correction"):
            url = f"{s['url']}/v1/review/{item['id']}"
            done = httpx.post(url, json={"decision": "approve"}, headers=reviewer, timeout=30)
            assert done.status_code == 200, done.text


def style_rate(s: dict) -> float:
    answers = [ask(s, r["instruction"])[1] for r in ROWS[80:]]  # prompts no round trained on
    return sum(a.strip().startswith(STYLE) for a in answers) / len(answers)


def loop_run(s: dict) -> dict:
    done = run_lamina("-w", str(s["root"]), "loop", "run", "chat", "--eval", "style-eval", "--method", "full",
                      "--steps", "40", "--lr", "3e-3", "--no-rails", "--json",
                      env={"LAMINA_SECURITY__ENCRYPTION_KEYS": json.dumps([KEY])}, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_feedback_through_the_api_makes_the_served_model_take_up_the_preferred_style(served: dict) -> None:
    before = style_rate(served)
    users_correct(served, ROWS[:60], f"{STYLE}, {{}}")
    won = loop_run(served)
    assert won["status"] == "promoted", won["reason"]
    after = style_rate(served)  # the same server process: it follows chat@champion
    assert after >= 0.5 and after >= 2 * before, (before, after)

    users_correct(served, ROWS[60:80], "zq xv {} qz")  # a deliberately bad batch of corrections
    refused = loop_run(served)
    assert refused["status"] == "kept" and "does not win by the margin" in refused["reason"]
    assert refused["champion_after"] == won["challenger"]

    shown = run_lamina("-w", str(served["root"]), "lineage", "chat@champion", "--json")
    assert shown.returncode == 0, shown.stderr
    tree = json.loads(shown.stdout)
    kinds: set[str] = set()

    def walk(node: dict) -> None:
        kinds.add(node["kind"])
        for parent in node.get("parents", []):
            walk(parent)

    walk(tree)
    assert {"feedback_batch", "dataset_version", "run", "model_version"} <= kinds, kinds
    to_champion = [m for m in tree["alias_moves"] if m["alias"] == "chat@champion"]
    assert to_champion[-1]["reason"].startswith("loop: held-out loss"), to_champion
