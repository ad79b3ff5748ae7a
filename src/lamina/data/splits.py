"""Split assignment: seeded, exact for a build, stable for appended rows.

A build assigns by rank: every row gets a seeded random key; ``random`` gives the lowest keys to
the first non-train split and so on (exact fractions); ``stratified`` does the same within each
label; ``group`` ranks whole groups so no group is in two splits. Rows appended later are placed by
comparing their key with the same cumulative fractions, so they never move earlier rows.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import xxhash

from lamina.data.recipe import SplitSpec

_MAX = float(2**64)


def row_key(seed: int, identity: bytes) -> int:
    """A seeded pseudo-random 64-bit key for a row (or a group)."""
    return xxhash.xxh3_64_intdigest(identity, seed=seed)


def split_names(spec: SplitSpec) -> list[str]:
    return ["train", *spec.fractions]


def _cumulative(spec: SplitSpec) -> list[tuple[str, float]]:
    total, bounds = 0.0, []
    for name, frac in spec.fractions.items():
        total += frac
        bounds.append((name, total))
    return bounds


def assign_by_key(spec: SplitSpec, key: int) -> str:
    """Stable placement of one row (used for appends)."""
    u = key / _MAX
    for name, bound in _cumulative(spec):
        if u < bound:
            return name
    return "train"


def assign_build(spec: SplitSpec, keys: np.ndarray, strata: list[Any] | None) -> np.ndarray:
    """Split index per row (0 = train, i = the i-th of ``spec.fractions``), exact within each stratum."""
    n = len(keys)
    out = np.zeros(n, dtype=np.int16)
    if not spec.fractions or n == 0:
        return out
    if spec.by == "group":
        assert strata is not None
        return _assign_groups(spec, keys, strata)
    buckets: dict[Any, list[int]] = defaultdict(list)
    if spec.by == "stratified":
        assert strata is not None
        for i, label in enumerate(strata):
            buckets[label].append(i)
    else:
        buckets[None] = list(range(n))
    for members in buckets.values():
        idx = np.asarray(members, dtype=np.int64)
        order = idx[np.argsort(keys[idx], kind="stable")]
        start = 0
        for split_index, frac in enumerate(spec.fractions.values(), start=1):
            count = int(round(frac * len(order)))
            out[order[start : start + count]] = split_index
            start += count
    return out


def _assign_groups(spec: SplitSpec, keys: np.ndarray, groups: list[Any]) -> np.ndarray:
    members: dict[Any, list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        members[group].append(i)
    ordered = sorted(members, key=lambda g: row_key(spec.seed, repr(g).encode()))
    n = len(keys)
    targets = [(i, frac * n) for i, frac in enumerate(spec.fractions.values(), start=1)]
    out = np.zeros(n, dtype=np.int16)
    target_index, filled = 0, 0
    for group in ordered:
        if target_index >= len(targets):
            break
        split_index, want = targets[target_index]
        out[members[group]] = split_index
        filled += len(members[group])
        if filled >= want:
            target_index, filled = target_index + 1, 0
    return out
