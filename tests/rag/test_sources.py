"""Documents from the data layer's places: S3 (a real local S3 server), a SQL query's rows, a
dataset version's rows; re-ingest from each follows its changes and leaves the others alone."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from lamina.core.workspace import Workspace
from lamina.data.pipeline import build_dataset
from lamina.data.recipe import parse_recipe
from lamina.rag.collection import Collection
from lamina.rag.documents import DocumentError
from tests.conftest import S3Location
from tests.rag.conftest import GUIDE_MD, write_docx


def test_documents_on_s3_are_read_and_pruned_by_their_url(
    workspace: Workspace, s3_location: S3Location, tmp_path: Path
) -> None:
    import fsspec

    fs = fsspec.filesystem("s3", **s3_location.options)
    base = f"{s3_location.bucket}/handbook"
    fs.pipe_file(f"{base}/travel.md", GUIDE_MD.encode())
    fs.pipe_file(f"{base}/security.docx", write_docx(tmp_path / "s.docx").read_bytes())
    collection = Collection(workspace, "cloud")
    url = f"s3://{base}"
    first = collection.ingest([url], ["staff"], storage_options=s3_location.options)
    assert sorted(first.added) == [f"{url}/security.docx", f"{url}/travel.md"]
    best = collection.search("How long are passwords?", k=1)[0]
    assert best.chunk.source == f"{url}/security.docx" and best.chunk.headings == (
        "Security handbook",
        "Passwords",
    )
    fs.rm_file(f"{base}/security.docx")
    second = collection.ingest([url], ["staff"], storage_options=s3_location.options)
    assert second.removed == [f"{url}/security.docx"] and second.version.version == 2


def test_rows_of_a_sql_query_become_documents_and_follow_the_table(
    cli, workspace: Workspace, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "kb.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE articles (id INTEGER PRIMARY KEY, title TEXT, body TEXT)")
        conn.executemany("INSERT INTO articles VALUES (?, ?, ?)", [
            (1, "Soup", "The canteen serves soup on Fridays."),
            (2, "Bikes", "Parking is free for cyclists."),
            (3, "Badges", "Visitors collect a badge at reception."),
        ])  # fmt: skip
    source = json.dumps({"type": "sql", "url": f"sqlite:///{db}", "query": "SELECT * FROM articles"})
    ws = ("-w", str(workspace.root))
    args = ("rag", "ingest", "-c", "kb", "--source", source, "--text-field", "body", "--title-field",
            "title", "--id-field", "id", "-g", "staff", "--json")  # fmt: skip
    first = cli(*ws, *args)
    assert first.code == 0, first.err
    assert len(json.loads(first.out)["added"]) == 3
    hit = Collection.open(workspace, "kb").search("Where do visitors get a badge?", k=1)[0]
    assert hit.chunk.title == "Badges" and hit.chunk.source.endswith("#3")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE articles SET body = 'The canteen serves soup on Mondays.' WHERE id = 1")
        conn.execute("DELETE FROM articles WHERE id = 2")
    again = json.loads(cli(*ws, *args).out)
    assert [s.rsplit("#", 1)[1] for s in again["replaced"]] == ["1"]
    assert [s.rsplit("#", 1)[1] for s in again["removed"]] == ["2"] and again["unchanged"] == 1
    wrong = cli(*ws, "rag", "ingest", "-c", "kb", "--source", source, "--text-field", "nope")
    assert wrong.code != 0 and "field 'nope' is missing" in wrong.err and "body" in wrong.err
    both = cli(*ws, "rag", "ingest", "-c", "kb", str(tmp_path), "--source", source)
    assert both.code != 0 and "one way" in both.err


def test_a_dataset_versions_rows_become_documents(workspace: Workspace, tmp_path: Path) -> None:
    data = tmp_path / "faq.jsonl"
    rows = [{"text": f"Question {i}: the office closes at {i + 5} pm on day {i}."} for i in range(12)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    recipe = parse_recipe("faq", {"source": str(data), "split": {"fractions": {"val": 0.25}, "seed": 0}})
    version = build_dataset(workspace, "faq", recipe).version
    from lamina.rag.sources import from_dataset

    documents, key = from_dataset(workspace, version.ref, ["staff"])
    assert key == "dataset:faq" and len(documents) == 12
    report = Collection(workspace, "faq-index").ingest_documents(documents, [key])
    assert len(report.added) == 12 and report.version.meta["chunks"] == 12
    with pytest.raises(DocumentError, match="field 'body' is missing"):
        from_dataset(workspace, version.ref, ["staff"], text_field="body")


def test_a_cross_encoder_reranks_the_fused_candidates(
    cli, workspace: Workspace, corpus: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The mechanism, with a cross-encoder made here from MiniLM (an untrained head: its order is
    not better, only its own): candidates come back ordered by exactly the cross-encoder's scores."""
    from sentence_transformers import CrossEncoder

    from lamina.models.text_encoder import load_encoder
    from lamina.rag.rerank import RERANK_DEPTH

    encoder = load_encoder()
    encoder.save(str(tmp_path / "mini"))
    CrossEncoder(str(tmp_path / "mini"), num_labels=1, device="cpu").save(str(tmp_path / "cross"))
    collection = Collection(workspace, "handbook")
    collection.ingest([corpus], ["staff"])
    question = "How long are passwords?"
    plain = collection.search(question, k=RERANK_DEPTH)
    reranked = collection.search(question, k=3, rerank=str(tmp_path / "cross"))
    model = CrossEncoder(str(tmp_path / "cross"), device="cpu")
    expected = model.predict([(question, r.chunk.text) for r in plain])
    best = sorted(zip(expected, (r.chunk.id for r in plain), strict=True), key=lambda p: (-p[0], p[1]))[:3]
    assert [r.chunk.id for r in reranked] == [cid for _, cid in best]
    assert [round(r.score, 4) for r in reranked] == [round(float(s), 4) for s, _ in best]
    made = cli("-w", str(workspace.root), "models", "import", str(tmp_path / "cross"), "--name", "rr")
    assert made.code == 0 and "rr@v1" in made.out, made.err
    assert [r.chunk.id for r in collection.search(question, k=3, rerank="rr@v1")] == [cid for _, cid in best]
    wrong = cli(
        "-w", str(workspace.root), "rag", "search", question, "-c", "handbook", "--rerank", str(corpus)
    )
    assert wrong.code != 0 and "not a cross-encoder folder" in wrong.err
