"""Demo data shipped inside the package (see data/README.md for sources and licenses)."""

from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
DEMO_TEXT = DATA_DIR / "shakespeare.txt"
DEMO_INSTRUCTIONS = DATA_DIR / "instructions.jsonl"
DEMO_DIGITS = DATA_DIR / "digits"  # IDX images + labels, 1,797 8x8 digits
DEMO_PROMPT_GUARD = DATA_DIR / "prompt-guard-sample.jsonl"  # 380 labelled prompts for the injection rail


def project_docs() -> list[Path]:
    """Lamina's own documentation (README and docs/), which the quickstart indexes for RAG.

    It lives beside the package in a source checkout (``make run`` installs editable); an install
    without the source tree has none, and the quickstart says so instead of indexing nothing.
    """
    root = Path(__file__).resolve().parents[3]
    found = [root / "README.md", root / "docs"]
    return found if all(p.exists() for p in found) and (root / "pyproject.toml").exists() else []
