import math
from pathlib import Path

import pytest
import torch

from lamina.core.errors import ConfigError
from lamina.core.workspace import Workspace
from lamina.data.pipeline import build_dataset
from lamina.data.recipe import Recipe
from lamina.demo import DEMO_INSTRUCTIONS, DEMO_TEXT
from lamina.hub.registry import import_model, model_path
from lamina.training.lm import train_lm
from lamina.training.loop import TrainConfig
from lamina.training.sft import (
    PLAIN_CHAT_TEMPLATE,
    SFTTask,
    encode_example,
    ensure_chat_template,
    finetune,
    load_any,
)

STEPS = TrainConfig(max_steps=40, batch_size=8, lr=3e-3, warmup_steps=4, eval_every=20, eval_batches=2)


@pytest.fixture
def sft_ws(workspace: Workspace) -> Workspace:
    build_dataset(workspace, "text", Recipe(source=str(DEMO_TEXT), split={"fractions": {"val": 0.1}}))
    build_dataset(
        workspace,
        "inst",
        Recipe(
            source=str(DEMO_INSTRUCTIONS),
            steps=["normalize"],
            text_field="instruction",
            split={"fractions": {"val": 0.1}},
        ),
    )
    train_lm(
        workspace,
        "text",
        "base",
        train_cfg=TrainConfig(max_steps=20, batch_size=8, eval_every=10, eval_batches=2),
        track=False,
        overrides={"context_length": 128},
    )
    return workspace


def test_loss_is_on_the_response_only(sft_ws: Workspace) -> None:
    _, tok = load_any(model_path(sft_ws, "base"))
    messages = [{"role": "user", "content": "Speak?"}, {"role": "assistant", "content": "Aye"}]
    ids, labels = encode_example(tok, messages, context=128)
    supervised = [t for t, label in zip(ids, labels, strict=True) if label != -100]
    assert tok.decode(supervised) == "Aye<|endoftext|>"
    assert labels[: len(ids) - 4] == [-100] * (len(ids) - 4)


