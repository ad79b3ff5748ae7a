"""The clients people point at an OpenAI-compatible server, against a real ``lamina serve``:
lm-evaluation-harness (loglikelihood, perplexity, generation) and LangChain (chat, streaming,
batches, tools, structured output, embeddings)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from tests.conftest import run_lamina
from tests.serving.conftest import Server

HARNESS = Path(__file__).parent / "harness"
MODEL = "shakes@champion"


def _model_dir(server: Server) -> Path:
    from lamina.core.workspace import Workspace
    from lamina.hub.registry import model_path

    ws = Workspace.open(server.workspace)
    try:
        return Path(model_path(ws, MODEL))
    finally:
        ws.close()


def _tasks(tmp_path: Path, ppl_text: str) -> Path:
    """The local task files, with absolute data paths, and the perplexity document."""
    (tmp_path / "ppl.jsonl").write_text(json.dumps({"text": ppl_text}) + "\n")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for spec in HARNESS.glob("*.yaml"):
        text = spec.read_text().replace("tests/serving/harness/", f"{HARNESS}/")
        (tasks / spec.name).write_text(text.replace("PPL_FILE", str(tmp_path / "ppl.jsonl")))
    return tasks


@pytest.mark.slow
def test_lm_eval_harness_runs_every_task_kind_through_the_server(server: Server, tmp_path: Path) -> None:
    # `lamina eval lm` first: its perplexity, and the exact tokens it measured
    done = run_lamina(  # wide: a long temporary path must not wrap the line the regex reads
        "--workspace", str(server.workspace), "eval", "lm", MODEL, "--dataset", "shakespeare",
        env={"COLUMNS": "400"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    ours = float(re.search(r"perplexity ([\d.]+) \(([\d,]+) tokens\)", done.stdout).group(1))
    measured = int(re.search(r"perplexity [\d.]+ \(([\d,]+) tokens\)", done.stdout).group(1).replace(",", ""))
    ppl_text = _measured_text(server, measured)
    tasks = _tasks(tmp_path, ppl_text)
    out = tmp_path / "out"
    env = {**os.environ, "OPENAI_API_KEY": server.user_key, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    args = (
        f"model={MODEL},base_url={server.url}/v1/completions,tokenizer_backend=huggingface,"
        f"tokenizer={_model_dir(server)},tokenized_requests=False,max_length=64,num_concurrent=4,max_retries=2"
    )
    run = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "local-completions", "--model_args", args,
         "--tasks", "lamina_mc,lamina_gen,lamina_ppl", "--include_path", str(tasks),
         "--output_path", str(out)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    assert 0.0 <= results["lamina_mc"]["acc,none"] <= 1.0
    assert 0.0 <= results["lamina_gen"]["exact_match,none"] <= 1.0
    # char-level model, ASCII text: a byte is a token, so byte perplexity is token perplexity
    theirs = results["lamina_ppl"]["byte_perplexity,none"]
    assert abs(theirs - ours) / ours < 0.01, (theirs, ours)


def _measured_text(server: Server, tokens: int) -> str:
    """The held-out text `lamina eval lm` measured: its first ``tokens + 1`` tokens, as text."""
    from transformers import AutoTokenizer

    from lamina.core.workspace import Workspace
    from lamina.training.lm import _texts

    ws = Workspace.open(server.workspace)
    try:
        texts = _texts(ws, ws.resolve("shakespeare", kind="dataset_version"), "val", "text")
    finally:
        ws.close()
    tokenizer = AutoTokenizer.from_pretrained(str(_model_dir(server)))
    ids = tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"][: tokens + 1]
    return tokenizer.decode(ids)


@pytest.mark.slow
def test_lamina_eval_lm_runs_local_harness_tasks(server: Server, tmp_path: Path) -> None:
    tasks = _tasks(tmp_path, "ROMEO: hi\n")
    done = run_lamina(
        "--workspace", str(server.workspace), "eval", "lm", MODEL, "--dataset", "shakespeare",
        "--harness", "lamina_mc,lamina_gen", "--harness-tasks", str(tasks),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert re.search(r"harness lamina_mc: .*acc,none [\d.]+", done.stdout), done.stdout
    assert re.search(r"harness lamina_gen: .*exact_match,none [\d.]+", done.stdout), done.stdout
    unknown = run_lamina(
        "--workspace", str(server.workspace), "eval", "lm", MODEL, "--dataset", "shakespeare",
        "--harness", "nope_task", "--harness-tasks", str(tasks),
    )  # fmt: skip
    assert unknown.returncode != 0 and "nope_task" in unknown.stderr


class Mood(BaseModel):
    mood: Literal["merry", "sad"]
    n: int = Field(ge=0, le=9)


def test_langchain_chat_openai_and_embeddings(server: Server) -> None:
    from langchain_core.messages import AIMessage
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    llm = ChatOpenAI(
        base_url=f"{server.url}/v1", api_key=server.user_key, model=MODEL, max_tokens=8, temperature=0,
        max_retries=0,
    )  # fmt: skip
    answer = llm.invoke("hi")
    assert isinstance(answer, AIMessage) and isinstance(answer.content, str)
    streamed = "".join(chunk.content for chunk in llm.stream("hi"))
    assert streamed == answer.content  # greedy: the same text, streamed
    assert len(llm.batch(["hi", "ROMEO:"])) == 2

    weather = {"type": "function", "function": {"name": "wx", "description": "weather", "parameters": {
        "type": "object", "properties": {"c": {"type": "string", "maxLength": 4}}, "required": ["c"],
        "additionalProperties": False}}}  # fmt: skip
    long = ChatOpenAI(
        base_url=f"{server.url}/v1", api_key=server.user_key, model=MODEL, max_tokens=58, max_retries=0
    )  # room for the JSON: the tiny model's context is 64 tokens
    called = long.bind_tools([weather], tool_choice="wx").invoke("hi")
    assert called.tool_calls and called.tool_calls[0]["name"] == "wx" and "c" in called.tool_calls[0]["args"]

    for method in ("json_schema", "function_calling"):
        made = long.with_structured_output(Mood, method=method).invoke("hi")
        assert isinstance(made, Mood), method
    # json_mode: any JSON object, which a tiny model may not close within its 64-token context; then
    # the client itself reports the length limit. Some seeds must give a parsed object.
    from openai import LengthFinishReasonError

    parsed = []
    for seed in range(8):
        seeded = ChatOpenAI(
            base_url=f"{server.url}/v1", api_key=server.user_key, model=MODEL, max_tokens=58, seed=seed,
            max_retries=0,
        )  # fmt: skip
        try:
            parsed.append(seeded.with_structured_output(None, method="json_mode").invoke("hi"))
        except LengthFinishReasonError:
            continue
    assert parsed and all(isinstance(p, dict) for p in parsed)

    embeddings = OpenAIEmbeddings(
        model="all-MiniLM-L6-v2", base_url=f"{server.url}/v1", api_key=server.user_key,
        check_embedding_ctx_length=False,
    )  # fmt: skip
    assert len(embeddings.embed_query("a sneaker")) == 384
    assert len(embeddings.embed_documents(["a", "b"])) == 2
