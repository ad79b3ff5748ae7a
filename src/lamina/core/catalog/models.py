"""Catalog schema: every thing the platform makes is an artifact row plus, for some kinds, a row of
details; lineage edges link artifacts to what they were derived from.

```
artifacts (id, kind, name, version, uri, content_hash, ...)   one row per committed artifact
  ├── dataset_versions  (joined on id)   ── datasets (name)       a named series of versions
  ├── runs              (joined on id)
  ├── model_versions    (joined on id)   ── models (name) ── model_aliases / alias_events
  ├── eval_reports      (joined on id)
  └── deployments       (joined on id)
lineage_edges (child_id → parent_id, relation)
api_keys, audit_events, feedback                          serving and monitoring records
```

Schema changes go through Alembic migrations (``migrations/versions``); a test checks that these
models and the migrations agree on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column, relationship

# Named constraints: Alembic needs stable names to alter tables (SQLite batch mode especially).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY; BIGINT elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every engine (SQLite stores none; this restores it on read)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: catalog timestamps must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime()}


# --------------------------------------------------------------------------------------------------
# The spine: artifacts and lineage
# --------------------------------------------------------------------------------------------------


class Artifact(Base):
    """A committed, immutable thing with files in the artifact store (or none, e.g. a deployment)."""

    __tablename__ = "artifacts"
    __table_args__ = (
        UniqueConstraint("kind", "name", "version", name="uq_artifacts_kind_name_version"),
        CheckConstraint("version >= 1", name="version_positive"),
        Index("ix_artifacts_content_hash", "content_hash"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    uri: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str | None] = mapped_column(String(80))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    file_count: Mapped[int] = mapped_column(Integer, default=0)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(128))

    # Load every kind's detail columns with the base row, so objects stay usable after the session.
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_abstract": True, "with_polymorphic": "*"}

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    def summary(self) -> dict[str, Any]:
        """Plain data about this artifact, for tables and ``--json`` output."""
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "ref": self.ref,
            "content_hash": self.content_hash,
            "size_bytes": self.size_bytes,
            "file_count": self.file_count,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "created_by": self.created_by,
            "meta": self.meta,
        }


class Source(Artifact):
    """Raw input as it was received (a file, a folder, a query result) before any cleaning."""

    __mapper_args__ = {"polymorphic_identity": "source"}


class VectorIndex(Artifact):
    """An embedded vector index built from a dataset version."""

    __mapper_args__ = {"polymorphic_identity": "vector_index"}


class PromptTemplate(Artifact):
    """A versioned Jinja prompt template with its declared variables (``lamina prompts``)."""

    __mapper_args__ = {"polymorphic_identity": "prompt_template"}


class FeedbackBatch(Artifact):
    """A frozen batch of reviewed feedback, the input of a continuous-learning round."""

    __mapper_args__ = {"polymorphic_identity": "feedback_batch"}


class ArtifactAlias(Base):
    """A movable name for one version of a non-model artifact (a prompt template's ``champion``);
    models keep theirs in ``model_aliases``."""

    __tablename__ = "artifact_aliases"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    artifact_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class LineageEdge(Base):
    """``child`` was made from ``parent`` (``relation`` says how: derived_from, trained_on, ...)."""

    __tablename__ = "lineage_edges"

    child_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True)
    parent_id: Mapped[str] = mapped_column(
        ForeignKey("artifacts.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    relation: Mapped[str] = mapped_column(String(32), primary_key=True, default="derived_from")


# --------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------


class Dataset(Base):
    """A named series of dataset versions."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    versions: Mapped[list[DatasetVersion]] = relationship(back_populates="dataset")


class DatasetVersion(Artifact):
    """One immutable build of a dataset: rows, splits, schema and the recipe that made it."""

    __tablename__ = "dataset_versions"
    __mapper_args__ = {"polymorphic_identity": "dataset_version"}

    id: Mapped[str] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    fingerprint: Mapped[str | None] = mapped_column(String(80), index=True)
    num_rows: Mapped[int | None] = mapped_column(BigInteger)
    splits: Mapped[dict[str, Any]] = mapped_column(default=dict)
    data_schema: Mapped[dict[str, Any]] = mapped_column("schema", default=dict)
    recipe: Mapped[dict[str, Any]] = mapped_column(default=dict)

    dataset: Mapped[Dataset] = relationship(back_populates="versions")


# --------------------------------------------------------------------------------------------------
# Runs, models, evaluations
# --------------------------------------------------------------------------------------------------


class Run(Artifact):
    """A training, fine-tuning, tuning or evaluation job and what it used."""

    __tablename__ = "runs"
    __mapper_args__ = {"polymorphic_identity": "run"}

    id: Mapped[str] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True)
    task: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="running")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    tracking_run_id: Mapped[str | None] = mapped_column(String(64))


