"""Prompt optimisation: score template variants on an eval set, keep every score, promote the best.

The candidates, as DSPy builds them: the variants a person wrote; *mutations* of each (an
instruction line added before it, from a fixed list); and *few-shot* versions (worked examples
from the training half of the eval set, rendered by the template itself with their expected
answers, put before it). Every candidate is saved as a template version, every one is scored on
the other half by the metric, the scores are recorded as an ``eval_report`` with lineage to each
candidate, and the best is promoted to ``NAME@champion`` (serving resolves it, e.g. as a ``rag``
template) unless the champion already scores as well.

Rows of the eval set: ``{"inputs": {variable: value, ...}, "expected": "text"}``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lamina.core.catalog.models import Artifact
from lamina.core.errors import ConfigError, LaminaError
from lamina.core.workspace import Workspace
from lamina.rag import prompts
from lamina.rag.evaluate import token_f1, words

MUTATIONS = (
    "Answer in a few words.",
    "Answer with only the answer, nothing else.",
    "Read carefully, then answer precisely.",
    "Use only the information given.",
)


def _words(text: str) -> str:
    return " ".join(words(text))


def exact(output: str, expected: str) -> float:
    return float(_words(output) == _words(expected))


def contains(output: str, expected: str) -> float:
    return float(_words(expected) in _words(output))


METRICS: dict[str, Callable[[str, str], float]] = {"exact": exact, "contains": contains, "f1": token_f1}


@dataclass
class Scored:
    template: prompts.Template
    origin: str  # "given", "mutation: …", "few-shot: k examples"
    score: float
    outputs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # rows it could not be asked (scored 0)


@dataclass
class Report:
    scored: list[Scored]
    best: Scored
    promoted: bool
    previous: str | None  # the champion's version id before
    report: Artifact | None = None


def check_rows(rows: list[dict[str, Any]]) -> None:
    for number, row in enumerate(rows, 1):
        if not isinstance(row.get("inputs"), dict) or not isinstance(row.get("expected"), str):
            raise ConfigError(f"eval row {number} needs 'inputs' (an object) and 'expected' (text)")
    if len(rows) < 2:
        raise ConfigError("the eval set needs at least 2 rows (half for examples, half for scoring)")


def candidates(
    ws: Workspace, name: str, texts: list[str], train: list[dict[str, Any]], *, mutations: int,
    shots: tuple[int, ...], seed: int,
) -> list[tuple[prompts.Template, str]]:  # fmt: skip
    """Every candidate saved as a version of ``name`` (identical texts share a version)."""
    made: list[tuple[prompts.Template, str]] = []
    seen: set[str] = set()

    def add(text: str, origin: str) -> None:
        template = prompts.save(ws, name, text, description=f"prompt optimisation candidate ({origin})")
        if template.id not in seen:
            seen.add(template.id)
            made.append((template, origin))

    rng = random.Random(seed)
    for index, text in enumerate(texts):
        base = prompts.used_variables(text)
        if index and base != prompts.used_variables(texts[0]):
            raise ConfigError(
                "every variant must use the same variables", hint=f"the first uses {sorted(base)}"
            )
        add(text, "given")
        for instruction in MUTATIONS[:mutations]:
            add(f"{instruction}\n{text}", f"mutation: {instruction}")
        template = prompts.Template("", "", text, tuple(sorted(base)))
        for k in shots:
            if k > len(train):
                continue
            demos = rng.sample(train, k)
            shown = "\n\n".join(f"{template.render(**d['inputs'])} {d['expected']}" for d in demos)
            add(f"{{% raw %}}{shown}{{% endraw %}}\n\n{text}", f"few-shot: {k} example(s)")
    return made


def optimize(
    ws: Workspace, name: str, texts: list[str], rows: list[dict[str, Any]], model: str,
    generate: Callable[[str, list[dict[str, str]], dict[str, Any]], str], *, metric: str = "f1",
    mutations: int = 2, shots: tuple[int, ...] = (1, 2), max_tokens: int = 32, seed: int = 0,
    alias: str = "champion", progress: Callable[[str], None] | None = None,
) -> Report:  # fmt: skip
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}", hint=f"metrics: {', '.join(METRICS)}")
    if not texts:
        raise ConfigError("give at least one template variant")
    check_rows(rows)
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    train = [rows[i] for i in order[: len(rows) // 2]]
    held_out = [rows[i] for i in order[len(rows) // 2 :]]
    scored = []
    for template, origin in candidates(ws, name, texts, train, mutations=mutations, shots=shots, seed=seed):
        outputs, errors = [], []
        for row in held_out:
            messages = [{"role": "user", "content": template.render(**row["inputs"])}]
            try:
                outputs.append(generate(model, messages, {"max_tokens": max_tokens, "temperature": 0.0}))
            except LaminaError as exc:  # e.g. a few-shot prompt longer than the model's context: scores 0
                outputs.append("")
                errors.append(exc.message)
        score = sum(METRICS[metric](o, r["expected"]) for o, r in zip(outputs, held_out, strict=True)) / len(
            held_out
        )
        scored.append(Scored(template, origin, score, outputs, errors))
        if progress is not None:
            progress(f"{template.ref} ({origin}): {metric} {score:.3f}")
    best = max(scored, key=lambda s: s.score)  # the first of equals: given before generated
    previous = _champion_score(ws, name, alias, scored)
    promoted = previous is None or best.score > previous[1]
    before = prompts.set_alias(ws, best.template, alias) if promoted else (previous[0] if previous else None)
    report = _record(ws, name, model, metric, scored, best, promoted, held_out)
    return Report(scored, best, promoted, before, report)


def _champion_score(ws: Workspace, name: str, alias: str, scored: list[Scored]) -> tuple[str, float] | None:
    """The current champion's id and its score in this run (it is among the candidates when it is
    one of the variants; otherwise it has no comparable score and the best is promoted)."""
    try:
        champion = prompts.load(ws, f"{name}@{alias}")
    except Exception:  # no champion yet
        return None
    for s in scored:
        if s.template.id == champion.id:
            return champion.id, s.score
    return None


def _record(ws: Workspace, name: str, model: str, metric: str, scored: list[Scored], best: Scored,
            promoted: bool, held_out: list[dict[str, Any]]) -> Artifact:  # fmt: skip
    from lamina.core.catalog.models import EvalReport

    report = EvalReport(
        name=f"{name}-prompt-optimisation", subject_id=best.template.id,
        metrics={metric: best.score, "candidates": len(scored)}, passed=promoted,
        description=f"{len(scored)} candidates of {name} by {metric} on {len(held_out)} rows with {model}",
        meta={
            "model": model, "metric": metric, "rows": len(held_out), "best": best.template.ref,
            "promoted": promoted,
            "candidates": [
                {"ref": s.template.ref, "origin": s.origin, "score": s.score, "errors": s.errors[:3]}
                for s in scored
            ],
        },
    )  # fmt: skip
    return ws.record(report, [(s.template.id, "evaluated") for s in scored])
