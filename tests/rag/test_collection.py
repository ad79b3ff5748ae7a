"""Collections: versioned, idempotent ingest; atomic failure; access control inside the query."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from lamina.core.workspace import Workspace
from lamina.rag.collection import Collection, UnknownCollection
from lamina.rag.documents import DocumentError
from lamina.rag.store import FilterError, NoGroups


def test_reingest_is_idempotent_and_follows_changes(store_workspace: Workspace, corpus: Path) -> None:
    collection = Collection(store_workspace, "handbook")
    first = collection.ingest([corpus], groups=["staff"])
    assert first.version is not None and first.version.version == 1 and len(first.added) == 5
    assert first.version.meta["store"] == ("pgvector" if store_workspace.settings.vector_url else "lancedb")
    again = collection.ingest([corpus], groups=["staff"])
    assert again.version.version == 1 and len(again.unchanged) == 5  # nothing new: no new version

    (corpus / "notes.txt").write_text("The canteen now serves soup on Mondays.")
    (corpus / "leave.html").unlink()
    third = collection.ingest([corpus], groups=["staff"])
    assert third.version.version == 2
    assert [Path(s).name for s in third.replaced] == ["notes.txt"]
    assert [Path(s).name for s in third.removed] == ["leave.html"]
    hits = Collection.open(store_workspace, "handbook").search("When is soup served?", k=3)
    assert "Mondays" in hits[0].chunk.text
    texts = " ".join(
        h.chunk.text for h in Collection.open(store_workspace, "handbook").search("paid leave days", k=10)
    )
    assert "25 days" not in texts  # the removed document is gone
    old = Collection.open(store_workspace, "handbook@v1").search("When is soup served?", k=1)
    assert "Fridays" in old[0].chunk.text  # an older version still reads as it was
    extra = corpus.parent / "extra"
    extra.mkdir()
    (extra / "faq.txt").write_text("The library opens at nine.")
    fourth = Collection(store_workspace, "handbook").ingest(
        [extra], groups=["staff"]
    )  # as a new process does
    assert fourth.version.version == 3 and len(fourth.added) == 1 and not fourth.removed
    best = Collection.open(store_workspace, "handbook").search("When does the library open?", k=1)[0]
    assert "nine" in best.chunk.text
    parents = {relation: parent for parent, relation in store_workspace.catalog.parents(third.version.id)}
    assert parents["previous_version"].id == first.version.id
    assert parents["derived_from"].kind == "source" and parents["derived_from"].file_count == 4


def test_a_failed_ingest_commits_nothing(store_workspace: Workspace, corpus: Path, tmp_path: Path) -> None:
    collection = Collection(store_workspace, "handbook")
    collection.ingest([corpus], groups=["staff"])
    broken = tmp_path / "more"
    shutil.copytree(corpus, broken)
    (broken / "travel.md").write_text("# Travel\n\nEverything changed.")
    (broken / "zz-broken.pdf").write_bytes(b"%PDF-1.7 truncated")
    with pytest.raises(DocumentError):
        collection.ingest([broken], groups=["staff"])
    reopened = Collection.open(store_workspace, "handbook")
    assert reopened.committed.version == 1
    assert "240 euros" in reopened.search("hotel limit in Paris", k=1)[0].chunk.text


def test_failure_after_writes_rolls_the_store_back(
    store_workspace: Workspace, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    collection = Collection(store_workspace, "handbook")
    collection.ingest([corpus], groups=["staff"])
    rows = collection.store.count()
    (corpus / "notes.txt").write_text("Entirely new notes about bicycles.")

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("catalog down")

    monkeypatch.setattr(collection, "_commit", boom)
    with pytest.raises(RuntimeError):
        collection.ingest([corpus], groups=["staff"])
    reopened = Collection.open(store_workspace, "handbook")
    assert reopened.store.count() == rows
    assert "bicycles" not in " ".join(h.chunk.text for h in reopened.search("bicycles", k=5))


def test_access_control_is_inside_the_query(store_workspace: Workspace, corpus: Path, tmp_path: Path) -> None:
    """1,000 queries by readers of different groups: never a chunk outside their groups, and a
    reader with rights always gets answers (no empty top-k after filtering)."""
    hr, ops = tmp_path / "hr", tmp_path / "ops"
    hr.mkdir()
    ops.mkdir()
    shutil.copy(corpus / "leave.html", hr)
    shutil.copy(corpus / "travel.md", hr)
    for name in ("notes.txt", "security.docx", "warehouse.pdf"):
        shutil.copy(corpus / name, ops)
    collection = Collection(store_workspace, "mixed")
    collection.ingest([hr], groups=["hr"])
    collection.ingest([ops], groups=["ops", "it"])  # another folder: hr's documents stay
    assert len(collection.committed.meta["documents"]) == 2 + 3
    queries = ["leave", "soup", "passwords", "warehouse hours", "hotel in Paris", "forklift licence", "meals"]
    readers = [["hr"], ["ops"], ["it"], ["hr", "it"], ["finance"]]
    rng = random.Random(0)
    store, embedder = collection.store, collection.embedder
    vectors = {q: embedder.encode_query(q) for q in queries}
    for _ in range(1000):
        query, groups = rng.choice(queries), rng.choice(readers)
        mode = rng.choice(["dense", "lexical"])
        hits = (store.dense(vectors[query], 5, groups, {}) if mode == "dense"
                else store.lexical(query, 5, groups, {}))  # fmt: skip
        assert all(set(h.chunk.groups) & set(groups) for h in hits)
        if groups != ["finance"] and mode == "dense":
            assert hits  # the filter runs before ranking: readers with rights always get chunks
    assert not collection.search("leave", k=5, groups=["finance"])
    with pytest.raises(NoGroups):
        collection.search("leave", k=5, groups=[])
    with pytest.raises(FilterError, match="cannot filter on 'author'"):
        collection.search("leave", k=5, filters={"author": "x"})
    only = collection.search("rules", k=10, filters={"source": str(hr / "travel.md")})
    assert only and all(h.chunk.source == str(hr / "travel.md") for h in only)


def test_an_unknown_collection_is_a_clear_error(store_workspace: Workspace) -> None:
    with pytest.raises(UnknownCollection, match="no collection 'nope'"):
        Collection.open(store_workspace, "nope")
