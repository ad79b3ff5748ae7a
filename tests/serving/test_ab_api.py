"""An A/B test through a real ``lamina serve``: requests for ``shakes@champion`` are split between
two arms (each answer says which version served it), the audit log records the arm, thumbs come in
through ``/v1/feedback``, and ``lamina monitor ab`` reports each arm's KPIs and the sequential test."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import lamina_here
from tests.serving.conftest import Server, start_server

EXPERIMENT = {"name": "shakes-ab", "model": "shakes@champion", "by": "request", "split": 0.5,
              "arms": {"control": "shakes@champion", "treatment": "shakes@v1"}}  # fmt: skip


@pytest.fixture(scope="module")
def split(server: Server) -> Iterator[Server]:
    env = {"LAMINA_SERVER__EXPERIMENTS": json.dumps([EXPERIMENT]), "LAMINA_RAILS__PRESET": "none"}
    url, process = start_server(server.workspace, env, "ab-server.log")
    made = lamina_here(
        "-w", str(server.workspace), "keys", "create", "--role", "user", "--name", "ab", "--json"
    )
    assert made.returncode == 0, made.stderr  # its own key: other tests list the shared key's feedback
    yield Server(url, server.workspace, json.loads(made.stdout)["key"], process)
    process.terminate()
    process.wait(timeout=20)


def test_requests_are_split_between_arms_and_each_arm_is_reported(split: Server) -> None:
    client = openai.OpenAI(base_url=f"{split.url}/v1", api_key=split.user_key, max_retries=0)
    served: dict[str, list[str]] = {"shakes@champion": [], "shakes@v1": []}
    for i in range(30):
        raw = client.chat.completions.with_raw_response.create(
            model="shakes@champion",
            messages=[{"role": "user", "content": f"Speak, number {i}."}],
            max_tokens=4,
        )
        served[raw.parse().model].append(raw.headers["x-request-id"])
    assert all(len(ids) >= 5 for ids in served.values()), {k: len(v) for k, v in served.items()}
    for model, ids in served.items():  # the treatment is liked, the control is not
        for rid in ids:
            thumbs = "up" if model == "shakes@v1" else "down"
            given = httpx.post(f"{split.url}/v1/feedback", json={"request_id": rid, "thumbs": thumbs},
                               headers=split.headers(), timeout=30)  # fmt: skip
            assert given.status_code == 201, given.text

    shown = lamina_here("-w", str(split.workspace), "monitor", "ab", "shakes-ab", "--json",
                       env={"LAMINA_SERVER__EXPERIMENTS": json.dumps([EXPERIMENT])})  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    result = json.loads(shown.stdout)
    arms = result["arms"]
    assert result["order"] == ["control", "treatment"]
    assert arms["control"]["requests"] == len(served["shakes@champion"])
    assert arms["treatment"]["requests"] == len(served["shakes@v1"])
    assert arms["treatment"]["thumbs_up_rate"] == 1.0 and arms["control"]["thumbs_up_rate"] == 0.0
    assert result["test"]["votes"] == [len(served["shakes@champion"]), len(served["shakes@v1"])]
    if min(result["test"]["votes"]) >= 10:  # enough votes per arm for the test to speak
        assert result["test"]["significant"] and result["verdict"].startswith("treatment")
    missing = lamina_here("-w", str(split.workspace), "monitor", "ab", "no-such-test")
    assert missing.returncode == 6 and "no request of experiment 'no-such-test'" in missing.stderr
