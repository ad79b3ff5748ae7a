"""The workspace: one folder with ``lamina.yaml`` that ties settings, the catalog and the store together.

Finding it: ``--workspace`` beats ``LAMINA_HOME``, which beats the current folder and its parents
(the first one holding a ``lamina.yaml``). ``Workspace.commit`` is the one door through which
layers add artifacts: files go to the store first, then one catalog transaction records the row
and its lineage, so a crash at any point leaves either a whole artifact or none.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lamina.core.catalog import Artifact, Catalog, new_artifact_id
from lamina.core.catalog.db import (
    check_schema,
    create_catalog_engine,
    schema_state,
    sqlite_path,
    upgrade_schema,
)
from lamina.core.errors import ArtifactCorrupt, NotFound, SchemaMismatch, WorkspaceError
from lamina.core.settings import YAML_NAME, Settings, load_settings, read_yaml
from lamina.core.store import ArtifactStore, ProgressFn, content_hash_of

log = logging.getLogger(__name__)
A = TypeVar("A", bound=Artifact)

HOME_ENV = "LAMINA_HOME"

YAML_TEMPLATE = """\
# Lamina workspace settings.
# Precedence, highest first: command-line flags > LAMINA_* environment variables > this file > defaults.
# Nested keys map to environment variables with '__', e.g. server.port -> LAMINA_SERVER__PORT.

# Catalog (metadata database): any SQLAlchemy URL. Default: the SQLite file lamina.db in this folder.
#   catalog_url: postgresql+psycopg://lamina@db.internal/lamina   (pip install 'lamina[postgres]')
{catalog_line}

# Artifact store: a folder (relative to this file) or an fsspec URL such as s3://bucket/prefix.
#   artifact_options are passed to fsspec, e.g. {{endpoint_url: http://127.0.0.1:9000}} for MinIO.
{artifact_line}
{options_line}

# RAG collections: LanceDB in this folder, or a PostgreSQL server with pgvector.
{vector_line}

log_level: WARNING     # DEBUG, INFO, WARNING or ERROR
log_format: human      # human, or json for one JSON object per line

{profile_note}server:
  host: {host}      # binding beyond localhost requires an admin key
  port: 8000
  # admin_key: do not write secrets here; set LAMINA_SERVER__ADMIN_KEY instead

# Dataset recipes: source -> steps -> split, built with 'lamina data build NAME'.
# datasets:
#   shakes:
#     source: data/shakespeare.txt          # a path (type inferred) or {{type: jsonl|csv|sql|http|..., ...}}
#     steps:
#       - normalize
#       - missing
#       - dedup: {{method: near}}
#       - filter: {{min_chars: 20}}
#     split: {{fractions: {{val: 0.1}}, seed: 0}}
#     checks: {{max_dup_rate: 0.3}}

# Training recipes: 'lamina train lm --recipe NAME'.
# models:
#   shakes:
#     dataset: shakes
#     preset: tiny                          # tiny, small or base
#     alias: champion
#     train: {{max_steps: 2000, batch_size: 32, lr: 0.003}}
"""


CLUSTER_NOTE = """\
# Profile: cluster. Every lamina process pointed at this file (serve replicas behind a balancer,
# 'lamina loop worker's, 'lamina tune' workers on more machines) shares the catalog, the artifacts
# and the collections above. Keep secrets out of this file: the database password in PGPASSWORD or
# ~/.pgpass, S3 keys in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the admin key in
# LAMINA_SERVER__ADMIN_KEY (the server binds every interface and refuses to start without one).

