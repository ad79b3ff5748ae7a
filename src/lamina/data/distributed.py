"""Data builds across Ray workers (``build_dataset(..., executor="ray")``, ``lamina data build --ray``).

What runs where, and why the result is the same dataset version as a build in one process:

- The source is read on the driver, in order; it also computes the input fingerprint there.
- The recipe's leading **row-local** steps (``Step.row_local``: each output row depends only on its own
  input row, e.g. normalize, filter, lowercase) run on Ray Data workers, one source batch per task.
  Results come back in source order (``preserve_order``), so every later stage sees the same rows in
  the same order.
- The remaining steps (dedup, augmentation, hooks: they keep state across batches), the splits, the
  shuffle and the commit stay on the driver, as in one process.

Each batch crosses to the workers as one pickled blob, not as Arrow columns: records hold bytes,
nested lists and mixed types that a columnar round trip would change (tuples to lists, ints to
floats), and the result must be identical, not equivalent.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable, Iterator
from typing import Any

from lamina.core.cluster import ensure_ray
from lamina.data.records import Batch
from lamina.data.steps import MAX_DROP_EXAMPLES, Step, StepContext, StepStats, run_steps

log = logging.getLogger(__name__)
WINDOW_BATCHES = 16  # source batches per Ray Data execution: bounds driver memory, keeps workers busy


def split_row_local(steps: list[Step]) -> tuple[list[Step], list[Step]]:
    """(the leading row-local steps, the rest): the first part can run anywhere, in any grouping."""
    n = 0
    while n < len(steps) and steps[n].row_local:
        n += 1
    return steps[:n], steps[n:]


def merge_stats(into: StepStats, part: StepStats) -> None:
    """Add a worker's counts to the driver's, keeping drop examples in source order."""
    into.rows_in += part.rows_in
    into.rows_out += part.rows_out
    into.changed += part.changed
    into.dropped.update(part.dropped)
    for reason, examples in part.examples.items():
        bucket = into.examples.setdefault(reason, [])
        bucket.extend(examples)
        del bucket[MAX_DROP_EXAMPLES:]


def _apply_on_worker(columns: dict[str, Any], steps: list[Step], ctx: StepContext) -> dict[str, Any]:
    """One Ray Data task: run the row-local steps over one source batch."""
    for step in steps:
        step.start(ctx)
    out_blobs, out_stats = [], []
    for blob in columns["batch"]:
        stats = [StepStats(type(s).name) for s in steps]
        kept = run_steps(steps, stats, pickle.loads(blob))
        out_blobs.append(pickle.dumps(kept, protocol=pickle.HIGHEST_PROTOCOL))
        out_stats.append(pickle.dumps(stats, protocol=pickle.HIGHEST_PROTOCOL))
    return {"batch": out_blobs, "stats": out_stats}


def ray_batches(
    batches: Iterable[Batch], steps: list[Step], stats: list[StepStats], ctx: StepContext
) -> Iterator[tuple[Batch, Batch]]:
    """(source batch, batch after ``steps``) in source order, the steps run by Ray Data workers."""
    ray = ensure_ray()
    from ray.data import DataContext

    DataContext.get_current().execution_options.preserve_order = True
    window: list[Batch] = []

    def run(window: list[Batch]) -> Iterator[tuple[Batch, Batch]]:
        items = [{"batch": pickle.dumps(b, protocol=pickle.HIGHEST_PROTOCOL)} for b in window]
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _apply_on_worker, batch_size=1, fn_kwargs={"steps": steps, "ctx": ctx}, num_cpus=1
        )
        results = ds.iter_rows()
        for source, row in zip(window, results, strict=True):
            for into, part in zip(stats, pickle.loads(row["stats"]), strict=True):
                merge_stats(into, part)
            yield source, pickle.loads(row["batch"])

    for batch in batches:
        window.append(batch)
        if len(window) >= WINDOW_BATCHES:
            yield from run(window)
            window = []
    if window:
        yield from run(window)
