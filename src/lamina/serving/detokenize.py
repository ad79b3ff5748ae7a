"""Incremental detokenisation: the text each new token adds, without decoding the whole output again.

Decoding token by token is wrong for byte-level BPE (a character can span tokens) and for decoders
that join pieces (a leading space depends on what came before), and decoding the whole output at
every step costs O(length) per token. So, as text-generation-inference and vLLM do, we decode a
short window twice: the tokens before the new ones (``prefix``) and the prefix plus the new ones;
the difference is the new text, sent once it no longer ends in a half-built character (U+FFFD).
"""

from __future__ import annotations

from typing import Any

# tokens of context kept before the unread ones: enough for any decoder's joining rules
WINDOW = 5


def piece_table(tokenizer: Any) -> dict[int, str] | None:
    """Each token's text, when the tokenizer's output is just its tokens' texts side by side.

    True of a word-level vocabulary with the ``Fuse`` decoder (Lamina's character tokenizer): then a
    token's text is one dictionary lookup instead of two decoder calls. Special tokens map to "".
    None for any other tokenizer (byte-level BPE builds characters across tokens).
    """
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None or type(backend.model).__name__ != "WordLevel":
        return None
    if type(backend.decoder).__name__ != "Fuse":
        return None
    special = set(tokenizer.all_special_ids)
    return {i: ("" if i in special else t) for t, i in backend.get_vocab().items()}


class Detokenizer:
    """Feed token ids one at a time with ``add``; get back the text that is now complete."""

    def __init__(self, tokenizer: Any, table: dict[int, str] | None = None) -> None:
        backend = getattr(tokenizer, "_tokenizer", None)  # the Rust tokenizer: no Python wrapper cost
        self._decode = backend.decode if backend is not None else tokenizer.decode
        self._table = table  # from ``piece_table``, computed once per engine
        self.ids: list[int] = []
        self._prefix = 0  # start of the decoding window
        self._read = 0  # tokens up to here have been turned into text already

    def add(self, token: int) -> str:
        if self._table is not None:
            return self._table.get(token, "")
        self.ids.append(token)
        prefix_text = self._decode(self.ids[self._prefix : self._read], skip_special_tokens=True)
        text = self._decode(self.ids[self._prefix :], skip_special_tokens=True)
        if len(text) <= len(prefix_text) or text.endswith("\ufffd"):
            return ""  # nothing new yet, or a multi-byte character is still being assembled
        new = text[len(prefix_text) :]
        self._read = len(self.ids)
        self._prefix = max(0, self._read - WINDOW)
        return new
