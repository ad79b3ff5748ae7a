"""The engine's continuous batching gives exactly what one-at-a-time greedy decoding gives.

Every behaviour is checked on both runners: the fast Llama slot-cache path (``auto`` for a Llama
model) and the generic transformers-cache path.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from lamina.models.causal_lm import LMConfig, build_model
from lamina.models.tokenizer import train_tokenizer
from lamina.serving.engine import ContextTooLong, Engine
from lamina.serving.sampling import SamplingParams

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer.\n" * 5


@pytest.fixture(scope="module")
def lm():
    tokenizer = train_tokenizer([TEXT], "char")
    model = build_model(
        LMConfig.from_preset("tiny", vocab_size=len(tokenizer), context_length=64), tokenizer, seed=0
    )
    return model.eval(), tokenizer


def reference(model, tokenizer, prompt: str, n: int) -> list[int]:
    """transformers' own greedy decoding, one request at a time."""
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    out = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return out[0, ids.shape[1] :].tolist()


PATHS = pytest.mark.parametrize("path", ["auto", "generic"])


def test_a_llama_model_takes_the_fast_path(lm) -> None:
    from lamina.serving.dynamic_runner import DynamicRunner
    from lamina.serving.llama_runner import SlotRunner

    model, tokenizer = lm
    assert isinstance(Engine(model, tokenizer).runner, SlotRunner)
    assert isinstance(Engine(model, tokenizer, path="generic").runner, DynamicRunner)


@PATHS
def test_concurrent_requests_match_solo_greedy_decoding(lm, path: str) -> None:
    model, tokenizer = lm
    engine = Engine(model, tokenizer, max_batch=8, path=path)
    prompts = ["To be", "whether 'tis nobler in", "q", "the mind to suffer and"]
    expected = [reference(model, tokenizer, p, 12) for p in prompts]
    greedy = SamplingParams(temperature=0, max_tokens=12)
    requests = [engine.submit(p, greedy) for p in prompts]  # all waiting before the loop starts
    engine.start()
    late = None
    for i, request in enumerate(requests):
        events = list(request.events(timeout=60))
        if i == 0:  # joins a batch that is already running, with a different cache length
            late = engine.submit("that is the question", greedy)
        assert request.generated == expected[i][: len(request.generated)]
        assert len(request.generated) == len(expected[i]) and events[-1].finish_reason in ("length", "stop")
    assert late is not None
    list(late.events(timeout=60))
    assert late.generated == reference(model, tokenizer, "that is the question", 12)
    assert engine.stats["max_batch_seen"] >= 3
    engine.close()


@PATHS
def test_stop_sequences_lengths_seeds_and_context(lm, path: str) -> None:
    model, tokenizer = lm
    engine = Engine(model, tokenizer, path=path).start()
    free = SamplingParams(temperature=0, max_tokens=30)
    text, reason = engine.generate("To be", free)
    assert reason == "length" and len(text) > 0
    stop_at = text[5:7]
    cut, reason = engine.generate("To be", SamplingParams(temperature=0, max_tokens=30, stop=[stop_at]))
    assert reason == "stop" and cut == text[: text.index(stop_at)]
    seeded = SamplingParams(temperature=1.0, max_tokens=20, seed=3)
    assert engine.generate("To", seeded) == engine.generate("To", seeded)
    with pytest.raises(ContextTooLong, match="context is 64 tokens"):
        engine.submit("x" * 64, free)
    near_end, reason = engine.generate("t" * 60, SamplingParams(temperature=0, max_tokens=50))
    assert reason == "length" and len(near_end) <= 4  # stops at the context, not at max_tokens
    engine.close()


@PATHS
def test_cancelled_request_leaves_the_others_running(lm, path: str) -> None:
    model, tokenizer = lm
    engine = Engine(model, tokenizer, path=path)
    long = SamplingParams(temperature=0, max_tokens=40)
    a, b = engine.submit("To be", long), engine.submit("whether", long)
    engine.start()
    seen = threading.Event()
    for event in a.events(timeout=60):
        if event.token_id is not None and not seen.is_set():
            seen.set()
            a.cancel()
        last = event
    assert last.finish_reason == "cancelled" and len(a.generated) < 40
    assert [e.finish_reason for e in b.events(timeout=60)][-1] == "length" and len(b.generated) == 40
    engine.close()


def test_a_full_queue_is_refused_not_grown(lm) -> None:
    from lamina.serving.engine import EngineBusy

    model, tokenizer = lm
    engine = Engine(model, tokenizer, max_waiting=2)  # not started: nothing drains the queue
    for _ in range(2):
        engine.submit("To be", SamplingParams(max_tokens=2))
    with pytest.raises(EngineBusy) as refused:
        engine.submit("To be", SamplingParams(max_tokens=2))
    assert refused.value.http_status == 429 and engine.queue_depth == 2


