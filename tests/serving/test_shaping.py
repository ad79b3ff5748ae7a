"""Stream shaping: events that arrive together go out as one chunk per choice."""

from __future__ import annotations

from lamina.serving.engine import TokenEvent
from lamina.serving.shaping import coalesce


def test_events_that_arrive_together_become_one_per_choice_in_order() -> None:
    batch = [
        (0, TokenEvent("He", token_id=1)),
        (1, TokenEvent("Wo", token_id=2)),
        (0, TokenEvent("llo", token_id=3)),
        (1, TokenEvent("rld", token_id=4, finish_reason="length")),
        (0, TokenEvent("!", token_id=5, finish_reason="stop")),
    ]
    merged = coalesce(batch)
    got = [(i, e.text, e.finish_reason) for i, e in merged]
    assert got == [(0, "Hello!", "stop"), (1, "World", "length")]


def test_a_stream_that_keeps_up_is_left_as_it_is() -> None:
    batch = [(0, TokenEvent("a", token_id=1)), (1, TokenEvent("b", token_id=2))]
    assert coalesce(batch) is batch  # token ids and logprobs untouched
