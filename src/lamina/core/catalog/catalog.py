"""The catalog API: record artifacts with lineage, find them by reference, move model aliases.

Objects returned here are detached from their session (``expire_on_commit=False``) and carry all
their columns, so callers can read them freely; change the catalog only through these methods.
"""

from __future__ import annotations

import getpass
import random
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from lamina.core.catalog.db import SchemaState, check_schema, create_catalog_engine, schema_state
from lamina.core.catalog.models import (
    AliasEvent,
    Artifact,
    Dataset,
    DatasetVersion,
    LineageEdge,
    Model,
    ModelAlias,
    ModelVersion,
    Run,
    utcnow,
)
from lamina.core.errors import CatalogUnavailable, InvalidReference, LaminaError, NotFound
from lamina.core.refs import ARTIFACT_KINDS, KIND_PREFIXES, Ref, parse_ref, validate_name
from lamina.core.settings import redact_url

A = TypeVar("A", bound=Artifact)
# Writers racing for the next version number retry after a short random pause. Five tries without a
# pause lost a race five times in a row (4 threads on a busy 2-core machine); the pause spreads them out.
MAX_VERSION_RETRIES = 20


def new_artifact_id(kind: str) -> str:
    """``<kind prefix>-<16 hex>``, e.g. ``ds-3f9a1c2b4d5e6f70``."""
    try:
        return f"{KIND_PREFIXES[kind]}-{secrets.token_hex(8)}"
    except KeyError:
        raise LaminaError(
            f"unknown artifact kind {kind!r}", hint=f"kinds are: {', '.join(ARTIFACT_KINDS)}"
        ) from None


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class Catalog:
    """Metadata of one workspace, in any SQLAlchemy database."""

    def __init__(self, url: str, *, check: bool = True) -> None:
        self.url = url
        self.engine = create_catalog_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if check:
            check_schema(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    def schema(self) -> SchemaState:
        return schema_state(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        try:
            with self._sessions.begin() as session:
                yield session
        except OperationalError as exc:
            raise CatalogUnavailable(
                f"catalog {self.display_url} failed: {str(getattr(exc, 'orig', exc)).splitlines()[0]}",
                hint="check that the database is reachable and not locked by another program",
            ) from exc

    # -- writing ------------------------------------------------------------------------------------

    def add(self, artifact: A, parents: Sequence[tuple[str, str]] = ()) -> A:
        """Insert ``artifact`` (version assigned if unset) with lineage edges ``(parent_id, relation)``.

        Parents must already exist: edges are only made when a child is created, so lineage is acyclic.
        """
        if artifact.kind is None:
            raise LaminaError(f"{type(artifact).__name__} is not a concrete artifact kind")
        validate_name(artifact.name, f"{artifact.kind} name")
        artifact.id = artifact.id or new_artifact_id(artifact.kind)
        artifact.created_by = artifact.created_by or current_user()
        auto_version = artifact.version is None
        for attempt in range(MAX_VERSION_RETRIES):
            try:
                with self.session() as session:
                    self._check_parents(session, parents)
                    if auto_version:
                        artifact.version = self._next_version(session, artifact.kind, artifact.name)
                    self._attach_container(session, artifact)
                    session.add(artifact)
                    session.flush()
                    for parent_id, relation in dict.fromkeys(parents):
                        session.add(LineageEdge(child_id=artifact.id, parent_id=parent_id, relation=relation))
                return artifact
            except IntegrityError as exc:
                # Another writer took the same version number between our read and our insert.
                if not auto_version or attempt == MAX_VERSION_RETRIES - 1:
                    raise LaminaError(
                        f"cannot record {artifact.kind} {artifact.name!r}: "
                        f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}"
                    ) from exc
                time.sleep(random.uniform(0, 0.005 * (attempt + 1)))  # noqa: S311 (a pause, not a secret)
        raise AssertionError("unreachable")

    @staticmethod
    def _check_parents(session: Session, parents: Sequence[tuple[str, str]]) -> None:
        ids = {pid for pid, _ in parents}
        if not ids:
            return
        found = set(session.scalars(sa.select(Artifact.id).where(Artifact.id.in_(ids))))
        missing = sorted(ids - found)
        if missing:
            raise NotFound(f"lineage parent(s) not in the catalog: {', '.join(missing)}")

    @staticmethod
    def _next_version(session: Session, kind: str, name: str) -> int:
        current = session.scalar(
            sa.select(sa.func.max(Artifact.version)).where(Artifact.kind == kind, Artifact.name == name)
        )
        return (current or 0) + 1

    @staticmethod
    def _attach_container(session: Session, artifact: Artifact) -> None:
        """Dataset and model versions belong to a named series; create the series on first use."""
        if isinstance(artifact, DatasetVersion) and artifact.dataset_id is None:
            dataset = session.scalar(sa.select(Dataset).where(Dataset.name == artifact.name))
            if dataset is None:
                dataset = Dataset(name=artifact.name)
                session.add(dataset)
                session.flush()
            artifact.dataset_id = dataset.id
        elif isinstance(artifact, ModelVersion) and artifact.model_id is None:
            model = session.scalar(sa.select(Model).where(Model.name == artifact.name))
            if model is None:
                model = Model(name=artifact.name, family=artifact.family)
                session.add(model)
                session.flush()
            artifact.model_id = model.id

    def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        metrics: dict[str, Any] | None = None,
        ended: bool = False,
        tracking_run_id: str | None = None,
    ) -> Run:
        """Runs are the one record that changes after it is written: status, metrics, end time."""
        with self.session() as session:
            run = session.get(Run, run_id)
            if run is None:
                raise NotFound(f"no run with id {run_id}")
            if status is not None:
                run.status = status
            if metrics is not None:
                run.metrics = {**(run.metrics or {}), **metrics}
            if ended:
                run.ended_at = utcnow()
            if tracking_run_id is not None:
                run.tracking_run_id = tracking_run_id
            return run

    def set_alias(
        self,
        model_name: str,
        alias: str,
        version_id: str,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> str | None:
        """Point ``model_name@alias`` at ``version_id``; returns the version it pointed at before."""
        validate_name(alias, "alias")
        if parse_ref(f"x@{alias}").version is not None:
            raise InvalidReference(f"alias {alias!r} looks like a version (vN); choose another name")
        with self.session() as session:
            model = session.scalar(sa.select(Model).where(Model.name == model_name))
            if model is None:
                raise NotFound(f"no model named {model_name!r}")
            version = session.get(ModelVersion, version_id)
            if version is None or version.model_id != model.id:
                raise NotFound(f"{version_id} is not a version of model {model_name!r}")
            row = session.get(ModelAlias, (model.id, alias))
            previous = row.version_id if row else None
            if row is None:
                session.add(ModelAlias(model_id=model.id, alias=alias, version_id=version_id))
            else:
                row.version_id, row.updated_at = version_id, utcnow()
            session.add(
                AliasEvent(
                    model_id=model.id,
                    alias=alias,
                    from_version_id=previous,
                    to_version_id=version_id,
                    actor=actor or current_user(),
                    reason=reason,
                )
            )
            return previous

    # -- reading ------------------------------------------------------------------------------------

    def get(self, artifact_id: str) -> Artifact:
        with self.session() as session:
            artifact = session.get(Artifact, artifact_id)
        if artifact is None:
            raise NotFound(
                f"no artifact with id {artifact_id}", hint="'lamina status' lists what the workspace holds"
            )
        return artifact

    def find(
        self,
        kind: str | None = None,
        name: str | None = None,
        *,
        content_hash: str | None = None,
        limit: int | None = None,
    ) -> list[Artifact]:
        """Artifacts matching every given filter, newest first."""
        query = sa.select(Artifact).order_by(Artifact.created_at.desc(), Artifact.version.desc())
        if kind is not None:
            query = query.where(Artifact.kind == kind)
        if name is not None:
            query = query.where(Artifact.name == name)
        if content_hash is not None:
            query = query.where(Artifact.content_hash == content_hash)
        if limit is not None:
            query = query.limit(limit)
        with self.session() as session:
            return list(session.scalars(query))

    def latest(self, kind: str, name: str) -> Artifact | None:
        query = (
            sa.select(Artifact)
            .where(Artifact.kind == kind, Artifact.name == name)
            .order_by(Artifact.version.desc())
            .limit(1)
        )
        with self.session() as session:
            return session.scalar(query)

    def resolve(self, ref: str | Ref, kind: str | None = None) -> Artifact:
        """Find the one artifact a reference names (see ``lamina.core.refs``)."""
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        if parsed.artifact_id:
            artifact = self.get(parsed.artifact_id)
            if kind and artifact.kind != kind:
                raise InvalidReference(f"{parsed.artifact_id} is a {artifact.kind}, not a {kind}")
            return artifact
        kind = parsed.kind or kind
        name = parsed.name
        assert name is not None
        with self.session() as session:
            if parsed.alias:
                if kind not in (None, "model_version"):
                    raise InvalidReference(
                        f"aliases belong to models; {kind} {name!r} has none", hint="use @vN"
                    )
                version_id = session.scalar(
                    sa.select(ModelAlias.version_id)
                    .join(Model, Model.id == ModelAlias.model_id)
                    .where(Model.name == name, ModelAlias.alias == parsed.alias)
                )
                if version_id is None:
                    raise NotFound(
                        f"model {name!r} has no alias {parsed.alias!r}",
                        hint=self._alias_hint(session, name),
                    )
                return session.get_one(Artifact, version_id)
            query = sa.select(Artifact).where(Artifact.name == name)
            if kind:
                query = query.where(Artifact.kind == kind)
            if parsed.version is not None:
                query = query.where(Artifact.version == parsed.version)
            matches = list(session.scalars(query.order_by(Artifact.version.desc())))
        if not matches:
            what = f"{kind} " if kind else ""
            version = f" version {parsed.version}" if parsed.version else ""
            raise NotFound(
                f"no {what}artifact named {name!r}{version}",
                hint="'lamina status' lists what the workspace holds",
            )
        kinds = sorted({m.kind for m in matches})
        if len(kinds) > 1:
            options = ", ".join(f"{k}:{parsed}" for k in kinds)
            raise InvalidReference(
                f"{str(parsed)!r} names more than one kind of artifact", hint=f"say which: {options}"
            )
        return matches[0]

    @staticmethod
    def _alias_hint(session: Session, name: str) -> str:
        aliases = session.scalars(
            sa.select(ModelAlias.alias).join(Model, Model.id == ModelAlias.model_id).where(Model.name == name)
        ).all()
        return f"aliases of {name!r}: {', '.join(aliases)}" if aliases else f"{name!r} has no aliases yet"

    def parents(self, artifact_id: str) -> list[tuple[Artifact, str]]:
        """What ``artifact_id`` was made from, with the relation of each edge."""
        return self._linked(artifact_id, other=LineageEdge.parent_id, this=LineageEdge.child_id)

    def children(self, artifact_id: str) -> list[tuple[Artifact, str]]:
        """What was made from ``artifact_id``, with the relation of each edge."""
        return self._linked(artifact_id, other=LineageEdge.child_id, this=LineageEdge.parent_id)

    def _linked(self, artifact_id: str, *, other: Any, this: Any) -> list[tuple[Artifact, str]]:
        query = (
            sa.select(Artifact, LineageEdge.relation)
            .join(LineageEdge, other == Artifact.id)
            .where(this == artifact_id)
            .order_by(Artifact.created_at)
        )
        with self.session() as session:
            return [(a, rel) for a, rel in session.execute(query)]

    def counts(self) -> dict[str, int]:
        query = sa.select(Artifact.kind, sa.func.count()).group_by(Artifact.kind)
        with self.session() as session:
            return {kind: n for kind, n in session.execute(query)}

    def total_size(self) -> int:
        with self.session() as session:
            return int(session.scalar(sa.select(sa.func.coalesce(sa.func.sum(Artifact.size_bytes), 0))) or 0)

    def ids(self) -> set[str]:
        with self.session() as session:
            return set(session.scalars(sa.select(Artifact.id)))

    def aliases(self) -> list[dict[str, str]]:
        query = (
            sa.select(Model.name, ModelAlias.alias, ModelAlias.version_id, Artifact.version)
            .join(ModelAlias, ModelAlias.model_id == Model.id)
            .join(Artifact, Artifact.id == ModelAlias.version_id)
            .order_by(Model.name, ModelAlias.alias)
        )
        with self.session() as session:
            return [
                {"model": m, "alias": a, "version_id": vid, "ref": f"{m}@v{v}"}
                for m, a, vid, v in session.execute(query)
            ]
