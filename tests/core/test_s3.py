"""The artifact store and a workspace on a real S3 endpoint (moto's server on localhost)."""

from pathlib import Path

import pytest

from lamina.core.catalog import DatasetVersion, Source
from lamina.core.errors import ArtifactCorrupt, StoreError
from lamina.core.lineage import lineage_tree
from lamina.core.store import ArtifactStore, content_hash_of
from lamina.core.workspace import Workspace
from tests.conftest import S3Location

pytestmark = pytest.mark.s3


def make_tree(root: Path) -> Path:
    (root / "nested").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "nested" / "b.bin").write_bytes(bytes(range(256)) * 4000)  # ~1 MB: a multi-chunk upload
    return root


def test_commit_read_verify_on_s3(s3_location: S3Location, tmp_path: Path) -> None:
    store = ArtifactStore(s3_location.url, s3_location.options)
    store.ensure()
    src = make_tree(tmp_path / "src")
    manifest = store.commit(src, "ds-0000000000000001")
    assert manifest.content_hash == content_hash_of(src)  # same hash as a local store would give
    assert store.uri("ds-0000000000000001") == f"{s3_location.url}/objects/ds-0000000000000001"
    assert store.list_ids() == ["ds-0000000000000001"]
    with store.open("ds-0000000000000001", "nested/b.bin") as fh:
        assert fh.read() == (src / "nested" / "b.bin").read_bytes()
    fetched = store.fetch("ds-0000000000000001", tmp_path / "cache")
    assert (fetched / "a.txt").read_text() == "alpha"
    store.verify("ds-0000000000000001")


def test_fetches_share_one_cache_without_exposing_a_half_written_file(
    s3_location: S3Location, tmp_path: Path
) -> None:
    """Two ``lamina tune`` workers read one dataset from S3 through one cache (a CI run once saw
    "Parquet file size is 0 bytes": a second fetch truncated the file the first was reading)."""
    from concurrent.futures import ThreadPoolExecutor

    store = ArtifactStore(s3_location.url, s3_location.options)
    store.ensure()
    src = make_tree(tmp_path / "src")
    store.commit(src, "ds-0000000000000002")
    cache = tmp_path / "cache"
    first = store.fetch("ds-0000000000000002", cache)
    stamp = (first / "nested" / "b.bin").stat().st_mtime_ns
    assert store.fetch("ds-0000000000000002", cache) == first  # a complete copy is reused, not rewritten
    assert (first / "nested" / "b.bin").stat().st_mtime_ns == stamp
    (first / "nested" / "b.bin").write_bytes(b"cut short")  # an interrupted copy (an older version)
    want = (src / "nested" / "b.bin").read_bytes()

    def fetch_and_read(_: int) -> bool:
        return (store.fetch("ds-0000000000000002", cache) / "nested" / "b.bin").read_bytes() == want

    with ThreadPoolExecutor(6) as pool:
        assert all(pool.map(fetch_and_read, range(12)))
    assert sorted(p.name for p in cache.iterdir()) == ["ds-0000000000000002"]  # no staging debris


def test_an_upload_without_manifest_is_invisible_and_swept(s3_location: S3Location, tmp_path: Path) -> None:
    store = ArtifactStore(s3_location.url, s3_location.options)
    store.ensure()
    # What a crash mid-upload leaves: files, but no MANIFEST.json.
    store.fs.pipe(f"{store.root}/objects/ds-0000000000000002/a.txt", b"half")
    assert store.list_ids() == []
    assert not store.exists("ds-0000000000000002")
    assert store.sweep(set(), older_than_s=0) == ["objects/ds-0000000000000002"]
    assert not store.fs.exists(f"{store.root}/objects/ds-0000000000000002/a.txt")


def test_tampering_on_s3_is_detected(s3_location: S3Location, tmp_path: Path) -> None:
    store = ArtifactStore(s3_location.url, s3_location.options)
    store.ensure()
    store.commit(make_tree(tmp_path / "src"), "ds-0000000000000003")
    store.fs.pipe(f"{store.root}/objects/ds-0000000000000003/a.txt", b"changed")
    with pytest.raises(ArtifactCorrupt, match="a.txt changed"):
        store.verify("ds-0000000000000003")


def test_workspace_with_artifacts_on_s3(s3_location: S3Location, tmp_path: Path) -> None:
    ws, _ = Workspace.init(
        tmp_path / "w", {"artifact_url": s3_location.url, "artifact_options": s3_location.options}
    )
    src = tmp_path / "raw.txt"
    src.write_text("hello s3")
    raw = ws.commit(src, Source(name="raw")).artifact
    ds = ws.commit(make_tree(tmp_path / "ds"), DatasetVersion(name="ds"), [(raw.id, "derived_from")]).artifact
    assert (raw.uri or "").startswith("s3://")
    assert [n.artifact.id for n in lineage_tree(ws.catalog, ds).walk()] == [ds.id, raw.id]
    assert (ws.artifact_path(raw) / "raw.txt").read_text() == "hello s3"
    assert ws.check().ok
    ws.close()


def test_missing_bucket_is_a_clear_store_error(s3_location: S3Location) -> None:
    store = ArtifactStore(f"s3://no-such-bucket-{s3_location.bucket}/x", s3_location.options)
    with pytest.raises(StoreError, match="artifact store"):
        store.ensure()
