from pathlib import Path

import pytest

from lamina.core.catalog import DatasetVersion, ModelVersion, Source
from lamina.core.errors import CatalogUnavailable, NotFound, WorkspaceError
from lamina.core.workspace import Workspace, find_workspace


def test_init_creates_everything_and_is_idempotent(tmp_path: Path) -> None:
    ws, created = Workspace.init(tmp_path / "w")
    assert created
    assert {p.name for p in (tmp_path / "w").iterdir()} >= {"lamina.yaml", "lamina.db", "artifacts"}
    yaml_before = (tmp_path / "w" / "lamina.yaml").read_text()
    ws.commit((tmp_path / "w" / "lamina.yaml"), Source(name="cfg"))
    ws.close()
    ws2, created2 = Workspace.init(tmp_path / "w")
    assert not created2
    assert (tmp_path / "w" / "lamina.yaml").read_text() == yaml_before
    assert ws2.catalog.counts() == {"source": 1}  # nothing recreated or lost
    ws2.close()


def test_sqlite_catalog_runs_in_wal_mode_with_foreign_keys(workspace: Workspace) -> None:
    import sqlalchemy as sa

    with workspace.catalog.engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1


def test_init_never_overwrites_settings(tmp_path: Path) -> None:
    Workspace.init(tmp_path / "w")[0].close()
    with pytest.raises(WorkspaceError, match="already exists with catalog_url"):
        Workspace.init(tmp_path / "w", catalog_url="sqlite:///other.db")


def test_find_workspace_precedence(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for ws in (a, b):
        Workspace.init(ws)[0].close()
    nested = a / "deep" / "er"
    nested.mkdir(parents=True)
    assert find_workspace(cwd=nested, env={}) == a.resolve()
    assert find_workspace(cwd=nested, env={"LAMINA_HOME": str(b)}) == b.resolve()
    assert find_workspace(a, env={"LAMINA_HOME": str(b)}, cwd=nested) == a.resolve()


@pytest.mark.parametrize(
    ("setup", "message", "hint"),
    [
        ("nothing", "no Lamina workspace in", "lamina init"),
        ("missing-folder", "the folder does not exist", "lamina init"),
        ("no-yaml", "has no lamina.yaml", "lamina init"),
    ],
)
def test_missing_workspace_errors(tmp_path: Path, setup: str, message: str, hint: str) -> None:
    if setup == "nothing":
        with pytest.raises(WorkspaceError, match=message) as info:
            find_workspace(cwd=tmp_path, env={})
    else:
        target = tmp_path / "x"
        if setup == "no-yaml":
            target.mkdir()
        with pytest.raises(WorkspaceError, match=message) as info:
            find_workspace(target, env={})
    assert hint in (info.value.hint or "")


def test_missing_or_corrupt_catalog_is_an_error_not_a_new_empty_one(tmp_path: Path) -> None:
    ws, _ = Workspace.init(tmp_path / "w")
    ws.close()
    db = tmp_path / "w" / "lamina.db"
    db.rename(tmp_path / "moved.db")
    with pytest.raises(WorkspaceError, match="has no catalog") as info:
        Workspace.open(tmp_path / "w")
    assert "restore" in (info.value.hint or "")
    assert not db.exists()  # opening did not silently create an empty catalog
    db.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(WorkspaceError, match="corrupt or not a Lamina catalog"):
        Workspace.open(tmp_path / "w")


def test_unreachable_catalog_url(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "lamina.yaml").write_text("catalog_url: postgresql+psycopg://u:pw@127.0.0.1:1/nope\n")
    with pytest.raises(CatalogUnavailable, match="cannot open the catalog at postgresql") as info:
        Workspace.open(tmp_path / "w")
    assert "pw" not in info.value.message
    assert "catalog_url" in (info.value.hint or "")


def test_commit_records_row_and_files_together(workspace: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "data.txt"
    src.write_text("rows")
    result = workspace.commit(src, Source(name="raw"))
    art = result.artifact
    assert not result.reused
    assert (art.uri or "").endswith(f"objects/{art.id}")
    assert art.content_hash and art.size_bytes == 4 and art.file_count == 1
    assert workspace.store.exists(art.id)
    assert (workspace.artifact_path(art) / "data.txt").read_text() == "rows"


def test_reuse_identical_only_when_content_matches(workspace: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "data.txt"
    src.write_text("v1")
    first = workspace.commit(src, Source(name="raw"), reuse_identical=True)
    again = workspace.commit(src, Source(name="raw"), reuse_identical=True)
    assert again.reused and again.artifact.id == first.artifact.id
    src.write_text("v2")
    changed = workspace.commit(src, Source(name="raw"), reuse_identical=True)
    assert not changed.reused and changed.artifact.version == 2


def test_failed_catalog_write_leaves_no_files(workspace: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "data.txt"
    src.write_text("x")
    with pytest.raises(NotFound, match="lineage parent"):
        workspace.commit(src, DatasetVersion(name="d"), parents=[("src-00000000000000ff", "derived_from")])
    assert workspace.store.list_ids() == []
    assert workspace.catalog.find() == []


def test_check_finds_tampering_and_gc_cleans_orphans(workspace: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "m"
    src.mkdir()
    (src / "w.bin").write_bytes(b"\x00" * 100)
    mv = workspace.commit(src, ModelVersion(name="m", family="vae")).artifact
    assert workspace.check().ok
    workspace.store.commit(src, "mv-00000000000000ee")  # files with no catalog row: an interrupted commit
    report = workspace.check()
    assert report.ok and report.orphans == ["mv-00000000000000ee"]
    assert workspace.gc(older_than_s=0) == ["objects/mv-00000000000000ee"]
    (workspace.store.local_path(mv.id) / "w.bin").write_bytes(b"\x01" * 100)  # type: ignore[operator]
    report = workspace.check()
    assert not report.ok and "w.bin changed" in report.problems[0]
    assert workspace.check(deep=False).ok  # manifests alone cannot see content changes


def test_status_reports_counts_and_aliases(workspace: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_text("x")
    mv = workspace.commit(src, ModelVersion(name="m", family="gan")).artifact
    workspace.catalog.set_alias("m", "champion", mv.id)
    info = workspace.status()
    assert info["counts"] == {"model_version": 1}
    assert info["aliases"][0]["ref"] == "m@v1"
    assert info["catalog"]["revision"] == info["catalog"]["head"]
    assert info["recent"][0]["id"] == mv.id