def test_rows_leaving_mid_batch_keep_the_others_exact(lm) -> None:
    """Rows finish at different steps, so the slot cache compacts while others keep decoding."""
    model, tokenizer = lm
    engine = Engine(model, tokenizer, max_batch=4)
    prompts = ["To be", "or not", "whether 'tis", "the question"]
    lengths = [3, 20, 7, 14]
    requests = [
        engine.submit(p, SamplingParams(temperature=0, max_tokens=n))
        for p, n in zip(prompts, lengths, strict=True)
    ]
    engine.start()
    for prompt, n, request in zip(prompts, lengths, requests, strict=True):
        list(request.events(timeout=60))
        assert request.generated == reference(model, tokenizer, prompt, n)
    engine.close()


def test_seeded_sampling_does_not_depend_on_the_batch(lm) -> None:
    model, tokenizer = lm
    seeded = SamplingParams(temperature=0.9, top_p=0.9, max_tokens=16, seed=11)
    alone = Engine(model, tokenizer).start()
    solo = alone.generate("To be", seeded)
    alone.close()
    busy = Engine(model, tokenizer)
    others = [busy.submit("whether", SamplingParams(temperature=1.0, max_tokens=16)) for _ in range(3)]
    mine = busy.submit("To be", seeded)
    busy.start()
    assert "".join(e.text for e in mine.events(timeout=60)) == solo[0]
    for other in others:
        list(other.events(timeout=60))
    busy.close()


@PATHS
def test_penalties_count_each_rows_own_tokens_in_a_mixed_batch(lm, path: str) -> None:
    model, tokenizer = lm
    penalised = SamplingParams(temperature=0, max_tokens=24, frequency_penalty=2.0, repetition_penalty=1.5)
    alone = Engine(model, tokenizer, path=path).start()
    solo, _ = alone.generate("To be", penalised)
    plain, _ = alone.generate("To be", SamplingParams(temperature=0, max_tokens=24))
    alone.close()
    assert solo != plain  # the penalties change the output
    mixed = Engine(model, tokenizer, path=path)
    others = [mixed.submit(p, SamplingParams(temperature=0, max_tokens=30)) for p in ("q", "whether", "the")]
    mine = mixed.submit("To be", penalised)
    mixed.start()
    assert "".join(e.text for e in mine.events(timeout=60)) == solo
    for other in others:
        list(other.events(timeout=60))
    mixed.close()


def test_the_compiled_single_row_step_matches_eager_and_falls_back_when_compiling_fails(
    lm, monkeypatch
) -> None:
    model, tokenizer = lm
    greedy = SamplingParams(temperature=0, max_tokens=20)
    eager = Engine(model, tokenizer).start()
    compiled = Engine(model, tokenizer, compile=True).start()
    assert compiled.runner._alone is not compiled.runner.fast.step_alone  # the compiled function
    for prompt in ("To be", "whether 'tis"):
        assert compiled.generate(prompt, greedy) == eager.generate(prompt, greedy)
    compiled.close()
    eager.close()

    def broken(*args, **kwargs):
        def fail(*a, **k):
            raise RuntimeError("no C++ compiler here")

        return fail

    monkeypatch.setattr(torch, "compile", broken)
    fallback = Engine(model, tokenizer, compile=True).start()
    assert fallback.runner._alone == fallback.runner.fast.step_alone
    assert fallback.runner.many.attend_rows.keywords == {"loops": False}  # eager attention too
    assert fallback.generate("To be", greedy)[0]
    fallback.close()


@PATHS
def test_requests_admitted_together_some_ending_on_their_first_token(lm, path: str) -> None:
    """Waiting requests are prefilled in one pass; one-token requests leave, the others stay exact."""
    model, tokenizer = lm
    engine = Engine(model, tokenizer, max_batch=8, path=path)
    plan = [("To be", 1), ("or not to", 9), ("q", 1), ("whether 'tis nobler", 6), ("the", 1)]
    requests = [engine.submit(p, SamplingParams(temperature=0, max_tokens=n)) for p, n in plan]
    engine.start()
    for (prompt, n), request in zip(plan, requests, strict=True):
        events = list(request.events(timeout=60))
        assert request.generated == reference(model, tokenizer, prompt, n), prompt
        assert events[-1].finish_reason == "length"
    engine.close()


