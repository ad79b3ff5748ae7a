"""One exception hierarchy for the whole platform.

Every error a user can cause is a ``LaminaError``: it says what went wrong (``message``) and how to
fix it (``hint``), and carries the process exit code for the CLI and the HTTP status for the API,
so the CLI and the server render the same error the same way without knowing each type.
"""

from __future__ import annotations

from typing import Any


class LaminaError(Exception):
    """Base class: an error the user can act on. Rendered as one line plus a hint, no traceback."""

    exit_code: int = 1
    http_status: int = 500
    code: str = "lamina_error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (fix: {self.hint})"


class ConfigError(LaminaError):
    """A setting, flag, environment variable or lamina.yaml value is invalid."""

    exit_code = 2
    http_status = 400
    code = "invalid_config"


class WorkspaceError(LaminaError):
    """The workspace is missing, incomplete or corrupt."""

    exit_code = 3
    code = "workspace_error"


class CatalogError(LaminaError):
    """The catalog database cannot be used as it is."""

    exit_code = 4
    http_status = 503
    code = "catalog_error"


class CatalogUnavailable(CatalogError):
    """The catalog URL cannot be reached or opened."""

    code = "catalog_unavailable"


class SchemaMismatch(CatalogError):
    """The catalog's schema revision differs from the one this Lamina was built for."""

    code = "catalog_schema_mismatch"


class StoreError(LaminaError):
    """The artifact store cannot be read or written."""

    exit_code = 5
    http_status = 503
    code = "artifact_store_error"


class ArtifactCorrupt(StoreError):
    """An artifact's files no longer match the content hash recorded when it was committed."""

    code = "artifact_corrupt"


class NotFound(LaminaError):
    """A referenced thing (artifact, model, alias, dataset) does not exist."""

    exit_code = 6
    http_status = 404
    code = "not_found"


class InvalidReference(LaminaError):
    """A reference (``NAME``, ``NAME@vN``, ``NAME@ALIAS``, ``KIND:…``, an id) is malformed or ambiguous."""

    exit_code = 2
    http_status = 400
    code = "invalid_reference"


def validated(model: Any, data: Any, where: str, sep: str = ".") -> Any:
    """``model`` (a pydantic model class) built from ``data``, or one ``ConfigError`` that names the
    setting (``where``) and the field that is wrong: ``rails.input.0.threshold: …``."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"{where}{sep}{field}: {first['msg']}" if field else f"{where}: {first['msg']}"
        ) from None
