import json
import os
import time
from pathlib import Path

import pytest

from lamina.core.errors import ArtifactCorrupt, LaminaError, NotFound, StoreError
from lamina.core.store import MANIFEST_NAME, ArtifactStore, content_hash_of


def make_tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"layers": 2}))
    (root / "sub" / "weights.bin").write_bytes(os.urandom(3000))
    return root


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    store = ArtifactStore(str(tmp_path / "store"))
    store.ensure()
    return store


def test_commit_folder_and_read_back(store: ArtifactStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "model")
    manifest = store.commit(src, "mv-0000000000000001")
    assert {e.path for e in manifest.files} == {"config.json", "sub/weights.bin"}
    assert manifest.size_bytes == (src / "config.json").stat().st_size + 3000
    assert manifest.content_hash == content_hash_of(src)
    with store.open("mv-0000000000000001", "sub/weights.bin") as fh:
        assert fh.read() == (src / "sub" / "weights.bin").read_bytes()
    assert store.list_ids() == ["mv-0000000000000001"]
    assert store.local_path("mv-0000000000000001") == Path(store.root, "objects", "mv-0000000000000001")
    assert store.verify("mv-0000000000000001") == manifest


def test_single_file_artifacts_open_without_a_name(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "notes.txt"
    src.write_text("to be or not to be")
    manifest = store.commit(src, "src-0000000000000001")
    assert manifest.single_file
    with store.open("src-0000000000000001") as fh:
        assert fh.read() == b"to be or not to be"


def test_same_content_same_hash_whatever_the_folder_name(store: ArtifactStore, tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a")
    b = tmp_path / "b"
    (b / "sub").mkdir(parents=True)
    (b / "config.json").write_bytes((a / "config.json").read_bytes())
    (b / "sub" / "weights.bin").write_bytes((a / "sub" / "weights.bin").read_bytes())
    assert content_hash_of(a) == content_hash_of(b)
    (b / "config.json").write_text("{}")
    assert content_hash_of(a) != content_hash_of(b)


def test_artifacts_are_immutable(store: ArtifactStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "m")
    store.commit(src, "mv-0000000000000002")
    with pytest.raises(StoreError, match="already committed"):
        store.commit(src, "mv-0000000000000002")
    with pytest.raises(ValueError, match="immutable"):
        store.open("mv-0000000000000002", "config.json", mode="wb")


def test_verify_detects_changed_and_missing_files(store: ArtifactStore, tmp_path: Path) -> None:
    store.commit(make_tree(tmp_path / "m"), "mv-0000000000000003")
    folder = Path(store.root, "objects", "mv-0000000000000003")
    (folder / "config.json").write_text('{"layers": 3}')
    with pytest.raises(ArtifactCorrupt, match="config.json changed"):
        store.verify("mv-0000000000000003")
    (folder / "sub" / "weights.bin").unlink()
    with pytest.raises(ArtifactCorrupt, match="weights.bin is missing"):
        store.verify("mv-0000000000000003")


def test_bad_sources_are_refused(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        store.commit(tmp_path / "nope", "mv-0000000000000004")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LaminaError, match="has no files"):
        store.commit(tmp_path / "empty", "mv-0000000000000004")
    (tmp_path / "reserved").mkdir()
    (tmp_path / "reserved" / MANIFEST_NAME).write_text("{}")
    with pytest.raises(LaminaError, match="reserves"):
        store.commit(tmp_path / "reserved", "mv-0000000000000004")
    assert store.list_ids() == []
    assert list(Path(store.root, ".staging").iterdir()) == []


def test_unknown_ids_and_files(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        store.manifest("mv-00000000000000ff")
    store.commit(make_tree(tmp_path / "m"), "mv-0000000000000005")
    with pytest.raises(NotFound, match="no file 'nope.bin'"):
        store.open("mv-0000000000000005", "nope.bin")
    with pytest.raises(LaminaError, match="is a folder"):
        store.open("mv-0000000000000005")


def test_sweep_removes_only_old_debris_outside_keep(store: ArtifactStore, tmp_path: Path) -> None:
    store.commit(make_tree(tmp_path / "kept"), "mv-0000000000000006")
    store.commit(make_tree(tmp_path / "orphan"), "mv-0000000000000007")
    leftover = Path(store.root, ".staging", "mv-0000000000000008.abcd")
    leftover.mkdir()
    (leftover / "half.bin").write_bytes(b"x" * 10)
    keep = {"mv-0000000000000006"}

    assert store.sweep(keep, older_than_s=3600) == []  # everything is fresh: a commit may be running
    old = time.time() - 7200
    for path in [
        leftover,
        leftover / "half.bin",
        *Path(store.root, "objects", "mv-0000000000000007").rglob("*"),
    ]:
        os.utime(path, (old, old))
    os.utime(Path(store.root, "objects", "mv-0000000000000007"), (old, old))

    would = store.sweep(keep, older_than_s=3600, dry_run=True)
    assert sorted(would) == [".staging/mv-0000000000000008.abcd", "objects/mv-0000000000000007"]
    assert leftover.exists()
    assert sorted(store.sweep(keep, older_than_s=3600)) == sorted(would)
    assert not leftover.exists()
    assert store.list_ids() == ["mv-0000000000000006"]
    store.verify("mv-0000000000000006")


def test_unknown_protocol_is_a_config_error() -> None:
    from lamina.core.errors import ConfigError

    with pytest.raises(ConfigError, match="artifact_url"):
        ArtifactStore("nosuchproto://bucket/x")
