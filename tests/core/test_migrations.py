"""The migrations and the ORM models agree, on SQLite and on a real PostgreSQL server."""

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from lamina.core.catalog import Catalog, Source
from lamina.core.catalog.db import (
    VERSION_TABLE,
    alembic_config,
    check_schema,
    create_catalog_engine,
    head_revision,
    schema_state,
    upgrade_schema,
)
from lamina.core.catalog.models import Base
from lamina.core.errors import SchemaMismatch, WorkspaceError


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cat.db'}"
    return request.getfixturevalue("postgres_url")


def migrate(url: str, target: str) -> None:
    engine = create_catalog_engine(url)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, target)
    engine.dispose()


def test_one_head_and_models_match_migrations(db_url: str) -> None:
    engine = create_catalog_engine(db_url)
    assert upgrade_schema(engine) == (None, head_revision())
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
        )
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == [], f"models.py and the migrations disagree; write a migration for: {diff}"


def test_old_catalog_is_refused_then_upgraded_keeping_data(db_url: str) -> None:
    migrate(db_url, "0001")
    engine = create_catalog_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO artifacts (id, kind, name, version, size_bytes, file_count, meta, created_at)"
                " VALUES ('src-00000000000000a1', 'source', 'old', 1, 5, 1, '{}', CURRENT_TIMESTAMP)"
            )
        )
    with pytest.raises(SchemaMismatch, match="revision '0001'.*needs '0007'") as info:
        check_schema(engine)
    assert "lamina upgrade" in (info.value.hint or "")
    assert upgrade_schema(engine) == ("0001", "0007")
    engine.dispose()
    catalog = Catalog(db_url)
    assert catalog.resolve("old").id == "src-00000000000000a1"
    assert catalog.add(Source(name="old")).version == 2
    catalog.close()


def test_newer_catalog_is_refused(db_url: str) -> None:
    engine = create_catalog_engine(db_url)
    upgrade_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE lamina_alembic_version SET version_num = '9999_future'"))
    with pytest.raises(SchemaMismatch, match="newer than this Lamina knows") as info:
        check_schema(engine)
    assert "upgrade Lamina" in (info.value.hint or "")
    with pytest.raises(SchemaMismatch):
        Catalog(db_url)
    engine.dispose()


def test_downgrade_to_nothing_and_back(db_url: str) -> None:
    engine = create_catalog_engine(db_url)
    upgrade_schema(engine)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert schema_state(engine).current is None
    upgrade_schema(engine)
    assert schema_state(engine).up_to_date
    engine.dispose()


def test_foreign_tables_are_not_mistaken_for_a_catalog(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    engine = create_catalog_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id INTEGER)"))
    with pytest.raises(WorkspaceError, match="no Lamina schema revision"):
        schema_state(engine)
    engine.dispose()
