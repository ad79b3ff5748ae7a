"""``lamina explain`` on answers a real ``lamina serve`` gave (asked with the official openai
client): gradient × input over the prompt, each answer token's probability and alternatives, the
RAG sources the answer was given, an HTML page; and one clear refusal per request it cannot
explain."""

from __future__ import annotations

import json
from pathlib import Path

import openai

from lamina.quickstart import DOCS_COLLECTION, DOCS_QUESTION
from tests.conftest import lamina_here
from tests.serving.conftest import ADMIN, RAILED_KEY, Server, audit_row

ENV = {"LAMINA_SECURITY__ENCRYPTION_KEYS": json.dumps([RAILED_KEY])}


def ask(server: Server, key: str, temperature: float = 0, **extra: object) -> tuple[str, str]:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="shakes@champion", max_tokens=8, temperature=temperature, **extra
    )  # type: ignore[call-overload]
    rid = raw.headers["x-request-id"]
    assert audit_row(server.workspace, rid) is not None  # explain reads the audit log
    return rid, raw.parse().choices[0].message.content or ""


def test_an_answer_is_explained_token_by_token_with_the_prompt_it_leaned_on(
    railed: Server, tmp_path: Path
) -> None:
    prompt = "Speak of the king and queen."
    for seed in range(20):  # a tiny model may stop at once, and an empty answer has nothing to explain
        rid, answer = ask(railed, railed.user_key, temperature=1.0, seed=seed,
                          messages=[{"role": "user", "content": prompt}])  # fmt: skip
        if answer.strip():
            break
    assert answer.strip(), "twenty sampled answers were all empty"
    shown = lamina_here("-w", str(railed.workspace), "explain", rid, "--json", "--top-k", "3", env=ENV)
    assert shown.returncode == 0, shown.stderr
    e = json.loads(shown.stdout)
    assert e["model"].startswith("shakes@v") and "".join("".join(e["answer_tokens"]).split()) == "".join(
        answer.split()
    )
    assert len(e["attribution"]) == len(e["prompt_tokens"]) and max(abs(a) for a in e["attribution"]) == 1.0
    assert prompt.split()[-1].strip("?.") in "".join(e["prompt_tokens"]) and len(e["per_token"]) == len(
        e["steps"]
    )
    for step in e["steps"]:
        assert 0 < step["p"] <= 1 and len(step["alternatives"]) == 3
        assert step["token"] not in [a["token"] for a in step["alternatives"]]
        assert [a["p"] for a in step["alternatives"]] == sorted(
            (a["p"] for a in step["alternatives"]), reverse=True
        )
    assert e["answer_logprob"] < 0 and e["citations"] == []

    page = tmp_path / "why.html"
    written = lamina_here("-w", str(railed.workspace), "explain", rid, "--out", str(page), env=ENV)
    assert written.returncode == 0 and str(page) in written.stdout.replace("\n", "")
    assert "Why this answer" in page.read_text() and "gradient × input" in page.read_text()


def test_a_rag_answer_lists_the_sources_it_was_given_and_what_cannot_be_explained_is_refused(
    railed: Server,
) -> None:
    rag = {"collection": DOCS_COLLECTION, "k": 2, "answer": "extractive"}
    question = [{"role": "user", "content": DOCS_QUESTION}]
    rid, _ = ask(railed, ADMIN, messages=question, extra_body={"rag": rag})
    shown = lamina_here("-w", str(railed.workspace), "explain", rid, "--json", env=ENV)
    assert shown.returncode == 0, shown.stderr
    e = json.loads(shown.stdout)
    assert e["model"].startswith("extractive") and e["steps"] == []  # quoted, not generated
    assert e["citations"] and all("text" not in c for c in e["citations"]) and e["citations"][0]["index"] == 1

    unknown = lamina_here("-w", str(railed.workspace), "explain", "no-such-request", env=ENV)
    assert unknown.returncode == 6 and "no request 'no-such-request'" in unknown.stderr
    keyless = lamina_here("-w", str(railed.workspace), "explain", rid)  # the text is encrypted
    assert keyless.returncode != 0 and "LAMINA_SECURITY__ENCRYPTION_KEYS" in keyless.stderr
