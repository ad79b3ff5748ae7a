"""A/B tests: arms are assigned by a stable hash in the declared share, a bad experiment is refused
at start-up, and the sequential test keeps its false-alarm rate when looked at after every vote (a
fixed-sample z-test looked at the same way does not) while still finding a real difference."""

from __future__ import annotations

import math
import random

import pytest

from lamina.core.errors import ConfigError
from lamina.monitoring.ab import msprt_p, sequential
from lamina.serving.experiments import assign, parse

SPLIT = {"name": "dpo", "model": "chat@champion", "arms": {"control": "chat@v1", "treatment": "chat@v2"}}


def test_arms_follow_the_split_and_a_key_always_gets_the_same_arm() -> None:
    (experiment,) = parse([{**SPLIT, "split": 0.3, "by": "request"}])
    arms = [experiment.arm_for(f"req-{i}")[0] for i in range(10_000)]
    assert arms.count("treatment") / len(arms) == pytest.approx(0.3, abs=0.02)
    (by_key,) = parse([{**SPLIT, "by": "key"}])
    first = assign([by_key], "chat@champion", "/v1/chat/completions", "key-7", "req-1")
    assert all(assign([by_key], "chat@champion", "/v1/chat/completions", "key-7", f"req-{i}") == first
               for i in range(50))  # fmt: skip
    assert first[0] in ("chat@v1", "chat@v2") and first[1]["name"] == "dpo"
    assert assign([by_key], "other@champion", "/v1/chat/completions", "key-7", "r") == (
        "other@champion",
        None,
    )
    routed = parse([{**SPLIT, "routes": ["/v1/completions"]}])
    assert assign(routed, "chat@champion", "/v1/chat/completions", "k", "r")[1] is None


def test_a_bad_experiment_is_refused_by_position_and_field() -> None:
    with pytest.raises(ConfigError, match=r"server.experiments.0.arms: .*two arms"):
        parse([{**SPLIT, "arms": {"only": "chat@v1"}}])
    with pytest.raises(ConfigError, match=r"server.experiments.1: chat@champion is already split by 'dpo'"):
        parse([SPLIT, {**SPLIT, "name": "again"}])
    with pytest.raises(ConfigError, match=r"server.experiments.0.split"):
        parse([{**SPLIT, "split": 1.5}])


def z_test_peeking(votes: list[tuple[int, bool]], alpha: float) -> bool:
    """What people do by hand: a two-proportion z-test after every vote, stop when p < alpha."""
    up, n = [0, 0], [0, 0]
    for arm, liked in votes:
        up[arm] += liked
        n[arm] += 1
        if min(n) < 10:
            continue
        pooled = (up[0] + up[1]) / (n[0] + n[1])
        se = math.sqrt(pooled * (1 - pooled) * (1 / n[0] + 1 / n[1])) or 1e-9
        z = abs(up[1] / n[1] - up[0] / n[0]) / se
        if math.erfc(z / math.sqrt(2)) < alpha:
            return True
    return False


def simulate(rates: tuple[float, float], n: int, rng: random.Random) -> list[tuple[int, bool]]:
    out = []
    for _ in range(n):
        arm = rng.random() < 0.5
        out.append((int(arm), rng.random() < rates[int(arm)]))
    return out


def test_the_sequential_test_keeps_its_alpha_under_peeking_and_finds_a_real_difference() -> None:
    rng = random.Random(0)
    same = [simulate((0.6, 0.6), 400, rng) for _ in range(300)]
    false_alarms = sum(sequential(v)["significant"] for v in same) / len(same)
    naive = sum(z_test_peeking(v, 0.05) for v in same) / len(same)
    assert false_alarms <= 0.05 and naive > 2 * 0.05, (false_alarms, naive)
    better = [simulate((0.5, 0.7), 400, rng) for _ in range(100)]
    found = [sequential(v) for v in better]
    assert sum(f["significant"] for f in found) / len(found) >= 0.8
    assert all(f["decided_at_vote"] is None or f["decided_at_vote"] <= 400 for f in found)
    assert msprt_p((5, 9), (9, 10), 0.1) == 1.0  # too few votes: no verdict
