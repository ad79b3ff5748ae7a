"""Latent diffusion end to end on the bundled digits: both stages learn, diffusers' own loader runs the
saved pipeline and draws what Lamina draws, and ``lamina serve`` answers the official client with it."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lamina.core.errors import ConfigError
from lamina.core.workspace import Workspace
from lamina.data.pipeline import build_dataset
from lamina.data.recipe import parse_recipe
from lamina.hub.registry import model_path
from lamina.models.image_generator import ImageGenerator, ImageModelInfo
from lamina.training.image import CLASS_NAME_PRESETS, image_train_config, train_image
from lamina.training.image_families import family
from tests.training.test_image_training import DIGITS

STEPS = 120  # 30 autoencoder steps (VAE_SHARE 0.25), then 90 U-Net steps


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, Path]]:
    ws, _ = Workspace.init(tmp_path_factory.mktemp("latent") / "ws")
    build_dataset(ws, "digits", parse_recipe("digits", DIGITS, "test"))
    cfg = image_train_config("latent-diffusion", max_steps=STEPS, eval_every=6, checkpoint_every=STEPS,
                             batch_size=32)  # fmt: skip
    result = train_image(ws, "digits", "digits-ld", family="latent-diffusion", condition="class",
                         train_cfg=cfg, eval_samples=60, eval_steps=5, alias="champion",
                         class_names=CLASS_NAME_PRESETS["digits"])  # fmt: skip
    assert result.version.family == "latent-diffusion" and result.metrics["eval_samples"] == 60
    yield ws, model_path(ws, "digits-ld@champion")
    ws.close()


def test_the_autoencoder_then_the_unet_learn(trained: tuple[Workspace, Path]) -> None:
    _, folder = trained
    history = json.loads((folder / "history.json").read_text())
    points = [h for h in history if "val_loss" in h]
    autoencoder = [h["reconstruction"] for h in points if "reconstruction" in h]
    unet = [h["mse"] for h in points if "mse" in h]
    assert len(autoencoder) == 5 and len(unet) == 15, points  # evaluations at 6 … 30 | 36 … 120
    assert autoencoder[-1] < 0.7 * autoencoder[0], autoencoder
    assert min(unet[-2:]) < 0.8 * unet[0], unet
    scale = json.loads((folder / "vae" / "config.json").read_text())["scaling_factor"]
    assert scale != 1.0 and scale > 0  # fitted to the latents' spread, as Stable Diffusion's


def test_diffusers_loads_the_pipeline_and_draws_what_lamina_draws(trained: tuple[Workspace, Path]) -> None:
    from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler

    _, folder = trained
    pipe = DiffusionPipeline.from_pretrained(folder)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(
        pipe.scheduler.config, algorithm_type="dpmsolver++"
    )
    theirs = pipe(
        "a photo of a three", num_inference_steps=6, guidance_scale=1.5, num_images_per_prompt=2,
        generator=torch.Generator().manual_seed(11), output_type="np",
    ).images  # fmt: skip
    # the caption reaches the U-Net as the same token states both ways (the empty one for guidance too)
    cond, null = pipe.encode_prompt("a photo of a three", "cpu", 1, True, "")
    gen = ImageGenerator.load(folder)
    assert torch.allclose(cond, gen.captions_condition(["a photo of a three"]), atol=1e-5)
    assert torch.allclose(null, gen.null_condition(1), atol=1e-5) and not torch.allclose(cond, null, atol=0.1)
    ours = gen.generate(2, seed=11, class_id=3, steps=6, sampler="dpm", guidance=1.5)
    ours_np = ((ours + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert theirs.shape == ours_np.shape == (2, 8, 8, 1)
    # the same draw up to float summation order (the guided batch is stacked the other way round)
    assert np.abs(theirs - ours_np).max() < 1e-2 and np.abs(theirs - ours_np).mean() < 1e-3
    assert ours.std() > 0.05  # not a blank


def test_the_family_refuses_what_it_cannot_do(trained: tuple[Workspace, Path]) -> None:
    ws, folder = trained
    with pytest.raises(ConfigError, match="none conditioning is not available"):
        train_image(ws, "digits", "x", family="latent-diffusion", condition="none",
                    train_cfg=image_train_config("latent-diffusion", max_steps=2))  # fmt: skip
    with pytest.raises(ConfigError, match="class 12 is out of range"):
        ImageGenerator.load(folder).generate(1, class_id=12)


def test_lamina_serve_draws_it_for_the_openai_client(trained: tuple[Workspace, Path]) -> None:
    from openai import OpenAI
    from PIL import Image

    from tests.serving.conftest import ADMIN, start_server

    ws, _ = trained
    url, server = start_server(ws.root, {}, "latent-server.log", model=None)
    try:
        client = OpenAI(base_url=f"{url}/v1", api_key=ADMIN)
        made = client.images.generate(
            model="digits-ld@champion", prompt="seven", n=2, extra_body={"steps": 4}
        )
        assert len(made.data) == 2
        for item in made.data:
            with Image.open(io.BytesIO(base64.b64decode(item.b64_json or ""))) as img:
                assert img.size == (8, 8)
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_sides_not_divisible_by_8_are_padded_for_the_autoencoder_and_cropped_after() -> None:
    names = CLASS_NAME_PRESETS["digits"]
    data = SimpleNamespace(image_size=12, channels=1, num_classes=10, class_names=names)
    kind = family("latent-diffusion")
    model = kind.build(data, "class", "nonsaturating")
    kind.plan(model, 10)  # 2 autoencoder steps
    assert model.vae.config.sample_size == 16 and model.unet.config.sample_size == 4
    table = kind.encode_captions(["a zero", "zero", "a one", "one"]).view(2, 2, 16, -1)
    task = SimpleNamespace(data=data, condition="class", text_table=table)
    batch = {"images": torch.rand(2, 1, 12, 12) * 2 - 1, "labels": torch.tensor([0, 1])}
    kind.draw(batch, 2, torch.Generator().manual_seed(0), task)
    assert batch["noise"].shape == (2, 4, 4, 4)
    for row, label in zip(batch["cond"], (0, 1), strict=True):  # class: the caption it is asked by, or ∅
        assert torch.equal(row, table[label, 0]) or torch.equal(row, kind.null_condition()[0])
    assert set(kind.loss(model, batch)) == {"loss", "reconstruction", "kl"}
    model.step.fill_(3)
    assert set(kind.loss(model, batch)) == {"loss", "mse"}
    info = ImageModelInfo("latent-diffusion", "class", 12, 1, names)
    drawn = ImageGenerator(info, kind.modules(model)).generate(3, seed=0, class_id=2, steps=2)
    assert drawn.shape == (3, 1, 12, 12)
