"""The engine in its own process streams what the in-process engine makes, cancels, and fails clearly."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from lamina.models.causal_lm import LMConfig, build_model
from lamina.models.tokenizer import train_tokenizer
from lamina.serving.engine import ContextTooLong, Engine
from lamina.serving.engine_process import EngineProcess, EngineUnavailable
from lamina.serving.pool import serving_tokenizer
from lamina.serving.sampling import SamplingParams

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer.\n" * 5


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    tokenizer = train_tokenizer([TEXT], "char")
    model = build_model(
        LMConfig.from_preset("tiny", vocab_size=len(tokenizer), context_length=64), tokenizer, seed=0
    )
    path = tmp_path_factory.mktemp("lm")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model.eval(), tokenizer


def test_the_engine_process_streams_what_the_engine_makes(folder) -> None:
    path, model, tokenizer = folder
    local = Engine(model, tokenizer).start()
    tok, context = serving_tokenizer(path)
    remote = EngineProcess(path, tok, context, max_batch=4)
    try:
        assert remote.runner_kind == "SlotRunner" and remote._process.is_alive()
        greedy = SamplingParams(temperature=0, max_tokens=12)
        seeded = SamplingParams(temperature=0.9, top_p=0.9, max_tokens=12, seed=5)
        prompts = ["To be", "whether 'tis nobler", "q"]
        streams = [remote.submit(p, greedy) for p in prompts] + [remote.submit("the", seeded)]
        for prompt, stream in zip(prompts, streams, strict=False):
            events = list(stream.events(timeout=60))
            expected, reason = local.generate(prompt, greedy)
            assert stream.text == expected and events[-1].finish_reason == reason
            assert len(stream.generated) == len([e for e in events if e.token_id is not None])
        list(streams[-1].events(timeout=60))
        assert streams[-1].text == local.generate("the", seeded)[0]  # the seed travels with the request
        with pytest.raises(ContextTooLong):
            remote.submit("x" * 64, greedy)

        os.kill(remote._process.pid, signal.SIGINT)  # Ctrl-C in the terminal: the server decides
        assert remote.generate("To be", greedy)[0] == local.generate("To be", greedy)[0]

        long = remote.submit("To be", SamplingParams(temperature=0, max_tokens=50))
        for event in long.events(timeout=60):
            if event.token_id is not None:
                long.cancel()
            last = event
        assert last.finish_reason == "cancelled" and len(long.generated) < 50
    finally:
        remote.close()
        local.close()
    assert not remote._process.is_alive()


def test_a_dead_engine_process_ends_streams_and_refuses_new_ones(folder) -> None:
    path, _, _ = folder
    tok, context = serving_tokenizer(path)
    remote = EngineProcess(path, tok, context)
    os.kill(remote._process.pid, signal.SIGSTOP)  # frozen: the request below cannot finish first
    stream = remote.submit("To be", SamplingParams(temperature=0, max_tokens=20))
    os.kill(remote._process.pid, signal.SIGKILL)
    events = list(stream.events(timeout=30))
    assert events[-1].finish_reason == "error"
    deadline = time.monotonic() + 10
    while remote._alive and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(EngineUnavailable) as refused:
        remote.submit("To be", SamplingParams(max_tokens=2))
    assert refused.value.http_status == 503
    remote.close()


def test_a_folder_that_is_not_a_model_is_reported(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(EngineUnavailable, match="failed to start"):
        EngineProcess(tmp_path, None, 64)


def test_a_lora_adapter_is_served_merged_on_the_fast_path(folder, tmp_path) -> None:
    from peft import LoraConfig, get_peft_model

    from lamina.serving.llama_runner import SlotRunner
    from lamina.training.sft import load_any

    path, model, tokenizer = folder
    base = type(model).from_pretrained(path)
    torch.manual_seed(0)  # the adapter's random weights, the same whatever ran before
    adapted = get_peft_model(
        base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    adapted.save_pretrained(tmp_path / "adapter")  # records the base model's absolute path
    tok, context = serving_tokenizer(tmp_path / "adapter")
    assert context == 64 and tok("To be", add_special_tokens=False)["input_ids"]
    loaded, loaded_tok = load_any(tmp_path / "adapter")
    engine = Engine(loaded, loaded_tok).start()
    assert isinstance(engine.runner, SlotRunner)
    greedy = SamplingParams(temperature=0, max_tokens=10)
    text, _ = engine.generate("To be", greedy)
    engine.close()
    merged = get_peft_model(type(model).from_pretrained(path), adapted.peft_config["default"])
    merged.load_state_dict(adapted.state_dict())
    ids = tokenizer("To be", return_tensors="pt", add_special_tokens=False)["input_ids"]
    expected = merged.merge_and_unload().generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    assert text == tokenizer.decode(expected[0, ids.shape[1] :], skip_special_tokens=True)
    unadapted = Engine(model, tokenizer).start()
    plain, _ = unadapted.generate("To be", greedy)
    unadapted.close()
    assert text != plain  # the adapter changed the model, and the merged weights were served
