import pytest
import torch

from lamina.core.errors import ConfigError
from lamina.models.causal_lm import LMConfig, build_model, flops_per_token, load_pretrained, param_count
from lamina.models.tokenizer import train_tokenizer

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 20


@pytest.fixture(scope="module")
def char_tok():
    return train_tokenizer([TEXT], "char")


def test_char_tokenizer_round_trips_and_has_chat_template(char_tok) -> None:
    ids = char_tok("hear me\nspeak", add_special_tokens=False)["input_ids"]
    assert len(ids) == len("hear me\nspeak") and char_tok.decode(ids) == "hear me\nspeak"
    rendered = char_tok.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "All:"}], tokenize=False
    )
    assert rendered == "<|user|>hi<|assistant|>All:<|endoftext|>"
    mask = char_tok.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "All:"}],
        return_assistant_tokens_mask=True,
        return_dict=True,
    )["assistant_masks"]
    assert mask == [0, 0, 0, 0, 1, 1, 1, 1, 1]  # role token + "hi" + role token, then the answer and EOS


def test_bpe_tokenizer_round_trips() -> None:
    tok = train_tokenizer([TEXT * 5], "bpe", vocab_size=300)
    ids = tok("Before we proceed", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == "Before we proceed" and len(ids) < len("Before we proceed")


def test_presets_and_param_counts(char_tok) -> None:
    tiny = LMConfig.from_preset("tiny", vocab_size=72)
    assert (tiny.num_layers, tiny.hidden_size, tiny.context_length) == (4, 128, 64)
    assert param_count(build_model(tiny, char_tok)) == 1_058_944  # the documented 1.06 M
    assert flops_per_token(tiny) > 6 * 1_000_000


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_size": 130}, "divisible by num_heads"),
        ({"hidden_size": 100, "num_heads": 4}, "must be even for rotary"),
        ({"num_kv_heads": 3}, "divisible by num_kv_heads"),
        ({"context_length": 2}, "context_length"),
    ],
)
def test_configs_that_do_not_fit(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LMConfig.from_preset("tiny", vocab_size=72, **overrides)


def test_saved_model_loads_unchanged_with_auto_classes(char_tok, tmp_path) -> None:
    model = build_model(LMConfig.from_preset("tiny", vocab_size=len(char_tok)), char_tok, seed=3)
    model.save_pretrained(tmp_path)
    char_tok.save_pretrained(tmp_path)
    loaded, tok = load_pretrained(tmp_path)
    ids = torch.tensor([tok("All:\nSpeak", add_special_tokens=False)["input_ids"]])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, loaded(input_ids=ids).logits)
    assert type(loaded).__name__ == "LlamaForCausalLM" and tok.decode(ids[0]) == "All:\nSpeak"
