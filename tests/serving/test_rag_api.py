"""The ``rag`` extension of ``/v1/chat/completions`` through a real ``lamina serve``, asked by the
official openai client: citations in the answer and in the stream, each key reading only its own
groups, "not found" instead of an answer from nothing, and one clear error per bad request."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import lamina_here
from tests.rag.conftest import GUIDE_MD, HR_HTML
from tests.serving.conftest import ADMIN, Server

MODEL = "shakes@champion"


@pytest.fixture(scope="module")
def policies(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A collection with a travel guide for staff and an HR page for hr; a key for each, and one with none."""
    root = tmp_path_factory.mktemp("policies")
    (root / "staff").mkdir()
    (root / "hr").mkdir()
    (root / "staff" / "travel.md").write_text(GUIDE_MD)
    (root / "hr" / "leave.html").write_text(HR_HTML)
    ws = ("--workspace", str(server.workspace))
    for folder, group in (("staff", "staff"), ("hr", "hr")):
        done = lamina_here(*ws, "rag", "ingest", "-c", "policies", str(root / folder), "--groups", group)
        assert done.returncode == 0, done.stderr
    keys = {}
    for name, groups in (("staff", "staff"), ("hr", "hr"), ("nobody", "")):
        made = lamina_here(
            *ws, "keys", "create", "--role", "user", "--name", name, "--groups", groups, "--json"
        )
        assert made.returncode == 0, made.stderr
        keys[name] = json.loads(made.stdout)["key"]
        assert json.loads(made.stdout)["groups"] == ([groups] if groups else [])
    return keys


def client(server: Server, key: str):  # type: ignore[no-untyped-def]
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


HOTEL = [{"role": "user", "content": "What is the nightly hotel limit in Paris?"}]


def test_extractive_answer_cites_its_source_in_the_response_and_the_stream(
    server: Server, policies: dict[str, str]
) -> None:
    oa = client(server, policies["staff"])
    rag = {"collection": "policies", "k": 2, "answer": "extractive"}
    chat = oa.chat.completions.create(model=MODEL, messages=HOTEL, extra_body={"rag": rag})
    assert "240 euros" in chat.choices[0].message.content and chat.choices[0].finish_reason == "stop"
    best = chat.citations[0]
    assert best["index"] == 1 and best["document"].endswith("travel.md")
    assert "240 euros" in best["highlight"]["text"] and best["headings"] == ["Travel policy", "Hotels"]
    assert best["text"][best["highlight"]["start"] : best["highlight"]["end"]] == best["highlight"]["text"]
    assert chat.rag["grounded"] is True and chat.rag["collection"] == "policies@v2"

    chunks = list(
        oa.chat.completions.create(model=MODEL, messages=HOTEL, stream=True, extra_body={"rag": rag})
    )
    assert chunks[0].citations == chat.citations  # before any content
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == chat.choices[0].message.content
    )
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_generated_answer_puts_the_sources_in_a_versioned_prompt(
    server: Server, policies: dict[str, str], tmp_path: Path
) -> None:
    # the test model's context is 64 tokens: a terse template of our own, saved as a version
    (tmp_path / "terse.j2").write_text("{% for s in sources %}{{ s.text }}\n{% endfor %}Q: {{ question }}")
    ws = ("--workspace", str(server.workspace))
    saved = lamina_here(*ws, "prompts", "create", "terse", str(tmp_path / "terse.j2"), "--var", "question",
                       "--var", "sources")  # fmt: skip
    assert saved.returncode == 0 and "terse@v1" in saved.stdout, saved.stderr
    oa = client(server, policies["staff"])
    rag = {"collection": "policies", "k": 3, "template": "terse"}
    plain = oa.chat.completions.create(model=MODEL, messages=HOTEL, max_tokens=4, temperature=0)
    chat = oa.chat.completions.create(
        model=MODEL, messages=HOTEL, max_tokens=4, temperature=0, extra_body={"rag": rag}
    )
    assert chat.rag["template"] == "terse@v1" and chat.rag["answer"] == "generate"
    # the sources were fitted to the context: the best one, cut short, and only it is cited
    assert len(chat.citations) == 1 and chat.citations[0]["document"].endswith("travel.md")
    assert 0 < chat.citations[0]["shown_chars"] < len(chat.citations[0]["text"])
    assert plain.usage.prompt_tokens + 10 < chat.usage.prompt_tokens <= 64 - 4
    assert chat.usage.completion_tokens >= 1
    too_small = httpx.post(
        f"{server.url}/v1/chat/completions", headers=server.headers(policies["staff"]), timeout=30,
        json={"model": MODEL, "messages": HOTEL, "max_tokens": 4, "rag": {"collection": "policies"}},
    )  # fmt: skip
    assert too_small.status_code == 400 and too_small.json()["error"]["code"] == "context_length_exceeded"
    assert "extractive" in too_small.json()["error"]["message"]
    stream = oa.chat.completions.create(
        model=MODEL, messages=HOTEL, max_tokens=4, temperature=0, stream=True, extra_body={"rag": rag}
    )
    chunks = list(stream)
    assert chunks[0].citations == chat.citations
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == chat.choices[0].message.content
    )


