"""Long-context copies of rail training rows, so a rail judges what a prompt asks and not its length.

Why: in the shared prompt-injection data every benign prompt is shorter than 240 characters while
two attacks in five are longer than 1,000, so a classifier learns "long means attack" and blocks the
ordinary long prompt (a pasted document with "summarise this"). Training therefore adds copies of
rows placed in a document passage — benign rows become document tasks, attacks hide in or around a
document, as indirect injections do — so length and passage carry no label.

The passages ship with Python and Lamina, nothing is downloaded: the Python reference manual's
topics (``pydoc_data``, technical prose with code) and the bundled Shakespeare sample (literary
prose). ``bench/rails.py`` measures the effect on long benign prompts from a different source
(Wikipedia paragraphs from SQuAD), which training never sees.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

# what people ask of a pasted document (benign rows get one of these, or their own text)
DOCUMENT_TASKS = (
    "Summarise this passage in a few sentences.",
    "What are the main points of the text below?",
    "Translate the following into French.",
    "Fix the grammar and spelling in this text.",
    "Write three quiz questions about this passage.",
    "Explain this to a twelve-year-old.",
    "Give this section a short title.",
    "List every name and term defined below.",
    "Rewrite this more formally.",
    "Is the following text accurate? Point out anything doubtful.",
)
LAYOUTS = (
    "{task}\n\n{passage}",
    "{passage}\n\n{task}",
    'Here is a document:\n"""\n{passage}\n"""\n\n{task}',
    "Context:\n{passage}\n\nQuestion: {task}",
    "{task}\n---\n{passage}\n---",
)
LONG_CHARS = 1000  # rows already this long are left alone: they need no longer copy
SHARE = {"benign": 0.6, "malicious": 0.3}  # per label: the chance a row gets a long copy


@functools.cache
def passages() -> tuple[str, ...]:
    """Paragraph-sized pieces of the bundled corpora (Python's reference topics, Shakespeare)."""
    from pydoc_data.topics import topics

    import lamina

    pieces = [p for text in topics.values() for p in _paragraph_runs(text)]
    shakespeare = Path(lamina.__file__).parent / "demo" / "data" / "shakespeare.txt"
    if shakespeare.exists():
        pieces += _paragraph_runs(shakespeare.read_text(encoding="utf-8"))
    return tuple(pieces)


def _paragraph_runs(text: str, size: int = 600) -> list[str]:
    """Consecutive paragraphs joined until about ``size`` characters (a natural unit to paste)."""
    runs, current = [], ""
    for para in text.split("\n\n"):
        current = f"{current}\n\n{para}" if current else para
        if len(current) >= size:
            runs.append(current.strip())
            current = ""
    return runs


def long_copies(
    texts: list[str], labels: list[str], *, seed: int = 0, share: dict[str, float] | None = None
) -> tuple[list[str], list[str]]:
    """Copies of some rows inside 400–3,000 characters of passage (same label); the rows themselves
    are not returned. Rows of labels not in ``share`` and rows already long are left alone."""
    rng = random.Random(seed)
    pool = passages()
    share = SHARE if share is None else share
    out_texts, out_labels = [], []
    for text, label in zip(texts, labels, strict=True):
        if len(text) >= LONG_CHARS or rng.random() >= share.get(label, 0.0):
            continue
        passage = _passage(rng, pool, rng.randint(400, 3000))
        task = text if label != "benign" or rng.random() < 0.5 else rng.choice(DOCUMENT_TASKS)
        out_texts.append(rng.choice(LAYOUTS).format(task=task, passage=passage))
        out_labels.append(label)
    return out_texts, out_labels


def _passage(rng: random.Random, pool: tuple[str, ...], chars: int) -> str:
    start = rng.randrange(len(pool))
    text = ""
    for piece in pool[start:] + pool[:start]:
        text = f"{text}\n\n{piece}" if text else piece
        if len(text) >= chars:
            break
    return text[:chars].rsplit(" ", 1)[0]
