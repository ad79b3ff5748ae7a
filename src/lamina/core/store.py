"""The artifact store: immutable files addressed by artifact id, on any fsspec filesystem.

Layout under the store's root URL::

    objects/<artifact-id>/...files...          the committed files
    objects/<artifact-id>/MANIFEST.json        written last: its presence *is* the commit
    .staging/<artifact-id>.<nonce>/            local stores stage here, then rename into objects/

Atomicity: on a local folder a commit is staged and then renamed into place in one ``rename``, so
readers never see a half-written folder. Object stores (S3) have no rename, so every file is
uploaded first and ``MANIFEST.json`` (a single PUT, atomic on S3) last; an object without a
manifest is invisible to every reader. Either way a crash leaves only invisible debris, which
``sweep`` (``lamina gc``) removes.

Content hash: ``sha256:`` over the sorted ``<sha256> <size> <path>`` lines of the files, so the
same files give the same hash on every store.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from lamina.core.errors import ArtifactCorrupt, ConfigError, LaminaError, NotFound, StoreError

log = logging.getLogger(__name__)

MANIFEST_NAME = "MANIFEST.json"
OBJECTS_DIR = "objects"
STAGING_DIR = ".staging"
CHUNK_BYTES = 1 << 20
ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class FileEntry:
    path: str  # POSIX path relative to the artifact root
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What a committed artifact contains; stored as MANIFEST.json next to the files."""

    artifact_id: str
    content_hash: str
    size_bytes: int
    files: tuple[FileEntry, ...]
    single_file: bool
    created_at: str

    def to_json(self) -> str:
        data = asdict(self)
        data["format"] = 1
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        data.pop("format", None)
        data["files"] = tuple(FileEntry(**entry) for entry in data["files"])
        return cls(**data)


def tree_hash(entries: Iterable[FileEntry]) -> str:
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: e.path):
        digest.update(f"{entry.sha256} {entry.size} {entry.path}\n".encode())
    return "sha256:" + digest.hexdigest()


def hash_file(path: Path) -> FileEntry:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return FileEntry(path=path.name, size=size, sha256=digest.hexdigest())


def list_source_files(src: Path) -> list[tuple[str, Path]]:
    """``(relative posix path, absolute path)`` for a file or every file below a folder, sorted."""
    if src.is_file():
        return [(src.name, src)]
    if not src.is_dir():
        raise NotFound(f"nothing to commit: {src} does not exist", hint="check the path")
    files = sorted(
        (PurePosixPath(p.relative_to(src).as_posix()).as_posix(), p) for p in src.rglob("*") if p.is_file()
    )
    if not files:
        raise LaminaError(f"nothing to commit: the folder {src} has no files")
    for rel, _ in files:
        if rel == MANIFEST_NAME:
            raise LaminaError(
                f"{src} contains {MANIFEST_NAME}, a name the store reserves", hint="rename that file"
            )
    return files


def content_hash_of(src: Path) -> str:
    """The content hash ``commit`` would record for ``src``, without writing anything."""
    entries = []
    for rel, path in list_source_files(Path(src)):
        entry = hash_file(path)
        entries.append(FileEntry(path=rel, size=entry.size, sha256=entry.sha256))
    return tree_hash(entries)


def _not_writable(where: str, exc: OSError) -> StoreError:
    return StoreError(
        f"the artifact store at {where} is not writable: {exc.strerror or exc}",
        hint="fix the folder's permissions, free disk space, or set artifact_url to a writable location",
    )