def test_each_key_reads_only_its_groups(server: Server, policies: dict[str, str]) -> None:
    rag = {"collection": "policies", "k": 5, "answer": "extractive", "min_relevance": -1.0}
    for key, own in (("staff", "travel.md"), ("hr", "leave.html")):
        chat = client(server, policies[key]).chat.completions.create(
            model=MODEL, messages=HOTEL, extra_body={"rag": rag}
        )
        assert chat.citations and {Path(c["document"]).name for c in chat.citations} == {own}
    admin = client(server, ADMIN).chat.completions.create(
        model=MODEL, messages=HOTEL, extra_body={"rag": rag}
    )
    assert {Path(c["document"]).name for c in admin.citations} == {"travel.md", "leave.html"}


def test_nothing_relevant_is_said_plainly(server: Server, policies: dict[str, str]) -> None:
    moons = [{"role": "user", "content": "How many moons does Jupiter have?"}]
    for answer in ("extractive", "generate"):  # the model is not asked when there is nothing to answer from
        chat = client(server, policies["staff"]).chat.completions.create(
            model=MODEL, messages=moons, extra_body={"rag": {"collection": "policies", "answer": answer}}
        )
        assert chat.rag["grounded"] is False and chat.citations == []
        assert "close enough" in chat.choices[0].message.content and chat.usage.total_tokens == 0


@pytest.mark.parametrize(
    ("key", "rag", "status", "code"),
    [
        ("nobody", {"collection": "policies"}, 403, "no_groups"),
        ("staff", {"collection": "nope"}, 404, "collection_not_found"),
        ("staff", {"collection": "policies", "filters": {"author": "x"}}, 400, "invalid_filter"),
        ("staff", {"collection": "policies", "template": "missing"}, 404, "not_found"),
        ("staff", {"collection": "policies", "k": 0}, 400, "invalid_request"),
        ("staff", {"collection": "policies", "colection": "x"}, 400, "invalid_request"),
    ],
)
def test_bad_rag_requests_get_one_clear_error(
    server: Server, policies: dict[str, str], key: str, rag: dict, status: int, code: str
) -> None:
    body = {"model": MODEL, "messages": HOTEL, "rag": rag}
    r = httpx.post(
        f"{server.url}/v1/chat/completions", json=body, headers=server.headers(policies[key]), timeout=30
    )
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_imported_embedding_models_are_served_and_embed_collections(server: Server, tmp_path: Path) -> None:
    from openai import OpenAI

    from lamina.models.text_encoder import load_encoder

    load_encoder().save(str(tmp_path / "mini"))  # a real sentence-transformers folder, saved here
    ws = ("--workspace", str(server.workspace))
    made = lamina_here(*ws, "models", "import", str(tmp_path / "mini"), "--name", "mini")
    assert made.returncode == 0 and "mini@v1" in made.stdout, made.stderr
    oa = OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN, max_retries=0)
    assert "mini@v1" in {m.id for m in oa.models.list().data}
    texts = ["Hotels in Paris cost 240 euros a night.", "Forklifts need a licence."]
    ours = oa.embeddings.create(model="mini@v1", input=texts)
    packaged = oa.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
    assert len(ours.data[0].embedding) == 384 and ours.usage.prompt_tokens == packaged.usage.prompt_tokens
    for a, b in zip(ours.data, packaged.data, strict=True):  # the same weights: the same direction
        assert sum(x * y for x, y in zip(a.embedding, b.embedding, strict=True)) > 0.99
    wrong = httpx.post(f"{server.url}/v1/embeddings", headers=server.headers(ADMIN), timeout=30,
                       json={"model": MODEL, "input": "x"})  # fmt: skip
    assert wrong.status_code == 400 and "needs an embedding model" in wrong.json()["error"]["message"]
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "travel.md").write_text(GUIDE_MD)
    done = lamina_here(
        *ws, "rag", "ingest", "-c", "mini-docs", str(docs), "--model", "mini", "--groups", "staff"
    )
    assert done.returncode == 0, done.stderr
    listed = lamina_here(*ws, "rag", "list", "--json")
    row = next(r for r in json.loads(listed.stdout) if r["name"] == "mini-docs")
    assert row["meta"]["embedding_model"] == "mini@v1"  # pinned to the version it was built with
    lineage = lamina_here(*ws, "lineage", "vector_index:mini-docs@v1")
    assert lineage.returncode == 0 and "mini@v1" in lineage.stdout and "embedded_with" in lineage.stdout
    rag = {"collection": "mini-docs", "answer": "extractive"}
    chat = oa.chat.completions.create(model=MODEL, messages=HOTEL, extra_body={"rag": rag})
    assert "240 euros" in chat.choices[0].message.content


