"""Per-deployment weight precision: int8 Linear weights stay close to fp32 and serve."""

from __future__ import annotations

import pytest
import torch

from lamina.core.errors import ConfigError
from lamina.models.causal_lm import LMConfig, build_model
from lamina.models.tokenizer import train_tokenizer
from lamina.serving.engine import Engine
from lamina.serving.quantize import parse_deployment, with_precision
from lamina.serving.sampling import SamplingParams


def test_int8_and_bf16_copies_stay_close_and_generate() -> None:
    tok = train_tokenizer(["the quick brown fox jumps over the lazy dog " * 20], "char")
    model = build_model(LMConfig.from_preset("tiny", vocab_size=len(tok)), tok, seed=0).eval()
    ids = torch.randint(0, len(tok), (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = torch.log_softmax(model(ids).logits, -1)
        for precision, tolerance in (("int8", 0.05), ("bf16", 0.05)):
            copy = with_precision(model, precision)
            out = torch.log_softmax(copy(ids).logits.float(), -1)
            kl = torch.sum(ref.exp() * (ref - out), -1).mean()
            assert float(kl) < tolerance, (precision, float(kl))
    int8 = with_precision(model, "int8")
    assert type(int8.model.layers[0].mlp.gate_proj).__name__ == "Linear"  # the quantized dynamic Linear
    assert "quantized" in type(int8.model.layers[0].mlp.gate_proj).__module__
    assert model.model.layers[0].mlp.gate_proj.weight.dtype == torch.float32  # the original is untouched
    text, reason = Engine(int8, tok).start().generate("the", SamplingParams(temperature=0, max_tokens=5))
    assert reason in ("length", "stop")


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_the_fast_path_serves_each_precision_close_to_fp32(precision: str) -> None:
    from lamina.serving.llama_runner import SlotRunner

    tok = train_tokenizer(["the quick brown fox jumps over the lazy dog " * 20], "char")
    model = build_model(LMConfig.from_preset("tiny", vocab_size=len(tok)), tok, seed=0).eval()
    ids = tok("the quick brown", add_special_tokens=False)["input_ids"]
    exact = Engine(model, tok).runner.prefill([ids])
    engine = Engine(model, tok, precision=precision)
    assert isinstance(engine.runner, SlotRunner)
    ref = torch.log_softmax(exact.float(), -1)
    out = torch.log_softmax(engine.runner.prefill([ids]).float(), -1)
    assert float(torch.sum(ref.exp() * (ref - out), -1).mean()) < 0.05
    assert model.model.layers[0].mlp.gate_proj.weight.dtype == torch.float32  # the original is untouched
    text, reason = engine.start().generate("the", SamplingParams(temperature=0, max_tokens=8))
    assert reason == "length" and text
    engine.close()


def test_deployment_specs() -> None:
    assert parse_deployment("shakes@champion") == ("shakes@champion", None)
    assert parse_deployment("shakes@champion:int8") == ("shakes@champion", "int8")
    assert parse_deployment("mv-123:bf16") == ("mv-123", "bf16")
    with pytest.raises(ConfigError, match="unknown precision"):
        with_precision(None, "fp16")


def test_auto_precision_is_bf16_only_where_the_cpu_has_native_bf16() -> None:
    from lamina.serving.quantize import native_bf16, resolve_precision

    assert resolve_precision("auto") == ("bf16" if native_bf16() else "fp32")
    assert resolve_precision("int8") == "int8"
    with pytest.raises(ConfigError, match="unknown precision 'fp16'"):
        resolve_precision("fp16")