"""


def render_yaml(
    catalog_url: str | None = None,
    artifact_url: str | None = None,
    vector_url: str | None = None,
    artifact_options: Mapping[str, Any] | None = None,
    profile: str = "local",
) -> str:
    """A new workspace's ``lamina.yaml``: the given settings written, the rest as commented examples."""
    return YAML_TEMPLATE.format(
        catalog_line=f"catalog_url: {catalog_url}" if catalog_url else "# catalog_url: sqlite:///lamina.db",
        artifact_line=f"artifact_url: {artifact_url}" if artifact_url else "# artifact_url: artifacts",
        options_line=f"artifact_options: {json.dumps(dict(artifact_options))}"
        if artifact_options
        else "# artifact_options: {}",
        vector_line=f"vector_url: {vector_url}"
        if vector_url
        else "# vector_url: postgresql+psycopg://lamina@db.internal/lamina",
        profile_note=CLUSTER_NOTE if profile == "cluster" else "",
        host="0.0.0.0  " if profile == "cluster" else "127.0.0.1",
    )


def check_cluster_urls(catalog_url: str | None, artifact_url: str | None, vector_url: str | None) -> None:
    """What a cluster workspace needs: state every machine can reach, not files on one of them."""
    problems = []
    if not (catalog_url or "").startswith("postgresql"):
        problems.append("--catalog-url postgresql+psycopg://USER@HOST/DB (SQLite is one machine's file)")
    if not (artifact_url or "").startswith("s3://"):
        problems.append("--artifact-url s3://BUCKET/PREFIX (a local folder is one machine's disk)")
    if not (vector_url or "").startswith("postgresql"):
        problems.append("--vector-url postgresql+psycopg://… with pgvector (LanceDB files are local)")
    if problems:
        raise WorkspaceError(
            "the cluster profile keeps every piece of state on a server; it needs " + "; ".join(problems),
            hint="or use the local profile (the default) on one machine",
        )


def find_workspace(
    explicit: Path | str | None = None, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Path:
    """Locate the workspace folder, or explain how to make one."""
    env = os.environ if env is None else env
    if explicit is not None or env.get(HOME_ENV):
        origin = "--workspace" if explicit is not None else HOME_ENV
        root = Path(explicit if explicit is not None else env[HOME_ENV]).expanduser().resolve()
        if not root.is_dir():
            raise WorkspaceError(
                f"no workspace at {root} (from {origin}): the folder does not exist",
                hint=f"run 'lamina init {root}' to create one",
            )
        if not (root / YAML_NAME).is_file():
            raise WorkspaceError(
                f"{root} (from {origin}) is not a Lamina workspace: it has no {YAML_NAME}",
                hint=f"run 'lamina init {root}' to make it one",
            )
        return root
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / YAML_NAME).is_file():
            return folder
    raise WorkspaceError(
        f"no Lamina workspace in {start} or any parent folder",
        hint="run 'lamina init' here, pass --workspace DIR, or set LAMINA_HOME",
    )


@dataclass
class CommitResult:
    artifact: Artifact
    reused: bool  # True when an identical latest version already existed and was returned instead


@dataclass
class CheckReport:
    """Whether catalog and store agree: every row's files present and intact."""

    checked: int = 0
    problems: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # store objects no row points at (invisible)

    @property
    def ok(self) -> bool:
        return not self.problems