def test_server_tools_run_in_a_loop_and_end_in_words(server: Server, policies: dict[str, str]) -> None:
    from lamina.core.workspace import Workspace
    from lamina.rag.tools import calculate
    from lamina.training.lm import train_lm
    from lamina.training.loop import TrainConfig

    ws = Workspace.open(server.workspace)  # a model with room for a call and its result (256 tokens)
    try:
        steps = TrainConfig(max_steps=20, batch_size=8, eval_every=20, eval_batches=1)
        train_lm(ws, "shakespeare", "shakes-long", overrides={"context_length": 256}, track=False,
                 train_cfg=steps)  # fmt: skip
    finally:
        ws.close()
    oa = client(server, policies["staff"])
    question = [{"role": "user", "content": "2+2?"}]
    chat = oa.chat.completions.create(
        model="shakes-long@v1", messages=question, max_tokens=100, temperature=0, tool_choice="required",
        parallel_tool_calls=False,
        extra_body={"server_tools": {"names": ["calculator"], "max_steps": 1}},
    )  # fmt: skip
    trace = chat.tool_trace
    assert len(trace) == 1 and trace[0]["name"] == "calculator"  # forced: the grammar made it a call
    expression = json.loads(trace[0]["arguments"])["expression"]  # decoded under the tool's schema
    try:
        expected = str(calculate(expression))
    except Exception:  # the tiny model's expression may not be arithmetic: the tool says so
        expected = "error:"
    assert trace[0]["result"].startswith(expected)
    assert chat.choices[0].message.tool_calls is None and chat.choices[0].finish_reason in ("stop", "length")
    assert chat.usage.total_tokens > 0
    for extra, param in (
        ({"server_tools": {"names": ["shell"]}}, None),
        ({"server_tools": {"names": ["calculator"]}, "stream": True}, "stream"),
        ({"server_tools": {"names": ["retrieve"]}}, None),  # no collection to search
    ):
        r = httpx.post(
            f"{server.url}/v1/chat/completions", headers=server.headers(policies["staff"]), timeout=30,
            json={"model": "shakes-long@v1", "messages": question, **extra},
        )  # fmt: skip
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param


