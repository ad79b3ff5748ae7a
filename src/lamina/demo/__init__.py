"""Demo data shipped inside the package (see data/README.md for sources and licenses)."""

from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
DEMO_TEXT = DATA_DIR / "shakespeare.txt"
DEMO_INSTRUCTIONS = DATA_DIR / "instructions.jsonl"
DEMO_DIGITS = DATA_DIR / "digits"  # IDX images + labels, 1,797 8x8 digits