def test_lora_trains_adapters_only_and_merges_exactly(sft_ws: Workspace) -> None:
    base_before = {k: v.clone() for k, v in load_any(model_path(sft_ws, "base"))[0].state_dict().items()}
    adapter = finetune(sft_ws, "base", "inst", "chat", method="lora", train_cfg=STEPS)
    # well below a uniform guess over the vocabulary (ln V), which char models now start from with
    # all of printable ASCII in their vocabulary
    uniform = math.log(len(load_any(model_path(sft_ws, "base"))[1]))
    assert adapter.meta["adapter"] and adapter.metrics["train_loss"] < uniform - 1.0
    folder = sft_ws.artifact_path(adapter)
    assert (folder / "adapter_config.json").exists() and not (folder / "model.safetensors").exists()
    peft_model, tok = load_any(folder)
    assert type(peft_model).__name__ == "PeftModelForCausalLM"
    base_after = load_any(model_path(sft_ws, "base"))[0].state_dict()
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)  # the base is untouched
    merged = peft_model.merge_and_unload()
    ids = torch.tensor([tok("<|user|>What is 2 plus 3?<|assistant|>", add_special_tokens=False)["input_ids"]])
    peft_model, _ = load_any(folder)
    peft_model.eval()
    merged.eval()
    with torch.no_grad():
        assert torch.allclose(peft_model(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-5)
    relations = {rel for _, rel in sft_ws.catalog.parents(adapter.id)}
    assert relations == {"produced_by", "fine_tuned_from", "trained_on"}


def test_full_finetune_and_merged_lora_are_plain_models(sft_ws: Workspace) -> None:
    full = finetune(sft_ws, "base", "inst", "chat-full", method="full", train_cfg=STEPS)
    merged = finetune(sft_ws, "base", "inst", "chat-merged", method="lora", merge=True, train_cfg=STEPS)
    for version in (full, merged):
        model, _ = load_any(sft_ws.artifact_path(version))
        assert type(model).__name__ == "LlamaForCausalLM" and not version.meta["adapter"]
    assert full.metrics["train_loss"] < 2.0  # 40 steps on 100 short answers: it memorises


def test_qlora_trains_lora_on_a_4bit_base_and_says_so(sft_ws: Workspace) -> None:
    """bitsandbytes' NF4 runs on CPU: the base's linear layers really are 4-bit, loss falls, and the
    registered run and version record the quantization (a run is never mislabelled)."""
    pytest.importorskip("bitsandbytes")
    from lamina.training.sft import load_quantized

    model, _, info = load_quantized(model_path(sft_ws, "base"))
    layers = [m for m in model.modules() if type(m).__name__ == "Linear4bit"]
    assert layers and len(layers) == info["quantized_layers"] and info["quant_type"] == "nf4"
    assert layers[0].weight.dtype == torch.uint8  # packed 4-bit codes, two per byte
    # gradients reach the first layer's adapter through every 4-bit layer, the same after an
    # eval-mode pass (the loop validates between steps) as before it
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    ids = torch.randint(100, (2, 16), generator=torch.Generator().manual_seed(0))
    first_b = next(p for n, p in peft.named_parameters() if "layers.0." in n and "lora_B" in n)
    grads = []
    for _ in range(2):
        peft.train()
        peft.zero_grad()
        peft(input_ids=ids, labels=ids).loss.backward()
        grads.append(first_b.grad.clone())
        peft.eval()
        with torch.no_grad():
            peft(input_ids=ids)
    assert grads[0].abs().sum() > 0 and torch.allclose(grads[0], grads[1], atol=1e-6)
    adapter = finetune(sft_ws, "base", "inst", "q", method="qlora", train_cfg=STEPS, track=False)
    uniform = math.log(len(load_any(model_path(sft_ws, "base"))[1]))
    assert adapter.metrics["train_loss"] < uniform - 1.0
    assert adapter.meta["config"]["method"] == "qlora" and adapter.meta["config"]["quantization"]["bits"] == 4
    run = sft_ws.catalog.get(adapter.run_id)
    assert run.task == "sft-qlora" and run.params["quantization"]["quantized_layers"] == len(layers)  # type: ignore[attr-defined]
    peft_model, _ = load_any(sft_ws.artifact_path(adapter))  # the adapter loads on the full-precision base
    assert type(peft_model).__name__ == "PeftModelForCausalLM"
    merged = finetune(
        sft_ws, "base", "inst", "q-merged", method="qlora", merge=True, train_cfg=STEPS, track=False
    )
    plain, _ = load_any(sft_ws.artifact_path(merged))
    assert type(plain).__name__ == "LlamaForCausalLM"
    assert not any(type(m).__name__ == "Linear4bit" for m in plain.modules())


def test_qlora_of_an_adapter_is_refused(sft_ws: Workspace) -> None:
    pytest.importorskip("bitsandbytes")
    finetune(sft_ws, "base", "inst", "chat", method="lora", train_cfg=STEPS, track=False)
    with pytest.raises(ConfigError, match="QLoRA quantizes a full model"):
        finetune(sft_ws, "chat", "inst", "q", method="qlora", train_cfg=STEPS, track=False)


def test_a_stopped_finetune_is_interrupted_and_resumes(sft_ws: Workspace) -> None:
    """Ctrl-C is `interrupted` (resumable), not `failed`, for every trainer: they share one lifecycle."""
    from lamina.core.errors import LaminaError

    cfg = STEPS.model_copy(update={"checkpoint_every": 10})

    def interrupt(point: dict) -> None:
        if point["step"] == 12:
            raise KeyboardInterrupt

    with pytest.raises(LaminaError, match="interrupted"):
        finetune(sft_ws, "base", "inst", "stopped", train_cfg=cfg, track=False, on_progress=interrupt)
    run = sft_ws.catalog.find("run", "stopped-finetune")[0]
    assert run.status == "interrupted"  # type: ignore[attr-defined]
    version = finetune(sft_ws, "base", "inst", "stopped", train_cfg=cfg, track=False, resume=True)
    assert version.run_id == run.id and version.metrics["steps"] == STEPS.max_steps
    assert sft_ws.catalog.get(run.id).status == "completed"  # type: ignore[attr-defined]
    # the same inputs again give back that version instead of training twice
    assert finetune(sft_ws, "base", "inst", "stopped", train_cfg=cfg, track=False).id == version.id


def test_a_failing_finetune_is_failed(sft_ws: Workspace) -> None:
    def explode(point: dict) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        finetune(sft_ws, "base", "inst", "broken", train_cfg=STEPS, track=False, on_progress=explode)
    assert sft_ws.catalog.find("run", "broken-finetune")[0].status == "failed"  # type: ignore[attr-defined]


def test_chat_template_for_tokenizers_without_one(sft_ws: Workspace, tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"<unk>": 0, "</s>": 1, "hi": 2}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    outside = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="</s>")
    ensure_chat_template(outside)  # no role tokens in its vocabulary: plain-text role markers
    assert outside.chat_template == PLAIN_CHAT_TEMPLATE
    rendered = outside.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hi"}], tokenize=False
    )
    assert rendered == "User: hi\nAssistant: hi</s>"
    _, ours = load_any(model_path(sft_ws, "base"))
    ours.chat_template = None
    ensure_chat_template(ours)
    assert "<|assistant|>" in ours.chat_template
    # and a model imported from outside fine-tunes like one trained here
    model, tok = load_any(model_path(sft_ws, "base"))
    model.save_pretrained(tmp_path / "outside")
    tok.save_pretrained(tmp_path / "outside")
    import_model(sft_ws, tmp_path / "outside", "outside")
    assert finetune(sft_ws, "outside", "inst", "outside-chat", method="lora", train_cfg=STEPS).meta["adapter"]


def test_task_refuses_examples_with_nothing_to_learn() -> None:
    from lamina.core.errors import LaminaError

    with pytest.raises(LaminaError, match="no SFT example has a response"):
        SFTTask([([1, 2, 3], [-100, -100, -100])], [], pad_id=0)