def test_threads_remember_and_fold_what_no_longer_fits(server: Server, policies: dict[str, str]) -> None:
    staff, hr = server.headers(policies["staff"]), server.headers(policies["hr"])
    made = httpx.post(f"{server.url}/v1/threads", json={"title": "travel"}, headers=staff, timeout=30)
    assert made.status_code == 201, made.text
    thread = made.json()["id"]
    oa = client(server, policies["staff"])
    turns = [
        "Hello there.",
        "Tell me of Rome.",
        "And of the king?",
        "What of the queen now?",
        "Farewell, friend.",
    ]
    for i, turn in enumerate(turns):
        stream = i == 2  # one turn streamed: it is remembered all the same
        reply = oa.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": turn}], max_tokens=8, temperature=0,
            stream=stream, extra_body={"thread": thread},
        )  # fmt: skip
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in reply if c.choices)
        else:
            text = reply.choices[0].message.content
            assert reply.thread["id"] == thread
        kept = httpx.get(f"{server.url}/v1/threads/{thread}", headers=staff, timeout=30).json()
        assert kept["messages"][-2:] == [
            {"role": "user", "content": turn},
            {"role": "assistant", "content": text},
        ]
    # five turns of a 64-token model do not fit: the oldest were folded into a summary, in their words
    assert kept["summarized"] > 0 and kept["summary"]
    assert any(word in kept["summary"] for word in ("Hello", "Rome", "king", "queen"))
    assert len(kept["messages"]) == 2 * len(turns)  # every turn is kept
    for method in ("GET", "DELETE"):  # another key's thread does not exist for it
        other = httpx.request(method, f"{server.url}/v1/threads/{thread}", headers=hr, timeout=30)
        assert other.status_code == 404 and other.json()["error"]["code"] == "thread_not_found"
    theirs = httpx.post(
        f"{server.url}/v1/chat/completions", headers=hr, timeout=30,
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "thread": thread},
    )  # fmt: skip
    assert theirs.status_code == 404
    assert httpx.delete(f"{server.url}/v1/threads/{thread}", headers=staff, timeout=30).status_code == 200
    assert httpx.get(f"{server.url}/v1/threads/{thread}", headers=staff, timeout=30).status_code == 404


CHAIN = """
name: draft-then-json
inputs: [question]
steps:
  - template: draft
    model: shakes@champion
    output: draft
    max_tokens: 6
  - template: as-json
    model: shakes@champion
    parser: json
    schema: {type: object, properties: {mood: {enum: [happy, sad]}}, required: [mood]}
    output: final
    max_tokens: 24
"""


def test_a_yaml_chain_runs_locally_and_through_the_server(
    server: Server, policies: dict[str, str], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    ws = ("--workspace", str(server.workspace))
    for name, text in (("draft", "Q: {{ question }}"), ("as-json", "Mood of: {{ draft }}")):
        (tmp_path / f"{name}.j2").write_text(text)
        assert lamina_here(*ws, "prompts", "create", name, str(tmp_path / f"{name}.j2")).returncode == 0
    (tmp_path / "chain.yaml").write_text(CHAIN)
    inputs = json.dumps({"question": "Who is the king?"})
    for where in ((), ("--url", server.url, "--key", policies["staff"])):
        done = lamina_here(
            *ws, "chain", "run", str(tmp_path / "chain.yaml"), "--vars", inputs, "--json", *where
        )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["outputs"]["final"]["mood"] in ("happy", "sad")  # parsed JSON, under the schema
        first, second = result["trace"]
        assert (
            first["prompt"] == "Q: Who is the king?"
            and second["prompt"] == f"Mood of: {result['outputs']['draft']}"
        )
        assert first["template"] == "draft@v1" and second["template"] == "as-json@v1"
    (tmp_path / "bad.yaml").write_text(CHAIN.replace("inputs: [question]", "inputs: [topic]"))
    bad = lamina_here(*ws, "chain", "run", str(tmp_path / "bad.yaml"), "--vars", '{"topic": "x"}')
    assert bad.returncode != 0 and "step 1 (draft@v1) reads question" in bad.stderr


def test_prompt_optimisation_scores_every_candidate_and_promotes_the_best(
    server: Server, policies: dict[str, str], tmp_path: Path
) -> None:
    ws = ("--workspace", str(server.workspace))
    variants = []
    texts = ("{% for s in sources %}{{ s.text }} {% endfor %}Q: {{ question }}",
             "Q: {{ question }} Facts: {% for s in sources %}{{ s.text }}{% endfor %}")  # fmt: skip
    for i, text in enumerate(texts):
        (tmp_path / f"v{i}.j2").write_text(text)
        variants += ["--variant", str(tmp_path / f"v{i}.j2")]
    rows = [{"inputs": {"question": f"Who rules in {town}?", "sources": [{"text": f"{king} rules {town}."}]},
             "expected": king} for town, king in (("Rome", "Caesar"), ("Troy", "Priam"), ("Tyre", "Hiram"),
                                                    ("Ithaca", "Odysseus"))]  # fmt: skip
    (tmp_path / "eval.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    args = ("prompts", "optimize", "qa", *variants, "--eval", str(tmp_path / "eval.jsonl"), "-m", MODEL,
            "--mutations", "1", "--shots", "1", "--max-tokens", "4", "--metric", "contains",
            "--url", server.url, "--key", policies["staff"], "--json")  # fmt: skip
    done = lamina_here(*ws, *args)
    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout)
    origins = [c["origin"] for c in first["candidates"]]
    assert (
        len(first["candidates"]) == 6
        and origins.count("given") == 2
        and origins.count("few-shot: 1 example(s)") == 2
    )
    assert all(0.0 <= c["score"] <= 1.0 for c in first["candidates"])
    assert first["score"] == max(c["score"] for c in first["candidates"]) and first["promoted"]
    from lamina.core.workspace import Workspace
    from lamina.rag import prompts

    w = Workspace.open(server.workspace)
    try:
        assert prompts.load(w, "qa@champion").ref == first["best"]
        report = w.catalog.resolve(first["report"])
        assert {c["ref"] for c in report.meta["candidates"]} == {c["ref"] for c in first["candidates"]}
        assert {rel for _, rel in w.catalog.parents(report.id)} == {"evaluated"}
    finally:
        w.close()
    again = json.loads(lamina_here(*ws, *args).stdout)  # the same candidates: the champion scores as well
    assert not again["promoted"] and [c["ref"] for c in again["candidates"]] == [
        c["ref"] for c in first["candidates"]
    ]
    rag = {"collection": "policies", "k": 2, "template": "qa@champion"}
    chat = client(server, policies["staff"]).chat.completions.create(
        model=MODEL, messages=HOTEL, max_tokens=4, extra_body={"rag": rag}
    )
    assert chat.rag["template"] == first["best"]  # serving resolves template@champion


