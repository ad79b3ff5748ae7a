"""Embeddings and image generation: the logic behind ``/v1/embeddings`` and ``/v1/images/generations``."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from fastapi import Request

from lamina.core.errors import ConfigError
from lamina.serving.pool import EMBEDDING_MODEL, ModelNotFound, ModelPool
from lamina.serving.protocol import (
    EmbeddingList,
    EmbeddingRequest,
    ImageList,
    ImageRequest,
    InterpolationRequest,
    UnsupportedParameter,
)


class MediaService:
    def __init__(self, pool: ModelPool) -> None:
        self.pool = pool

    async def embed(self, body: EmbeddingRequest, request: Request) -> dict[str, Any]:
        """The packaged MiniLM by name, or any registered ``embedding`` model by hub reference."""
        texts = [body.input] if isinstance(body.input, str) else body.input
        if any(not t for t in texts):
            raise ConfigError("input strings must not be empty")
        if body.model in (EMBEDDING_MODEL, f"sentence-transformers/{EMBEDDING_MODEL}"):
            if body.dimensions not in (None, 384):
                raise UnsupportedParameter("dimensions", "all-MiniLM-L6-v2 gives 384 dimensions")
            from lamina.models.text_encoder import embed, load_encoder

            vectors = (await asyncio.to_thread(embed, texts)).numpy()
            tokenizer = load_encoder().tokenizer
        else:
            embedder, version = await asyncio.to_thread(self._registered, body.model)
            request.state.model_version = version.id
            if body.dimensions not in (None, embedder.dimension):
                raise UnsupportedParameter(
                    "dimensions", f"{body.model} gives {embedder.dimension} dimensions"
                )
            vectors, tokenizer = await asyncio.to_thread(embedder.encode, texts), embedder.tokenizer
        tokens = sum(len(tokenizer(t)["input_ids"]) for t in texts)
        request.state.usage = (tokens, 0)
        data = []
        for i, vector in enumerate(vectors):
            value: Any = vector.tolist()
            if body.encoding_format == "base64":
                value = base64.b64encode(vector.astype("<f4").tobytes()).decode()
            data.append({"index": i, "embedding": value})
        return EmbeddingList(
            data=data, model=body.model, usage={"prompt_tokens": tokens, "total_tokens": tokens}
        ).model_dump()

    def _registered(self, ref: str) -> tuple[Any, Any]:
        from lamina.hub.registry import model_path
        from lamina.rag.embeddings import Embedder

        try:
            version = self.pool.resolve(ref, {"embedding"})
        except ModelNotFound as exc:
            raise ModelNotFound(
                exc.message, hint=f"use {EMBEDDING_MODEL} or an imported embedding model"
            ) from None
        return Embedder(str(model_path(self.pool.ws, version))), version

    async def images(self, body: ImageRequest, request: Request) -> dict[str, Any]:
        if body.response_format == "url":
            raise UnsupportedParameter("response_format", "images come back inline: use b64_json")
        gen, version = await asyncio.to_thread(self.pool.image, body.model)
        request.state.model_version = version.id
        size = gen.info.image_size
        if body.size not in (None, "auto", f"{size}x{size}"):
            raise ConfigError(f"{body.model} makes {size}x{size} images, not {body.size}")
        prompt, class_id = image_condition(gen, body.prompt)
        images = await asyncio.to_thread(
            gen.generate, body.n, seed=body.seed, prompt=prompt, class_id=class_id, steps=body.steps,
            guidance=body.guidance, sampler=body.sampler,
        )  # fmt: skip
        return _image_list(images, body.prompt)

    async def interpolate(self, body: InterpolationRequest, request: Request) -> dict[str, Any]:
        gen, version = await asyncio.to_thread(self.pool.image, body.model)
        request.state.model_version = version.id
        prompt, class_id = image_condition(gen, body.prompt)
        images = await asyncio.to_thread(
            gen.interpolate, 1, body.frames, method=body.method, seed=body.seed, class_id=class_id,
            prompt=prompt, sample_steps=body.steps,
        )  # fmt: skip
        return _image_list(images, body.prompt)


def _image_list(images: Any, prompt: str) -> dict[str, Any]:
    from lamina.data.media import encode_png
    from lamina.models.grid import to_uint8

    data = [
        {"b64_json": base64.b64encode(encode_png(p)).decode(), "revised_prompt": prompt}
        for p in to_uint8(images)
    ]
    return ImageList(created=int(time.time()), data=data).model_dump()


def image_condition(gen: Any, prompt: str) -> tuple[str | None, int | None]:
    """Text models take the prompt; class models take a class named (or numbered) by the prompt."""
    info = gen.info
    if info.condition == "text":
        return prompt or None, None
    if info.condition == "class":
        wanted = prompt.strip().lower().removeprefix("a photo of a ").removeprefix("a ").strip()
        for i, name in enumerate(info.class_names):
            if wanted in (name.lower(), str(i)):
                return None, i
        if wanted:
            raise ConfigError(
                f"this model draws classes, and {prompt!r} names none of them",
                hint="use one of: " + ", ".join(info.class_names),
            )
    return None, None
