"""Tokenizers for the causal LMs, saved in Hugging Face format so ``AutoTokenizer`` loads them.

Two kinds: ``char`` (one token per character: the nanoGPT baseline, best for tiny corpora) and
``bpe`` (byte-level BPE from HF ``tokenizers``). Both carry the same special tokens and a chat
template, so chat-formatted SFT data renders the same way for every model Lamina trains.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

BOS, EOS, PAD, UNK = "<|bos|>", "<|endoftext|>", "<|pad|>", "<|unk|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
SPECIAL_TOKENS = [BOS, EOS, PAD, UNK, *ROLE_TOKENS]

# Messages → text; ``{% generation %}`` marks what the assistant says (SFT trains on that part only).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|endoftext|>' }}"
    "{% endgeneration %}{% else %}{{ message['content'] }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

TokenizerKind = Literal["char", "bpe"]


def train_tokenizer(texts: Iterable[str], kind: TokenizerKind = "char", vocab_size: int = 2000) -> Any:
    """A ``PreTrainedTokenizerFast`` trained on ``texts``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    if kind == "char":
        # the corpus's characters, and printable ASCII always: a model must be able to write what
        # structured output asks of it ({, ", [ …) even when its training text never used them
        chars = sorted({c for text in texts for c in text} | set(string.printable))
        vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *chars])}
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = decoders.Fuse()
    else:
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)
    return wrap(tok)


def wrap(tok: Any) -> Any:
    """HF wrapper with Lamina's special tokens and chat template."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=ROLE_TOKENS,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def load_tokenizer(path: Path | str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
