"""Embeddings and images (logic: ``media_service``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from lamina.gateway.permissions import ANY_KEY
from lamina.serving.deps import MediaDep
from lamina.serving.protocol import (
    KEYED,
    EmbeddingList,
    EmbeddingRequest,
    ImageList,
    ImageRequest,
    InterpolationRequest,
    answers,
)  # fmt: skip

router = APIRouter(prefix="/v1")


@router.post("/embeddings", openapi_extra=ANY_KEY, responses=answers(EmbeddingList, *KEYED, 404, 503))
async def embeddings(body: EmbeddingRequest, request: Request, media: MediaDep) -> dict[str, Any]:
    return await media.embed(body, request)


@router.post("/images/generations", openapi_extra=ANY_KEY, responses=answers(ImageList, *KEYED, 404, 503))
async def images(body: ImageRequest, request: Request, media: MediaDep) -> dict[str, Any]:
    return await media.images(body, request)


@router.post("/images/interpolations", openapi_extra=ANY_KEY, responses=answers(ImageList, *KEYED, 404, 503))
async def interpolations(body: InterpolationRequest, request: Request, media: MediaDep) -> dict[str, Any]:
    """An extension: frames of a walk through the latent space (VAE, GAN, diffusion)."""
    return await media.interpolate(body, request)