class ArtifactStore:
    """Commit, read, verify and sweep artifacts under one fsspec URL."""

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        self.url = url
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **(options or {}))
        except ImportError as exc:
            raise ConfigError(
                f"artifact_url {url!r} needs an optional package: {exc}",
                hint="for s3:// URLs: pip install 'lamina[s3]'",
            ) from exc
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"artifact_url {url!r} cannot be opened: {exc}") from exc
        self.root = root.rstrip("/") or "/"
        self.is_local = isinstance(self.fs, LocalFileSystem)

    # -- paths ------------------------------------------------------------------------------------

    def _object_path(self, artifact_id: str) -> str:
        return f"{self.root}/{OBJECTS_DIR}/{artifact_id}"

    def uri(self, artifact_id: str) -> str:
        """The full URL of an artifact's folder, as recorded in the catalog."""
        return self.fs.unstrip_protocol(self._object_path(artifact_id))

    def local_path(self, artifact_id: str) -> Path | None:
        """The artifact's folder on a local store (loaders read it in place); None on remote stores."""
        if not self.is_local:
            return None
        self.manifest(artifact_id)  # raises NotFound if not committed
        return Path(self._object_path(artifact_id))

    # -- setup --------------------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the store's folders and prove it can be written (a probe file is written and removed)."""
        probe = f"{self.root}/{STAGING_DIR}/probe-{secrets.token_hex(4)}"
        try:
            if self.is_local:
                os.makedirs(f"{self.root}/{OBJECTS_DIR}", exist_ok=True)
                os.makedirs(f"{self.root}/{STAGING_DIR}", exist_ok=True)
            with self.fs.open(probe, "wb") as fh:
                fh.write(b"ok")
            self.fs.rm(probe)
        except PermissionError as exc:
            raise _not_writable(self.url, exc) from exc
        except OSError as exc:
            raise _not_writable(self.url, exc) from exc
        except Exception as exc:  # remote stores raise their own types (botocore, aiohttp …)
            raise StoreError(
                f"cannot use the artifact store at {self.url}: {type(exc).__name__}: {exc}",
                hint="check artifact_url, artifact_options (endpoint, credentials) and the bucket",
            ) from exc

    # -- commit -------------------------------------------------------------------------------------

    def commit(self, src: Path | str, artifact_id: str, progress: ProgressFn | None = None) -> Manifest:
        """Copy a file or folder into the store under ``artifact_id``, atomically. Returns its manifest."""
        src = Path(src)
        files = list_source_files(src)
        if self.exists(artifact_id):
            raise StoreError(f"artifact {artifact_id} is already committed; artifacts are immutable")
        if self.is_local:
            return self._commit_local(files, artifact_id, single_file=src.is_file(), progress=progress)
        return self._commit_remote(files, artifact_id, single_file=src.is_file(), progress=progress)

    def _commit_local(
        self,
        files: list[tuple[str, Path]],
        artifact_id: str,
        *,
        single_file: bool,
        progress: ProgressFn | None,
    ) -> Manifest:
        staging = Path(self.root, STAGING_DIR, f"{artifact_id}.{secrets.token_hex(4)}")
        final = Path(self._object_path(artifact_id))
        try:
            staging.mkdir(parents=True)
            entries = []
            for rel, path in files:
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:
                    entries.append(_copy_hashing(path, out, rel, progress))
                    out.flush()
                    os.fsync(out.fileno())
            manifest = self._make_manifest(artifact_id, entries, single_file)
            with open(staging / MANIFEST_NAME, "w", encoding="utf-8") as out:
                out.write(manifest.to_json())
                out.flush()
                os.fsync(out.fileno())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, final)  # the commit point: atomic on one filesystem
            _fsync_dir(final.parent)
            return manifest
        except OSError as exc:
            _remove_tree(staging)
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC):
                raise _not_writable(self.url, exc) from exc
            raise
        except BaseException:
            _remove_tree(staging)
            raise

    def _commit_remote(
        self,
        files: list[tuple[str, Path]],
        artifact_id: str,
        *,
        single_file: bool,
        progress: ProgressFn | None,
    ) -> Manifest:
        base = self._object_path(artifact_id)
        try:
            entries = []
            for rel, path in files:
                with self.fs.open(f"{base}/{rel}", "wb") as out:
                    entries.append(_copy_hashing(path, out, rel, progress))
            manifest = self._make_manifest(artifact_id, entries, single_file)
            with self.fs.open(f"{base}/{MANIFEST_NAME}", "wb") as out:  # the commit point
                out.write(manifest.to_json().encode())
            return manifest
        except BaseException:
            self._try_remove(base)
            raise

    @staticmethod
    def _make_manifest(artifact_id: str, entries: list[FileEntry], single_file: bool) -> Manifest:
        return Manifest(
            artifact_id=artifact_id,
            content_hash=tree_hash(entries),
            size_bytes=sum(e.size for e in entries),
            files=tuple(entries),
            single_file=single_file,
            created_at=datetime.now(UTC).isoformat(),
        )

    # -- read ---------------------------------------------------------------------------------------

    def exists(self, artifact_id: str) -> bool:
        self.fs.invalidate_cache()
        return bool(self.fs.exists(f"{self._object_path(artifact_id)}/{MANIFEST_NAME}"))

    def manifest(self, artifact_id: str) -> Manifest:
        path = f"{self._object_path(artifact_id)}/{MANIFEST_NAME}"
        self.fs.invalidate_cache()
        try:
            with self.fs.open(path, "rb") as fh:
                return Manifest.from_json(fh.read().decode("utf-8"))
        except FileNotFoundError as exc:
            raise NotFound(
                f"artifact {artifact_id} has no committed files in the store at {self.url}",
                hint="run 'lamina check' to compare the catalog with the store",
            ) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactCorrupt(f"the manifest of artifact {artifact_id} is unreadable: {exc}") from exc

    def open(self, artifact_id: str, path: str | None = None, mode: str = "rb") -> IO[Any]:
        """Open one file of an artifact for reading (the only file, for single-file artifacts)."""
        if "r" not in mode:
            raise ValueError("artifacts are immutable: open them for reading only")
        manifest = self.manifest(artifact_id)
        if path is None:
            if not manifest.single_file:
                raise LaminaError(
                    f"artifact {artifact_id} is a folder; name the file to open",
                    hint="files: " + ", ".join(e.path for e in manifest.files[:10]),
                )
            path = manifest.files[0].path
        if path not in {e.path for e in manifest.files}:
            raise NotFound(f"artifact {artifact_id} has no file {path!r}")
        return self.fs.open(f"{self._object_path(artifact_id)}/{path}", mode)

    def fetch(self, artifact_id: str, dest: Path | str) -> Path:
        """Make the artifact's files available as a local folder (downloaded and verified if remote).

        Several processes share one cache (two ``lamina tune`` workers on one workspace): a download
        goes to a private staging folder and is renamed into place whole, so a reader never sees a
        file another process is still writing (or truncating), and a complete copy is reused."""
        local = self.local_path(artifact_id)
        if local is not None:
            return local
        manifest = self.manifest(artifact_id)
        final = Path(dest) / artifact_id
        if _complete_copy(final, manifest):
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.parent / f".{artifact_id}.{secrets.token_hex(6)}.partial"
        try:
            for entry in manifest.files:
                target = staging / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                with (
                    self.fs.open(f"{self._object_path(artifact_id)}/{entry.path}", "rb") as src,
                    open(target, "wb") as out,
                ):
                    got = _copy_hashing_stream(src, out, entry.path)
                if got.sha256 != entry.sha256:
                    raise ArtifactCorrupt(
                        f"artifact {artifact_id}: {entry.path} does not match its recorded hash"
                    )
            for _ in range(3):
                try:
                    os.rename(staging, final)  # atomic: readers see every file or none
                    return final
                except OSError:
                    if _complete_copy(final, manifest):
                        return final  # another process put a complete copy in place first
                    try:  # an interrupted copy from an older version: move it aside, then retry
                        aside = final.parent / f".{artifact_id}.{secrets.token_hex(6)}.stale"
                        os.rename(final, aside)
                        shutil.rmtree(aside, ignore_errors=True)
                    except FileNotFoundError:
                        pass
            raise StoreError(f"cannot put artifact {artifact_id} into the cache at {final}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def verify(self, artifact_id: str) -> Manifest:
        """Re-hash every file; raise ArtifactCorrupt naming the files that changed or went missing."""
        manifest = self.manifest(artifact_id)
        problems = []
        for entry in manifest.files:
            try:
                with self.fs.open(f"{self._object_path(artifact_id)}/{entry.path}", "rb") as src:
                    got = _copy_hashing_stream(src, None, entry.path)
            except FileNotFoundError:
                problems.append(f"{entry.path} is missing")
                continue
            if (got.sha256, got.size) != (entry.sha256, entry.size):
                problems.append(f"{entry.path} changed")
        if problems or tree_hash(manifest.files) != manifest.content_hash:
            problems = problems or ["the manifest does not match its own content hash"]
            raise ArtifactCorrupt(f"artifact {artifact_id} is corrupt: {'; '.join(problems)}")
        return manifest

    def list_ids(self) -> list[str]:
        """Ids of every committed artifact (those with a manifest)."""
        return sorted(self._object_dirs(with_manifest=True))

    def _object_dirs(self, *, with_manifest: bool | None) -> Iterator[str]:
        base = f"{self.root}/{OBJECTS_DIR}"
        self.fs.invalidate_cache()
        if not self.fs.exists(base):
            return
        for path in self.fs.ls(base, detail=False):
            name = PurePosixPath(path).name
            if with_manifest is None or self.fs.exists(f"{path}/{MANIFEST_NAME}") == with_manifest:
                yield name

    # -- delete and sweep ---------------------------------------------------------------------------

    def delete(self, artifact_id: str) -> None:
        """Remove an artifact's files (used when its catalog row could not be written, and by gc)."""
        base = self._object_path(artifact_id)
        if self.is_local:
            # Un-commit first (manifest away), so a crash mid-delete never leaves a visible partial artifact.
            Path(base, MANIFEST_NAME).unlink(missing_ok=True)
            _remove_tree(Path(base))
        else:
            self._try_remove(f"{base}/{MANIFEST_NAME}")
            self._try_remove(base)

    def sweep(self, keep: set[str], *, older_than_s: float = 3600, dry_run: bool = False) -> list[str]:
        """Remove debris: staging leftovers and objects the catalog does not know (``keep``).

        Only debris older than ``older_than_s`` goes, so a commit running in another process is safe.
        Returns what was (or, with ``dry_run``, would be) removed, as store-relative paths.
        """
        removed = []
        now = time.time()
        staging = f"{self.root}/{STAGING_DIR}"
        self.fs.invalidate_cache()
        candidates = []
        if self.fs.exists(staging):
            candidates += list(self.fs.ls(staging, detail=False))
        candidates += [self._object_path(i) for i in self._object_dirs(with_manifest=None) if i not in keep]
        for path in candidates:
            if now - self._newest_mtime(path) < older_than_s:
                continue
            removed.append(str(PurePosixPath(path).relative_to(self.root)))
            if not dry_run:
                if self.is_local:
                    if Path(path).is_dir():
                        Path(path, MANIFEST_NAME).unlink(missing_ok=True)  # un-commit before removing
                    _remove_tree(Path(path))
                else:
                    self._try_remove(path)
        return removed

    def _newest_mtime(self, path: str) -> float:
        if self.is_local:
            p = Path(path)
            stamps = [p.lstat().st_mtime] + ([q.lstat().st_mtime for q in p.rglob("*")] if p.is_dir() else [])
            return max(stamps)
        newest = 0.0
        for info in self.fs.find(path, detail=True, withdirs=False).values():
            stamp = info.get("LastModified") or info.get("mtime") or info.get("created")
            if isinstance(stamp, datetime):
                newest = max(newest, stamp.timestamp())
            elif isinstance(stamp, int | float):
                newest = max(newest, float(stamp))
        return newest

    def _try_remove(self, path: str) -> None:
        try:
            self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass
        except Exception:  # best effort: gc removes whatever is left
            log.warning("could not remove %s from the artifact store; 'lamina gc' will", path, exc_info=True)


def _copy_hashing(path: Path, out: Any, rel: str, progress: ProgressFn | None) -> FileEntry:
    with open(path, "rb") as src:
        return _copy_hashing_stream(src, out, rel, progress)


def _complete_copy(folder: Path, manifest: Manifest) -> bool:
    """Whether ``folder`` holds every file of ``manifest`` at its recorded size (copies only ever
    appear whole, by rename, so the sizes tell a finished copy from an interrupted one)."""
    try:
        return folder.is_dir() and all((folder / e.path).stat().st_size == e.size for e in manifest.files)
    except OSError:
        return False


def _copy_hashing_stream(src: Any, out: Any, rel: str, progress: ProgressFn | None = None) -> FileEntry:
    digest = hashlib.sha256()
    size = 0
    while chunk := src.read(CHUNK_BYTES):
        digest.update(chunk)
        if out is not None:
            out.write(chunk)
        size += len(chunk)
        if progress is not None:
            progress(len(chunk))
    return FileEntry(path=rel, size=size, sha256=digest.hexdigest())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_tree(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink(missing_ok=True)
