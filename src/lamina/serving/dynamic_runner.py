"""The generic decode path: any transformers causal LM, over its own growing ``DynamicCache``.

Used for models the fast Llama path (``llama_runner``) does not cover. A new request is prefilled
alone (its own cache), then joins the running batch: caches of different lengths are left-padded
to a common length, an attention mask hides the padding, and position ids count each row's real
tokens. Rows that leave are dropped at once (``batch_select_indices``) and padding columns no row
needs any more are trimmed, so a long request leaving frees its memory. This is how
text-generation-inference's Python ``CausalLMBatch`` did it (``concatenate`` / ``filter``).
"""

from __future__ import annotations

from typing import Any

import torch


class DynamicRunner:
    """Prefill, commit, decode and keep rows of a batch for any causal LM with a ``DynamicCache``."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.cache: Any = None
        self.mask: torch.Tensor | None = None  # (B, L) 1 for real tokens
        self._pending: list[tuple[Any, int]] = []

    @property
    def rows(self) -> int:
        return 0 if self.mask is None else self.mask.shape[0]

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]]) -> torch.Tensor:
        """Each prompt alone (its own cache); their last logits ``(k, V)``."""
        self._pending = []
        logits = []
        for ids in prompts:
            out = self.model(input_ids=torch.tensor([ids]), use_cache=True)
            self._pending.append((out.past_key_values, len(ids)))
            logits.append(out.logits[:, -1, :])
        return torch.cat(logits)

    @torch.inference_mode()
    def score(self, ids: list[int]) -> torch.Tensor:
        """The logits after every prompt token ``(T, V)`` (prompt log-probabilities, ``echo``)."""
        return self.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()

    def commit(self, joining: list[bool]) -> None:
        """Merge the caches of the prefilled prompts marked True into the batch."""
        for (cache, n), joins in zip(self._pending, joining, strict=True):
            if joins:
                self._merge(cache, n)
        self._pending = []

    def _merge(self, cache: Any, n: int) -> None:
        from transformers import DynamicCache

        new_mask = torch.ones(1, n, dtype=torch.long)
        if self.mask is None:
            self.cache, self.mask = cache, new_mask
            return
        width = max(self.mask.shape[1], n)
        layers = []
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            keys = torch.cat([_left_pad(old.keys, width), _left_pad(new.keys, width)])
            values = torch.cat([_left_pad(old.values, width), _left_pad(new.values, width)])
            layers.append((keys, values))
        self.cache = DynamicCache(ddp_cache_data=layers)
        self.mask = torch.cat([_left_pad_mask(self.mask, width), _left_pad_mask(new_mask, width)])

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        assert self.mask is not None
        mask = torch.cat([self.mask, torch.ones(self.rows, 1, dtype=torch.long)], dim=1)
        positions = self.mask.sum(dim=1, keepdim=True).long()  # each row's next position
        out = self.model(
            input_ids=tokens[:, None], attention_mask=mask, position_ids=positions,
            past_key_values=self.cache, use_cache=True,
        )  # fmt: skip
        self.mask = mask
        return out.logits[:, -1, :]

    def keep(self, rows: list[int]) -> None:
        if not rows:
            self.cache = self.mask = None
            return
        assert self.mask is not None
        if len(rows) == self.rows:
            return
        index = torch.tensor(rows)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        unused = int((self.mask.sum(dim=0) == 0).long().cumprod(dim=0).sum())  # leading padding columns
        if unused:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, unused:], layer.values[:, :, unused:]
            self.mask = self.mask[:, unused:]


def _left_pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """(B, H, L, D) → (B, H, width, D) with zeros on the left."""
    missing = width - x.shape[-2]
    if missing <= 0:
        return x
    return torch.cat([x.new_zeros(*x.shape[:-2], missing, x.shape[-1]), x], dim=-2)


def _left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - mask.shape[1]
    return torch.cat([mask.new_zeros(mask.shape[0], missing), mask], dim=1) if missing > 0 else mask