def test_rag_eval_scores_generated_answers(server: Server, tmp_path: Path) -> None:
    squad = {"data": [{"title": "Kings", "paragraphs": [
        {"context": "Caesar ruled Rome.", "qas": [{"id": "1", "question": "Who ruled Rome?",
                                                    "answers": [{"text": "Caesar", "answer_start": 0}]}]},
        {"context": "Priam ruled Troy.", "qas": [{"id": "2", "question": "Who ruled Troy?",
                                                   "answers": [{"text": "Priam", "answer_start": 0}]}]},
    ]}]}  # fmt: skip
    (tmp_path / "kings.json").write_text(json.dumps(squad))
    (tmp_path / "short.j2").write_text("{% for s in sources %}{{ s.text }}{% endfor %} {{ question }}")
    ws = ("--workspace", str(server.workspace))
    assert lamina_here(*ws, "prompts", "create", "short", str(tmp_path / "short.j2")).returncode == 0
    done = lamina_here(*ws, "rag", "eval", str(tmp_path / "kings.json"), "--answers", MODEL,
                      "--template", "short", "-k", "1", "--max-tokens", "6", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    quality = json.loads(done.stdout)["answers"]
    assert quality["questions"] == 2 and quality["answered"] == 2 and quality["template"] == "short@v1"
    assert quality["answer_in_sources"] == 1.0  # retrieval put the gold answer before the model
    assert 0.0 <= quality["citation_coverage"] <= 1.0 and 0.0 <= quality["answer_f1"] <= 1.0


def test_rag_ask_generates_a_cited_answer_with_a_model(
    server: Server, policies: dict[str, str], tmp_path: Path
) -> None:
    ws = ("--workspace", str(server.workspace))
    (tmp_path / "ask.j2").write_text("{% for s in sources %}{{ s.text }}{% endfor %} {{ question }}")
    assert lamina_here(*ws, "prompts", "create", "ask-short", str(tmp_path / "ask.j2")).returncode == 0
    args = ("rag", "ask", "What is the nightly hotel limit in Paris?", "-c", "policies", "-g", "staff")
    done = lamina_here(*ws, *args, "-m", MODEL, "--template", "ask-short", "--max-tokens", "4", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["rag"]["template"] == "ask-short@v1" and answer["rag"]["grounded"]
    assert answer["citations"][0]["document"].endswith("travel.md")
    assert isinstance(answer["answer"], str)  # what a 64-token model writes: maybe nothing at all
    too_long = lamina_here(*ws, *args, "-m", MODEL)  # the built-in template does not fit 64 tokens
    assert too_long.returncode != 0 and "extractive" in too_long.stderr
