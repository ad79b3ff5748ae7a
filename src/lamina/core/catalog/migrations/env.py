"""Alembic environment. Lamina always hands it an open connection (``config.attributes``), so the
same migrations run from ``lamina init``/``lamina upgrade``, from tests and on any engine."""

from alembic import context

from lamina.core.catalog.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable by running the alembic CLI by hand
    raise RuntimeError("run migrations through 'lamina upgrade', which passes a connection")

context.configure(
    connection=connection,
    # Our own version table: tools that share the catalog database (Optuna's study storage) keep
    # theirs in Alembic's default ``alembic_version``.
    version_table="lamina_alembic_version",
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table instead
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
