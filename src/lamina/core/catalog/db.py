"""Catalog engines and schema revisions.

Opening a catalog checks its Alembic revision against the migrations shipped with this Lamina:
an older catalog is refused until ``lamina upgrade`` migrates it, and a catalog written by a
newer Lamina is refused outright, so an old binary never writes into a schema it does not know.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError, OperationalError

from lamina.core.errors import CatalogUnavailable, ConfigError, SchemaMismatch, WorkspaceError
from lamina.core.settings import redact_url

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VERSION_TABLE = "lamina_alembic_version"  # also set in migrations/env.py
CONNECT_TIMEOUT_S = 5
SQLITE_BUSY_TIMEOUT_MS = 30_000
MIGRATION_LOCK = 0x4C414D494E41  # "LAMINA": the PostgreSQL advisory lock that serialises migrations


def create_catalog_engine(url: str) -> Engine:
    """An engine for ``url`` with Lamina's settings: WAL + foreign keys on SQLite, short connect timeouts."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"catalog_url {url!r} is not a database URL",
            hint="use e.g. sqlite:///lamina.db or postgresql+psycopg://user:pass@host/db",
        ) from exc
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        kwargs["pool_pre_ping"] = True
    elif parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except NoSuchModuleError as exc:
        raise ConfigError(f"catalog_url {redact_url(url)!r}: unknown database dialect") from exc
    except ModuleNotFoundError as exc:
        extra = "postgres" if parsed.get_backend_name() == "postgresql" else None
        raise ConfigError(
            f"catalog_url {redact_url(url)!r} needs the Python driver {exc.name!r}, which is not installed",
            hint=f"pip install 'lamina[{extra}]'" if extra else f"pip install {exc.name}",
        ) from exc
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute(
        "PRAGMA synchronous=NORMAL"
    )  # durable at each checkpoint, safe against corruption in WAL mode
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other engines and in-memory databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, f"migrations must have one head, found {heads}"
    return heads[0]


@dataclass(frozen=True)
class SchemaState:
    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _connect_error(url: str, exc: Exception) -> CatalogUnavailable:
    detail = (
        str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    )
    return CatalogUnavailable(
        f"cannot open the catalog at {redact_url(url)}: {detail}",
        hint="check catalog_url (flag, LAMINA_CATALOG_URL or lamina.yaml) and that the database is up",
    )


def schema_state(engine: Engine) -> SchemaState:
    """Read the catalog's revision; fail clearly if the database cannot be reached or read."""
    url = engine.url.render_as_string(hide_password=False)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE}
            ).get_current_revision()
            has_tables = bool(set(sa.inspect(conn).get_table_names()) - {VERSION_TABLE, "alembic_version"})
    except OperationalError as exc:
        raise _connect_error(url, exc) from exc
    except DatabaseError as exc:  # e.g. "file is not a database"
        raise WorkspaceError(
            f"the catalog at {redact_url(url)} is corrupt or not a Lamina catalog: "
            f"{getattr(exc, 'orig', exc)}",
            hint="restore it from a backup, or move it away and run 'lamina init' to start an empty catalog",
        ) from exc
    if current is None and has_tables:
        raise WorkspaceError(
            f"the database at {redact_url(url)} has tables but no Lamina schema revision",
            hint="point catalog_url at an empty database or an existing Lamina catalog",
        )
    return SchemaState(current=current, head=head_revision())


def check_schema(engine: Engine) -> SchemaState:
    """Refuse catalogs that are empty, older (upgrade first) or newer (upgrade Lamina) than this code."""
    state = schema_state(engine)
    where = redact_url(engine.url.render_as_string(hide_password=False))
    if state.current is None:
        raise WorkspaceError(
            f"the catalog at {where} is empty (no schema)", hint="run 'lamina init' to create the schema"
        )
    if state.up_to_date:
        return state
    script = ScriptDirectory.from_config(alembic_config())
    try:
        known = script.get_revision(state.current) is not None
    except CommandError:
        known = False
    if not known:
        raise SchemaMismatch(
            f"the catalog at {where} has schema revision {state.current!r}, newer than this Lamina knows "
            f"(latest here: {state.head!r})",
            hint="upgrade Lamina (pip install -U lamina); this version will not write to a newer catalog",
        )
    raise SchemaMismatch(
        f"the catalog at {where} has schema revision {state.current!r}; this Lamina needs {state.head!r}",
        hint="run 'lamina upgrade' to migrate it (back it up first if it matters)",
    )


def upgrade_schema(engine: Engine, target: str = "head") -> tuple[str | None, str]:
    """Migrate the catalog to ``target``. Returns (revision before, revision after)."""
    before = schema_state(engine).current
    cfg = alembic_config()
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                # Pods of one deployment start together and each runs `lamina init`: the lock makes
                # them migrate one after another (the later ones then find the schema current).
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, target)
    except OperationalError as exc:
        raise _connect_error(engine.url.render_as_string(hide_password=False), exc) from exc
    except CommandError as exc:
        raise SchemaMismatch(f"cannot migrate the catalog: {exc}", hint="upgrade Lamina") from exc
    after = schema_state(engine).current
    assert after is not None
    if before != after:
        log.info("catalog migrated", extra={"from_revision": before, "to_revision": after})
    return before, after