def test_prefilling_together_gives_each_prompt_its_own_logits(lm) -> None:
    from lamina.serving.llama_runner import SlotRunner

    model, tokenizer = lm
    prompts = [
        tokenizer(p, add_special_tokens=False)["input_ids"] for p in ("To be", "whether 'tis nobler", "q")
    ]
    together = Engine(model, tokenizer).runner
    assert isinstance(together, SlotRunner)
    batched = together.prefill(prompts)
    for row, prompt in enumerate(prompts):
        alone = Engine(model, tokenizer).runner.prefill([prompt])
        assert torch.allclose(batched[row], alone[0], atol=1e-4)


def test_a_request_joining_one_that_runs_alone_leaves_both_exact(lm) -> None:
    """A lone request makes several tokens per runner call; one arriving mid-way joins at once."""
    from lamina.serving.engine import ALONE_STEPS

    model, tokenizer = lm
    engine = Engine(model, tokenizer).start()
    greedy = SamplingParams(temperature=0, max_tokens=3 * ALONE_STEPS + 3)  # not a multiple of the steps
    first = engine.submit("To be", greedy)
    events = first.events(timeout=60)
    next(events)
    second = engine.submit("whether 'tis", greedy)
    rest = list(events)
    list(second.events(timeout=60))
    assert first.generated == reference(model, tokenizer, "To be", greedy.max_tokens)
    assert second.generated == reference(model, tokenizer, "whether 'tis", greedy.max_tokens)
    assert rest[-1].finish_reason == "length" and len(first.generated) == greedy.max_tokens
    assert engine.stats["max_batch_seen"] == 2
    engine.close()


def test_alone_and_batched_steps_choose_the_same_tokens_with_penalties_and_logprobs(lm) -> None:
    """Run alone, a request samples in the runner's step; batched, in ``sample``: same seed, same output."""
    model, tokenizer = lm
    mine = SamplingParams(
        temperature=0.9, top_p=0.9, top_k=20, max_tokens=20, seed=5, frequency_penalty=0.7,
        presence_penalty=0.3, repetition_penalty=1.3, logprobs=3,
    )  # fmt: skip
    alone = Engine(model, tokenizer).start()
    solo = alone.submit("To be", mine)
    solo_events = list(solo.events(timeout=60))
    assert alone.stats["max_batch_seen"] == 1
    alone.close()
    busy = Engine(model, tokenizer)
    others = [busy.submit("whether", SamplingParams(temperature=1.0, max_tokens=30)) for _ in range(2)]
    batched = busy.submit("To be", mine)
    busy.start()
    batched_events = list(batched.events(timeout=60))
    for other in others:
        list(other.events(timeout=60))
    busy.close()
    assert batched.generated == solo.generated and len(solo.generated) > 8  # more than one runner call
    for a, b in zip(solo_events, batched_events, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert [t for t, _ in a.top] == [t for t, _ in b.top] and len(a.top) == 3


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-4), ("bf16", 0.05)])
def test_the_compiled_lone_step_gives_the_eager_steps_log_probabilities(lm, precision, tolerance) -> None:
    """Compiled, projections become reductions and attention plain loops: the numbers must not move."""
    from lamina.serving.engine import make_runner
    from lamina.serving.sampling import choice_knobs, penalty_knobs

    model, tokenizer = lm
    greedy = SamplingParams(temperature=0)
    knobs = torch.cat([choice_knobs([greedy], len(tokenizer)), penalty_knobs([greedy])], dim=1)
    prompt = tokenizer("whether 'tis", add_special_tokens=False)["input_ids"]
    results = []
    for compile in (False, True):
        runner = make_runner(model, precision, slots=4, compile=compile)
        first = runner.prefill([prompt]).argmax(-1)
        runner.commit([True])
        counts = torch.zeros(1, len(tokenizer))
        results.append(runner.decode_alone(first, 1, counts, counts.clone(), knobs))
    (eager_token, eager_rows), (compiled_token, compiled_rows) = results
    assert torch.allclose(eager_rows, compiled_rows, atol=tolerance)
    assert torch.isfinite(compiled_rows).all() and compiled_rows.exp().sum().item() == pytest.approx(
        1, abs=1e-3
    )


@pytest.mark.parametrize("compile", [False, True])
def test_grouped_query_attention_on_the_fast_path_matches_transformers(compile: bool) -> None:
    """Two query heads per kv head: each reads the right cache, batched and alone, eager and compiled."""
    tokenizer = train_tokenizer([TEXT], "char")
    config = LMConfig.from_preset(
        "tiny", vocab_size=len(tokenizer), context_length=64, num_heads=4, num_kv_heads=2
    )  # fmt: skip
    model = build_model(config, tokenizer, seed=1).eval()
    assert model.config.num_key_value_heads == 2
    engine = Engine(model, tokenizer, compile=compile)
    greedy = SamplingParams(temperature=0, max_tokens=12)
    prompts = ["To be", "whether 'tis nobler"]
    requests = [engine.submit(p, greedy) for p in prompts]  # batched
    engine.start()
    for prompt, request in zip(prompts, requests, strict=True):
        list(request.events(timeout=60))
        assert request.generated == reference(model, tokenizer, prompt, 12)
    alone = engine.submit("the question", greedy)  # alone
    list(alone.events(timeout=60))
    assert alone.generated == reference(model, tokenizer, "the question", 12)
    engine.close()