class Model(Base):
    """A named series of model versions, with aliases such as ``champion``."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    family: Mapped[str | None] = mapped_column(String(32))
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    versions: Mapped[list[ModelVersion]] = relationship(back_populates="model")
    aliases: Mapped[list[ModelAlias]] = relationship(back_populates="model")


class ModelVersion(Artifact):
    """One registered model: weights + config (+ tokenizer) in the store."""

    __tablename__ = "model_versions"
    __mapper_args__ = {"polymorphic_identity": "model_version"}

    id: Mapped[str] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    family: Mapped[str | None] = mapped_column(String(32))
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)

    model: Mapped[Model] = relationship(back_populates="versions")


class ModelAlias(Base):
    """``model@alias`` points at one version; moving it is recorded in ``alias_events``."""

    __tablename__ = "model_aliases"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    model: Mapped[Model] = relationship(back_populates="aliases")


class AliasEvent(Base):
    """History of alias moves, so ``rollback`` knows where an alias pointed before."""

    __tablename__ = "alias_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    alias: Mapped[str] = mapped_column(String(64))
    from_version_id: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id"))
    to_version_id: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str | None] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)


class EvalReport(Artifact):
    """Metrics of one evaluation of one artifact (usually a model version), and whether a gate passed."""

    __tablename__ = "eval_reports"

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        # Two foreign keys point at artifacts (id and subject_id): name the inheritance join.
        return {
            "polymorphic_identity": "eval_report",
            "inherit_condition": cls.__table__.c.id == Artifact.__table__.c.id,
        }

    id: Mapped[str] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True)
    subject_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id"), index=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    passed: Mapped[bool | None] = mapped_column(Boolean)


# --------------------------------------------------------------------------------------------------
# Serving, gateway and monitoring records
# --------------------------------------------------------------------------------------------------


class Deployment(Artifact):
    """A model ref served with a given configuration."""

    __tablename__ = "deployments"
    __mapper_args__ = {"polymorphic_identity": "deployment"}

    id: Mapped[str] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True)
    model_ref: Mapped[str] = mapped_column(String(200))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="created")
    endpoint: Mapped[str | None] = mapped_column(String(255))


class ApiKey(Base):
    """An API key, stored only as a hash; ``prefix`` lets people recognise it in lists."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    limits: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # the document groups (RAG access control) this key may read; admins read every group
    groups: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()


class AuditEvent(Base):
    """One request through the gateway: who, what, which model version, how it went."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_at", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"), index=True)
    method: Mapped[str] = mapped_column(String(8))
    route: Mapped[str] = mapped_column(String(255))
    model_version_id: Mapped[str | None] = mapped_column(ForeignKey("artifacts.id"))
    status_code: Mapped[int] = mapped_column(Integer)
    tokens_in: Mapped[int | None] = mapped_column(Integer)
    tokens_out: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    request_text: Mapped[str | None] = mapped_column(Text)
    response_text: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Thread(Base):
    """A conversation Lamina keeps for a key: its messages, and a summary of those folded out of
    the model's context (``lamina.rag.memory``)."""

    __tablename__ = "threads"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"), index=True)
    title: Mapped[str | None] = mapped_column(String(200))
    summary: Mapped[str | None] = mapped_column(Text)
    summarized: Mapped[int] = mapped_column(Integer, default=0)  # messages folded into the summary
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ThreadMessage(Base):
    """One message of a thread, in order."""

    __tablename__ = "thread_messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    thread_id: Mapped[str] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Feedback(Base):
    """A person's judgement of one response (by request id), waiting for review or reuse."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"))
    model_version_id: Mapped[str | None] = mapped_column(ForeignKey("artifacts.id"))
    rating: Mapped[int | None] = mapped_column(Integer)
    label: Mapped[str | None] = mapped_column(String(64))
    comment: Mapped[str | None] = mapped_column(Text)
    correction: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="new", index=True)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("artifacts.id"))
    # a preference: this request's response was preferred over ``other_request_id``'s
    other_request_id: Mapped[str | None] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(16), default="user", server_default="user")
    reviewed_by: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"))
    reviewed_at: Mapped[datetime | None] = mapped_column()


class Job(Base):
    """A unit of background work (a loop round) in a queue any worker process can take. A running
    job's worker beats ``heartbeat_at``; a job whose heartbeat stopped (the worker crashed) is
    taken again, and ``state`` (e.g. the feedback batch it froze) lets it continue, not restart."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    key: Mapped[str] = mapped_column(String(128), index=True)  # what it is for (a model name)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    trigger: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
