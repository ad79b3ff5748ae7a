"""The loop in the background: triggers queue a round once, a worker takes it, and a worker killed
in the middle of a round is taken over by the next one, which continues the same round (the same
feedback batch) and finishes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from lamina.core.catalog.models import Feedback, Job
from lamina.core.workspace import Workspace
from lamina.demo import DEMO_INSTRUCTIONS
from lamina.hub.registry import resolve_model
from lamina.monitoring import jobs
from lamina.monitoring.worker import KIND, LoopSpec, Triggers, due, tick
from tests.monitoring.served import CIPHER, KEY, served_and_corrected

ROWS = [json.loads(line) for line in DEMO_INSTRUCTIONS.open()]


def thumbs(ws: Workspace, version_id: str | None, at: datetime, up: int, down: int) -> None:
    with ws.catalog.session() as session:
        for i in range(up + down):
            label = "thumbs_up" if i < up else "thumbs_down"
            rid = f"t-{at.timestamp()}-{i}"
            session.add(
                Feedback(request_id=rid, model_version_id=version_id, label=label, status="new", at=at)
            )


def test_triggers_fire_on_feedback_volume_and_schedule_and_queue_one_round(
    loop_ws: Workspace,
) -> None:
    volume = LoopSpec(model="chat", eval="style-eval", triggers=Triggers(min_feedback=5))
    served_and_corrected(loop_ws, ROWS[:3])
    assert due(loop_ws, volume, CIPHER) is None
    served_and_corrected(loop_ws, ROWS[3:8], status="approved")
    assert due(loop_ws, volume, CIPHER) == "feedback volume (8 reviewed items waiting, ≥ 5)"
    first = jobs.enqueue(loop_ws, KIND, "chat", "feedback volume", volume.model_dump())
    assert first is not None and jobs.enqueue(loop_ws, KIND, "chat", "again") is None  # one at a time

    schedule = LoopSpec(model="chat", eval="style-eval", triggers=Triggers(every="1h"))
    assert due(loop_ws, schedule, CIPHER) == "schedule (every 1h)"  # never ran
    jobs.finish(loop_ws, first.id, "done", {})
    assert due(loop_ws, schedule, CIPHER) is None  # ran a moment ago


def test_a_thumbs_up_rate_drop_between_windows_fires_only_when_big_enough(workspace: Workspace) -> None:
    now = datetime.now(UTC)
    drop = LoopSpec(
        model="chat", eval="style-eval", triggers=Triggers(thumbs_drop=0.3, window="1h", min_thumbs=10)
    )
    thumbs(workspace, None, now - timedelta(minutes=90), up=18, down=2)  # 0.90 the hour before
    thumbs(workspace, None, now - timedelta(minutes=20), up=8, down=4)  # 0.67 this hour: not enough
    assert due(workspace, drop, CIPHER, now) is None
    thumbs(workspace, None, now - timedelta(minutes=10), up=0, down=8)  # 0.40 now
    assert due(workspace, drop, CIPHER, now) == "KPI drop (thumbs-up rate 0.90 → 0.40 over 1h)"


@pytest.mark.slow
def test_a_worker_killed_mid_round_is_taken_over_and_the_round_continues(loop_ws: Workspace) -> None:
    entry = {"model": "chat", "eval": "style-eval", "method": "full", "steps": 40, "lr": 3e-3, "rails": False,
             "triggers": {"min_feedback": 20}}  # fmt: skip
    (loop_ws.root / "lamina.yaml").write_text(
        (loop_ws.root / "lamina.yaml").read_text() + yaml.safe_dump({"monitoring": {"loop": [entry]}})
    )
    served_and_corrected(loop_ws, ROWS[:60])
    before = resolve_model(loop_ws, "chat@champion")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMINA_")}
    env["LAMINA_SECURITY__ENCRYPTION_KEYS"] = json.dumps([KEY])
    command = [sys.executable, "-m", "lamina", "-w", str(loop_ws.root), "loop", "worker", "--once"]
    worker = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    state: dict = {}
    while time.monotonic() < deadline and not state.get("batch"):
        time.sleep(0.2)
        with loop_ws.catalog.session() as session:
            job = session.query(Job).filter_by(kind=KIND).first()
            state = dict(job.state) if job is not None else {}
        assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
    assert state.get("batch"), "the worker never froze a batch"
    worker.send_signal(signal.SIGKILL)  # mid-round: the batch is frozen, training is under way
    worker.wait(timeout=30)
    with loop_ws.catalog.session() as session:
        job = session.query(Job).filter_by(kind=KIND).one()
        assert job.status == "running" and job.attempts == 1  # nobody said it ended
        taken = {f.batch_id for f in session.query(Feedback).filter(Feedback.correction.isnot(None))}
    assert resolve_model(loop_ws, "chat@champion").ref == before.ref

    # a live worker's job is left alone; one silent longer than stale_after is taken over
    assert tick(loop_ws, CIPHER, stale_after=timedelta(hours=1)) is None
    done = tick(loop_ws, CIPHER, stale_after=timedelta(seconds=0))
    assert done is not None and done["status"] == "done" and done["attempts"] == 2, done
    assert done["result"]["batch"] == state["batch"] and len(taken) == 1  # the same round, continued
    assert done["result"]["status"] == "promoted", done["result"]["reason"]
    assert resolve_model(loop_ws, "chat@champion").ref == done["result"]["challenger"] != before.ref