@pytest.mark.parametrize("compile", [False, True])
def test_a_vanishing_top_p_still_samples_the_best_token(lm, compile: bool) -> None:
    """Regression: top_p 1e-300 rounds to 0 in float32; the empty nucleus failed the step, and the
    request (failing while it was being prefilled) never got a last event: the server hung."""
    model, tokenizer = lm
    engine = Engine(model, tokenizer, compile=compile).start()
    greedy = engine.generate("To be", SamplingParams(temperature=0, max_tokens=6))[0]
    for top_p in (1e-300, 5e-324, 1e-10):
        text, reason = engine.generate("To be", SamplingParams(temperature=1.5, top_p=top_p, max_tokens=6))
        assert (text, reason) == (greedy, "length")  # a nucleus of one token: the argmax
    engine.close()


def test_a_failure_while_prefilling_ends_those_requests_too(lm) -> None:
    """Every request the engine holds gets a last event when a step fails, also those it was
    still prefilling (fault injected into the runner: nothing else makes a correct model fail)."""
    model, tokenizer = lm
    engine = Engine(model, tokenizer)
    prefill = engine.runner.prefill

    def broken(prompts):
        engine.runner.prefill = prefill  # fail once, then work again
        raise RuntimeError("injected fault")

    engine.runner.prefill = broken
    failed = engine.submit("To be", SamplingParams(max_tokens=5))
    engine.start()
    events = list(failed.events(timeout=10))
    assert events[-1].finish_reason == "error" and failed.finish_reason == "error"
    assert engine.generate("To be", SamplingParams(max_tokens=3))[1] == "length"  # it serves on
    assert engine.queue_depth == 0 and engine.running == 0
    engine.close()


def test_a_request_that_cannot_start_in_time_is_shed_not_queued(lm) -> None:
    model, tokenizer = lm
    engine = Engine(model, tokenizer, max_batch=1).start()
    first = engine.submit("To be", SamplingParams(temperature=0, max_tokens=63))
    next(first.events(timeout=10))  # running: it holds the only place in the batch
    engine.max_queue_wait = 1e-4  # shorter than what is left of the first request
    waiting = engine.submit("To be", SamplingParams(temperature=0, max_tokens=2))
    assert [e.finish_reason for e in waiting.events(timeout=10)] == ["overloaded"]
    assert not waiting.generated
    assert list(first.events(timeout=30))[-1].finish_reason == "length"
    assert engine.queue_depth == 0
    engine.close()


def test_closing_the_engine_ends_waiting_and_running_requests(lm) -> None:
    model, tokenizer = lm
    engine = Engine(model, tokenizer, max_batch=1)
    running = engine.submit("To be", SamplingParams(temperature=0, max_tokens=63))
    waiting = engine.submit("To be", SamplingParams(temperature=0, max_tokens=63))
    engine.start()
    next(running.events(timeout=10))
    engine.close()
    for request in (running, waiting):
        assert [e.finish_reason for e in request.events(timeout=10)][-1] in ("error", "length")


def test_a_client_that_goes_away_cancels_its_generation(lm) -> None:
    """The API's watcher on the connection (generation.collect) cancels a plain request at once;
    the request object is a stand-in for Starlette's: only its ``receive`` is read."""
    import asyncio

    from lamina.serving import generation

    model, tokenizer = lm
    engine = Engine(model, tokenizer).start()

    class Gone:
        async def receive(self) -> dict:
            await asyncio.sleep(0.01)
            return {"type": "http.disconnect"}

    async def call():
        params = SamplingParams(temperature=0, max_tokens=63)
        job = engine.submit("To be", params, loop=asyncio.get_running_loop())
        with pytest.raises(generation.ClientGone):
            await generation.collect([(0, job)], Gone(), asyncio.get_running_loop().time() + 30)
        return job

    job = asyncio.run(call())
    deadline = time.time() + 10
    while job.finish_reason is None and time.time() < deadline:
        time.sleep(0.01)
    assert job.cancelled.is_set() and job.finish_reason == "cancelled" and len(job.generated) < 63
    engine.close()
