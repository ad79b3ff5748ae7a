from collections import Counter

import numpy as np
import pytest
from pydantic import ValidationError

from lamina.data.recipe import SplitSpec
from lamina.data.splits import assign_build, assign_by_key, row_key


def keys(n: int, seed: int = 0) -> np.ndarray:
    return np.asarray([row_key(seed, str(i).encode()) for i in range(n)], dtype=np.uint64)


def test_random_split_is_exact_and_seeded() -> None:
    spec = SplitSpec(fractions={"val": 0.1, "test": 0.2})
    a = assign_build(spec, keys(1000), None)
    assert Counter(a.tolist()) == {0: 700, 1: 100, 2: 200}
    assert (assign_build(spec, keys(1000), None) == a).all()
    assert not (assign_build(spec, keys(1000, seed=1), None) == a).all()


def test_stratified_keeps_class_balance() -> None:
    labels = ["a"] * 900 + ["b"] * 100
    out = assign_build(SplitSpec(fractions={"val": 0.2}, by="stratified", field="label"), keys(1000), labels)
    val = Counter(label for label, s in zip(labels, out, strict=True) if s == 1)
    assert val == {"a": 180, "b": 20}


def test_groups_never_straddle_splits() -> None:
    groups = [f"user{i // 7}" for i in range(700)]
    out = assign_build(SplitSpec(fractions={"val": 0.25}, by="group", field="user"), keys(700), groups)
    by_group: dict[str, set[int]] = {}
    for group, s in zip(groups, out, strict=True):
        by_group.setdefault(group, set()).add(int(s))
    assert all(len(v) == 1 for v in by_group.values())
    assert 0.2 <= (out == 1).mean() <= 0.3


def test_appended_rows_are_placed_stably() -> None:
    spec = SplitSpec(fractions={"val": 0.5})
    placed = [assign_by_key(spec, int(k)) for k in keys(2000)]
    assert placed == [assign_by_key(spec, int(k)) for k in keys(2000)]
    assert 0.45 < placed.count("val") / 2000 < 0.55


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fractions": {"train": 0.5}}, "train"),
        ({"fractions": {"val": 1.5}}, "fraction"),
        ({"fractions": {"val": 0.6, "test": 0.5}}, "add up"),
        ({"by": "stratified"}, "needs 'field'"),
    ],
)
def test_bad_split_specs(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SplitSpec(**kwargs)
