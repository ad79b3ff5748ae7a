"""Batch inference: a JSONL file of prompts through the engine (continuous batching), results in
input order. Every line is checked before any generation starts, so a bad line 9,000 costs
nothing; the output is written to a temporary file and renamed, so it is never half-written."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lamina.core.errors import ConfigError
from lamina.core.settings import validation_summary
from lamina.serving.engine import Engine
from lamina.serving.sampling import SamplingParams


def read_prompts(path: Path, defaults: dict[str, Any]) -> list[tuple[str, SamplingParams]]:
    jobs = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise ConfigError(f"{path}:{number}: each line needs a string field 'prompt'")
            settings = {k: v for k, v in defaults.items() if v is not None}
            settings.update({k: v for k, v in row.items() if k != "prompt" and k != "id"})
            try:
                jobs.append((row["prompt"], SamplingParams(**settings)))
            except ValidationError as exc:
                raise ConfigError(f"{path}:{number}: {validation_summary(exc, '')}") from None
    if not jobs:
        raise ConfigError(f"{path} has no prompts")
    return jobs


def run_batch(
    model: Any,
    tokenizer: Any,
    input_path: Path,
    output_path: Path,
    defaults: dict[str, Any],
    *,
    on_total: Callable[[int], None] | None = None,
    on_done: Callable[[], None] | None = None,
    max_batch: int = 32,
) -> dict[str, int]:
    jobs = read_prompts(input_path, defaults)
    if on_total:
        on_total(len(jobs))
    engine = Engine(model, tokenizer, max_batch=max_batch, max_waiting=len(jobs) + 1)
    requests = [
        engine.submit(prompt, params, request_id=f"line-{i}") for i, (prompt, params) in enumerate(jobs)
    ]
    engine.start()
    tmp = output_path.with_name(output_path.name + ".tmp")
    tokens = 0
    try:
        with tmp.open("w", encoding="utf-8") as out:
            for (prompt, _), request in zip(jobs, requests, strict=True):
                events = list(request.events())
                tokens += len(request.generated)
                row = {
                    "prompt": prompt,
                    "text": "".join(e.text for e in events),
                    "finish_reason": events[-1].finish_reason,
                    "completion_tokens": len(request.generated),
                }
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                if on_done:
                    on_done()
        os.replace(tmp, output_path)
    finally:
        engine.close()
        tmp.unlink(missing_ok=True)
    return {"prompts": len(jobs), "tokens": tokens}
