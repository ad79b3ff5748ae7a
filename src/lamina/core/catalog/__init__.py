"""The catalog: SQLAlchemy models, Alembic migrations and the API other layers use."""

from lamina.core.catalog.catalog import Catalog, new_artifact_id
from lamina.core.catalog.models import (
    AliasEvent,
    ApiKey,
    Artifact,
    AuditEvent,
    Dataset,
    DatasetVersion,
    Deployment,
    EvalReport,
    Feedback,
    FeedbackBatch,
    LineageEdge,
    Model,
    ModelAlias,
    ModelVersion,
    Run,
    Source,
    VectorIndex,
)

__all__ = [
    "AliasEvent",
    "ApiKey",
    "Artifact",
    "AuditEvent",
    "Catalog",
    "Dataset",
    "DatasetVersion",
    "Deployment",
    "EvalReport",
    "Feedback",
    "FeedbackBatch",
    "LineageEdge",
    "Model",
    "ModelAlias",
    "ModelVersion",
    "Run",
    "Source",
    "VectorIndex",
    "new_artifact_id",
]
