"""Catalog spine: artifacts, lineage, datasets, runs, models and aliases, eval reports.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types used here: a migration must not change when models.py does.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Id = sa.String(length=40)
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("id", Id, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("uri", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.String(length=80), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("file_count", sa.Integer(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=True),
        sa.CheckConstraint("version >= 1", name=op.f("ck_artifacts_version_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
        sa.UniqueConstraint("kind", "name", "version", name="uq_artifacts_kind_name_version"),
    )
    op.create_index("ix_artifacts_content_hash", "artifacts", ["content_hash"])
    op.create_index(op.f("ix_artifacts_kind"), "artifacts", ["kind"])

    op.create_table(
        "lineage_edges",
        sa.Column("child_id", Id, nullable=False),
        sa.Column("parent_id", Id, nullable=False),
        sa.Column("relation", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["child_id"],
            ["artifacts.id"],
            name=op.f("fk_lineage_edges_child_id_artifacts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["artifacts.id"],
            name=op.f("fk_lineage_edges_parent_id_artifacts"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("child_id", "parent_id", "relation", name=op.f("pk_lineage_edges")),
    )
    op.create_index(op.f("ix_lineage_edges_parent_id"), "lineage_edges", ["parent_id"])

    op.create_table(
        "datasets",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", Stamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("name", name=op.f("uq_datasets_name")),
    )
    op.create_table(
        "dataset_versions",
        sa.Column("id", Id, nullable=False),
        sa.Column("dataset_id", BigId, nullable=False),
        sa.Column("fingerprint", sa.String(length=80), nullable=True),
        sa.Column("num_rows", sa.BigInteger(), nullable=True),
        sa.Column("splits", sa.JSON(), nullable=False),
        sa.Column("schema", sa.JSON(), nullable=False),
        sa.Column("recipe", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_dataset_versions_dataset_id_datasets")
        ),
        sa.ForeignKeyConstraint(
            ["id"], ["artifacts.id"], name=op.f("fk_dataset_versions_id_artifacts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_versions")),
    )
    op.create_index(op.f("ix_dataset_versions_dataset_id"), "dataset_versions", ["dataset_id"])
    op.create_index(op.f("ix_dataset_versions_fingerprint"), "dataset_versions", ["fingerprint"])

    op.create_table(
        "runs",
        sa.Column("id", Id, nullable=False),
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("started_at", Stamp, nullable=True),
        sa.Column("ended_at", Stamp, nullable=True),
        sa.Column("tracking_run_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["id"], ["artifacts.id"], name=op.f("fk_runs_id_artifacts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )

    op.create_table(
        "models",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("family", sa.String(length=32), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", Stamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("name", name=op.f("uq_models_name")),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", Id, nullable=False),
        sa.Column("model_id", BigId, nullable=False),
        sa.Column("family", sa.String(length=32), nullable=True),
        sa.Column("run_id", Id, nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["id"], ["artifacts.id"], name=op.f("fk_model_versions_id_artifacts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_model_versions_model_id_models")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_model_versions_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
    )
    op.create_index(op.f("ix_model_versions_model_id"), "model_versions", ["model_id"])

    op.create_table(
        "model_aliases",
        sa.Column("model_id", BigId, nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("version_id", Id, nullable=False),
        sa.Column("updated_at", Stamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_model_aliases_model_id_models"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["version_id"], ["model_versions.id"], name=op.f("fk_model_aliases_version_id_model_versions")
        ),
        sa.PrimaryKeyConstraint("model_id", "alias", name=op.f("pk_model_aliases")),
    )
    op.create_table(
        "alias_events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("model_id", BigId, nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("from_version_id", Id, nullable=True),
        sa.Column("to_version_id", Id, nullable=True),
        sa.Column("at", Stamp, nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["from_version_id"],
            ["model_versions.id"],
            name=op.f("fk_alias_events_from_version_id_model_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_alias_events_model_id_models"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["to_version_id"],
            ["model_versions.id"],
            name=op.f("fk_alias_events_to_version_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alias_events")),
    )
    op.create_index(op.f("ix_alias_events_model_id"), "alias_events", ["model_id"])

    op.create_table(
        "eval_reports",
        sa.Column("id", Id, nullable=False),
        sa.Column("subject_id", Id, nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(
            ["id"], ["artifacts.id"], name=op.f("fk_eval_reports_id_artifacts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["artifacts.id"], name=op.f("fk_eval_reports_subject_id_artifacts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eval_reports")),
    )
    op.create_index(op.f("ix_eval_reports_subject_id"), "eval_reports", ["subject_id"])


def downgrade() -> None:
    for table in (
        "eval_reports",
        "alias_events",
        "model_aliases",
        "model_versions",
        "models",
        "runs",
        "dataset_versions",
        "datasets",
        "lineage_edges",
        "artifacts",
    ):
        op.drop_table(table)
