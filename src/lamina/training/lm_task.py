"""The causal-LM task for the shared loop: random windows from a token stream (as nanoGPT samples)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lamina.core.errors import ConfigError


def encode_texts(tokenizer: Any, texts: list[str], separator: str = "\n\n") -> torch.Tensor:
    """One token stream: documents joined by ``separator`` (int32 to halve memory)."""
    ids = tokenizer(separator.join(texts), add_special_tokens=False)["input_ids"]
    return torch.from_numpy(np.asarray(ids, dtype=np.int32))


class LMTask:
    """Next-token prediction on windows of ``context + 1`` tokens (``context`` predictions each)."""

    def __init__(self, train_ids: torch.Tensor, val_ids: torch.Tensor, context: int) -> None:
        for split, ids in (("train", train_ids), ("val", val_ids)):
            if len(ids) <= context + 1:
                raise ConfigError(
                    f"the {split} split has {len(ids)} tokens, not more than the context ({context})",
                    hint="use a shorter --context (or a bigger dataset)",
                )
        self.data = {"train": train_ids, "val": val_ids}
        self.context = context

    def batch(self, split: str, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        data = self.data[split]
        starts = torch.randint(len(data) - self.context - 1, (batch_size,), generator=generator)
        window = torch.stack([data[i : i + self.context + 1] for i in starts.tolist()]).long()  # (B, T+1)
        return {"input_ids": window, "labels": window}

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], labels=batch["labels"]).loss  # the model shifts labels

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["input_ids"].shape[0] * (batch["input_ids"].shape[1] - 1))