class Workspace:
    """Settings + catalog + artifact store of one workspace. Open with ``Workspace.open`` or ``init``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.workspace
        self._catalog: Catalog | None = None
        self._store: ArtifactStore | None = None

    # -- opening ------------------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        root: Path | str,
        flags: Mapping[str, Any] | None = None,
        *,
        catalog_url: str | None = None,
        artifact_url: str | None = None,
        vector_url: str | None = None,
        artifact_options: Mapping[str, Any] | None = None,
        profile: str = "local",
    ) -> tuple[Workspace, bool]:
        """Create (or complete) a workspace at ``root``. Idempotent; returns (workspace, created).

        ``profile="cluster"``: the catalog on PostgreSQL, artifacts on S3 and RAG collections on
        pgvector (the catalog's server unless ``vector_url`` names another), so every process
        pointed at the workspace (server replicas, loop workers, ``lamina tune`` workers) shares one
        state; anything else is refused with what to pass instead."""
        if profile == "cluster":
            vector_url = vector_url or catalog_url
            check_cluster_urls(catalog_url, artifact_url, vector_url)
        elif profile != "local":
            raise WorkspaceError(f"unknown profile {profile!r}", hint="use local (the default) or cluster")
        root = Path(root).expanduser().resolve()
        yaml_path = root / YAML_NAME
        created = not yaml_path.exists()
        try:
            root.mkdir(parents=True, exist_ok=True)
            if created:
                yaml_path.write_text(
                    render_yaml(catalog_url, artifact_url, vector_url, artifact_options, profile),
                    encoding="utf-8",
                )
            elif catalog_url or artifact_url:
                existing = read_yaml(yaml_path)
                for key, value in (("catalog_url", catalog_url), ("artifact_url", artifact_url)):
                    if value and existing.get(key) != value:
                        raise WorkspaceError(
                            f"{yaml_path} already exists with {key}={existing.get(key)!r}",
                            hint=f"edit {yaml_path} to change it; init never overwrites it",
                        )
        except OSError as exc:
            raise WorkspaceError(f"cannot create the workspace at {root}: {exc.strerror}") from exc
        ws = cls(load_settings(root, flags))
        engine = create_catalog_engine(ws.settings.resolved_catalog_url)
        try:
            state = schema_state(engine)
            if state.current is None:
                upgrade_schema(engine)
            else:
                check_schema(engine)  # an older or newer schema is for 'lamina upgrade' / a newer Lamina
        finally:
            engine.dispose()
        ws.store.ensure()
        log.info("workspace ready", extra={"workspace": str(root), "new_workspace": created})
        return ws, created

    @classmethod
    def open(cls, explicit: Path | str | None = None, flags: Mapping[str, Any] | None = None) -> Workspace:
        """Find, validate and open a workspace; fails with one clear error if anything is off."""
        root = find_workspace(explicit)
        ws = cls(load_settings(root, flags))
        ws._require_catalog_file()
        ws.catalog  # noqa: B018 - open now so a bad catalog fails here, not mid-command
        return ws

    def _require_catalog_file(self) -> None:
        """SQLite would silently create an empty file; a missing catalog must be an error instead."""
        path = sqlite_path(self.settings.resolved_catalog_url)
        if path is not None and not path.exists():
            raise WorkspaceError(
                f"the workspace at {self.root} has no catalog: {path} is missing",
                hint=f"restore it from a backup, or run 'lamina init {self.root}' to start an empty catalog",
            )

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog(self.settings.resolved_catalog_url)
        return self._catalog

    @property
    def store(self) -> ArtifactStore:
        if self._store is None:
            self._store = ArtifactStore(self.settings.resolved_artifact_url, self.settings.artifact_options)
        return self._store

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def upgrade(
        root: Path | str | None = None, flags: Mapping[str, Any] | None = None
    ) -> tuple[str | None, str]:
        """Migrate the catalog of the workspace to this Lamina's schema (``lamina upgrade``)."""
        ws = Workspace(load_settings(find_workspace(root), flags))
        ws._require_catalog_file()
        engine = create_catalog_engine(ws.settings.resolved_catalog_url)
        try:
            state = schema_state(engine)
            if state.current is None:
                raise WorkspaceError("the catalog has no schema yet", hint="run 'lamina init'")
            try:
                check_schema(engine)
            except SchemaMismatch as exc:
                if "newer than this Lamina" in exc.message:
                    raise
            return upgrade_schema(engine)
        finally:
            engine.dispose()

    # -- writing ------------------------------------------------------------------------------------

    def commit(
        self,
        src: Path | str,
        artifact: A,
        parents: Sequence[tuple[str, str]] = (),
        *,
        reuse_identical: bool = False,
        progress: ProgressFn | None = None,
    ) -> CommitResult:
        """Store the files at ``src`` and record ``artifact`` for them, atomically.

        With ``reuse_identical``, if the latest version of the same kind and name has exactly the same
        content, nothing is written and that version is returned (``reused=True``).
        """
        src = Path(src)
        if reuse_identical:
            latest = self.catalog.latest(artifact.kind, artifact.name)
            if latest is not None and latest.content_hash == content_hash_of(src):
                return CommitResult(latest, reused=True)
        artifact.id = artifact.id or new_artifact_id(artifact.kind)
        manifest = self.store.commit(src, artifact.id, progress=progress)
        artifact.uri = self.store.uri(artifact.id)
        artifact.content_hash = manifest.content_hash
        artifact.size_bytes = manifest.size_bytes
        artifact.file_count = len(manifest.files)
        try:
            recorded = self.catalog.add(artifact, parents)
        except BaseException:
            self.store.delete(artifact.id)  # no row, so no reader can see these files; remove them now
            raise
        log.info(
            "artifact committed",
            extra={
                "artifact_id": recorded.id,
                "kind": recorded.kind,
                "ref": recorded.ref,
                "bytes": recorded.size_bytes,
            },
        )
        return CommitResult(recorded, reused=False)

    def record(self, artifact: A, parents: Sequence[tuple[str, str]] = ()) -> A:
        """Record an artifact that has no files (e.g. a deployment)."""
        artifact.size_bytes = artifact.size_bytes or 0
        artifact.file_count = artifact.file_count or 0
        return self.catalog.add(artifact, parents)

    # -- reading ------------------------------------------------------------------------------------

    def resolve(self, ref: str, kind: str | None = None) -> Artifact:
        return self.catalog.resolve(ref, kind)

    def artifact_path(self, artifact: Artifact, cache_dir: Path | None = None) -> Path:
        """A local folder with the artifact's files (in place on local stores, downloaded otherwise)."""
        if artifact.uri is None:
            raise NotFound(f"{artifact.kind} {artifact.ref} has no files")
        return self.store.fetch(artifact.id, cache_dir or self.root / ".cache" / "artifacts")

    # -- maintenance --------------------------------------------------------------------------------

    def check(self, *, deep: bool = True) -> CheckReport:
        """Compare catalog and store; ``deep`` re-hashes every file (else only manifests are read)."""
        report = CheckReport()
        rows = [a for a in self.catalog.find() if a.uri is not None]
        known = {a.id for a in rows}
        for artifact in rows:
            report.checked += 1
            try:
                manifest = self.store.verify(artifact.id) if deep else self.store.manifest(artifact.id)
            except (NotFound, ArtifactCorrupt) as exc:
                report.problems.append(f"{artifact.kind} {artifact.ref} ({artifact.id}): {exc.message}")
                continue
            if manifest.content_hash != artifact.content_hash:
                report.problems.append(
                    f"{artifact.kind} {artifact.ref} ({artifact.id}): store hash {manifest.content_hash} "
                    f"differs from catalog hash {artifact.content_hash}"
                )
        report.orphans = [i for i in self.store.list_ids() if i not in known]
        return report

    def gc(self, *, older_than_s: float = 3600, dry_run: bool = False) -> list[str]:
        """Remove store debris that no catalog row points at (interrupted commits)."""
        return self.store.sweep(self.catalog.ids(), older_than_s=older_than_s, dry_run=dry_run)

    def status(self, recent: int = 15) -> dict[str, Any]:
        """What the workspace holds, as plain data (rendered by ``lamina status``)."""
        schema = self.catalog.schema()
        return {
            "workspace": str(self.root),
            "catalog": {"url": self.catalog.display_url, "revision": schema.current, "head": schema.head},
            "store": {"url": self.store.url},
            "counts": self.catalog.counts(),
            "total_size_bytes": self.catalog.total_size(),
            "aliases": self.catalog.aliases(),
            "recent": [a.summary() for a in self.catalog.find(limit=recent)],
        }
