"""Documents in: every format keeps its text, its structure and exact spans; bad files say so."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.rag.chunking import chunk
from lamina.rag.documents import DocumentError, discover, load


def test_markdown_blocks_know_their_headings_and_spans(corpus: Path) -> None:
    document = load(corpus / "travel.md", groups=["staff"])
    assert document.title == "Travel policy" and document.groups == ("staff",)
    paris = next(b for b in document.blocks if "Paris" in b.text)
    assert paris.headings == ("Travel policy", "Hotels")
    assert document.text[paris.start : paris.end] == paris.text


def test_html_drops_scripts_and_reads_lists_under_headings(corpus: Path) -> None:
    document = load(corpus / "leave.html")
    assert "var x" not in document.text
    item = next(b for b in document.blocks if b.text.startswith("Ten weeks"))
    assert item.headings == ("Leave", "Parental leave")


def test_docx_headings_and_pdf_pages(corpus: Path) -> None:
    handbook = load(corpus / "security.docx")
    block = next(b for b in handbook.blocks if "fourteen" in b.text)
    assert block.headings == ("Security handbook", "Passwords")
    pdf = load(corpus / "warehouse.pdf")
    pages = {b.page: b.text for b in pdf.blocks}
    assert "warehouse opens" in pages[1] and "Forklifts" in pages[2]


def test_bad_documents_get_one_clear_error_each(tmp_path: Path) -> None:
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.7\nnot really a pdf")
    (tmp_path / "empty.md").write_text("\n\n   \n")
    (tmp_path / "broken.docx").write_bytes(b"PK\x03\x04 not a zip")
    (tmp_path / "data.xlsx").write_bytes(b"x")
    with pytest.raises(DocumentError, match="not a readable PDF"):
        load(tmp_path / "broken.pdf")
    with pytest.raises(DocumentError, match="has no text"):
        load(tmp_path / "empty.md")
    with pytest.raises(DocumentError, match="not a readable .docx"):
        load(tmp_path / "broken.docx")
    with pytest.raises(DocumentError, match="unsupported extension"):
        load(tmp_path / "data.xlsx")
    with pytest.raises(DocumentError, match="does not exist"):
        discover([tmp_path / "missing"])


def test_chunks_fit_the_model_keep_spans_and_overlap(corpus: Path) -> None:
    from lamina.models.text_encoder import load_encoder

    tokenizer = load_encoder().tokenizer
    long_text = "\n\n".join(f"Paragraph {i} says that rule {i} applies to team {i % 7}." for i in range(60))
    (corpus / "rules.md").write_text("# Rules\n\n" + long_text + "\n\n# Appendix\n\nThe end.")
    document = load(corpus / "rules.md", groups=["ops"])
    chunks = chunk(document, tokenizer, max_tokens=64, overlap=8)
    assert len(chunks) > 5
    for c in chunks:
        assert document.text[c.start : c.end] == c.text
        assert len(tokenizer(c.text, add_special_tokens=False)["input_ids"]) <= 64
        assert c.groups == ("ops",)
    rules = [c for c in chunks if c.headings == ("Rules",)]
    assert all(a.start < b.start < a.end for a, b in zip(rules, rules[1:], strict=False))  # overlapping
    assert chunks[-1].headings == ("Appendix",) and chunks[-1].text == "The end."  # sections never mix
    assert len({c.id for c in chunks}) == len(chunks)
