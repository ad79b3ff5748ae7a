"""Per-row sampling settings, penalties, log-probabilities and stop sequences."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from lamina.serving.sampling import SamplingParams, StopMatcher, apply_penalties, sample


def gens(n: int, seed: int = 0) -> list[torch.Generator | None]:
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def test_each_row_uses_its_own_settings() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]] * 3)
    params = [SamplingParams(temperature=0), SamplingParams(top_k=2), SamplingParams(top_p=0.5)]
    counts = torch.zeros(3, 4, dtype=torch.long)
    for seed in range(200):
        out = sample(logits, params, gens(3, seed))
        counts[torch.arange(3), out.tokens] += 1
    assert counts[0].tolist() == [200, 0, 0, 0]  # greedy
    assert counts[1, 2:].sum() == 0 and counts[1, 1] > 20  # top-k 2: only the best two
    assert counts[2].tolist() == [200, 0, 0, 0]  # token 0 alone holds 0.61 >= 0.5 of the mass


def test_same_seed_same_tokens_and_temperature_spreads_them() -> None:
    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(1))
    a = [int(sample(logits, [SamplingParams(seed=7)], gens(1, 7)).tokens) for _ in range(5)]
    b = [int(sample(logits, [SamplingParams(seed=7)], gens(1, 7)).tokens) for _ in range(5)]
    assert a == b
    cold = {int(sample(logits, [SamplingParams(temperature=0.05)], gens(1, s)).tokens) for s in range(50)}
    hot = {int(sample(logits, [SamplingParams(temperature=2.0)], gens(1, s)).tokens) for s in range(50)}
    assert len(cold) <= 2 < len(hot)


def test_logprobs_are_the_model_distribution() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0]])
    out = sample(logits, [SamplingParams(temperature=0, logprobs=2)], [None])
    expected = torch.log_softmax(logits, -1)[0]
    assert int(out.tokens) == 0 and float(out.logprobs) == pytest.approx(float(expected[0]))
    assert [i for i, _ in out.top[0]] == [0, 1] and out.top[0][1][1] == pytest.approx(float(expected[1]))


def test_penalties() -> None:
    logits = torch.tensor([[2.0, -2.0, 1.0]] * 3)
    seen = torch.tensor([[1, 1, 0]] * 3)
    generated = torch.tensor([[2, 0, 0]] * 3)
    params = [
        SamplingParams(repetition_penalty=2.0),
        SamplingParams(frequency_penalty=0.5),
        SamplingParams(presence_penalty=1.0),
    ]
    out = apply_penalties(logits, seen, generated, params)
    assert out[0].tolist() == [1.0, -4.0, 1.0]  # positive logits divided, negative multiplied
    assert out[1].tolist() == [1.0, -2.0, 1.0]  # 2 uses x 0.5
    assert out[2].tolist() == [1.0, -2.0, 1.0]  # used at all: -1


@pytest.mark.parametrize(
    "bad",
    [
        {"temperature": 3},
        {"top_p": 0},
        {"max_tokens": 0},
        {"n": 17},
        {"logprobs": 21},
        {"frequency_penalty": 2.5},
        {"stop": ["a", "b", "c", "d", "e"]},
        {"stop": [""]},
        {"best_of": 2},
    ],
)
def test_out_of_range_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        SamplingParams(**bad)


def test_stop_matcher_holds_back_possible_starts() -> None:
    m = StopMatcher(["\n\n", "END"])
    assert m.feed("Hello E") == ("Hello ", False)  # "E" might start END
    assert m.feed("N") == ("", False)
    assert m.feed("X more") == ("ENX more", False)
    assert m.feed(" text\n") == (" text", False)
    assert m.feed("\nignored") == ("", True)
    m2 = StopMatcher(["stop"])
    assert m2.feed("a sto") == ("a ", False) and m2.flush() == "sto"
    assert StopMatcher([]).feed("anything") == ("anything", False)
    assert SamplingParams(stop="x").stop == ["x"]


def test_top_k_then_top_p_keep_the_renormalised_nucleus() -> None:
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]])
    params = [SamplingParams(top_k=3, top_p=0.8)]
    # within the top 3 the probabilities are 0.665, 0.245, 0.090: 0.8 is reached by the first two
    counts = torch.zeros(5)
    for seed in range(400):
        counts[int(sample(logits, params, gens(1, seed)).tokens)] += 1
    assert counts[2:].sum() == 0 and counts[1] > 0
    assert abs(float(counts[0]) / 400 - 0.665 / 0.910) < 0.07
