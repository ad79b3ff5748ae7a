"""VAE, GAN and diffusion building blocks, latent tools and image metrics, on real (8x8 digit) data."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lamina.demo import DEMO_DIGITS
from lamina.evaluation.images import (
    FeatureClassifier,
    feature_metrics,
    frechet_distance,
    inception_fid,
    noise_images,
    precision_recall,
)
from lamina.models import diffusion
from lamina.models.gan import GAN, Discriminator, Generator, diversity
from lamina.models.grid import make_grid, save_grid
from lamina.models.latent import interpolate, lerp, slerp
from lamina.models.vae import VAE


def digits(n: int = 256, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled 8x8 digits as (N, 1, 8, 8) in [-1, 1] and their labels."""
    raw = gzip.decompress((DEMO_DIGITS / "digits-images-idx3-ubyte.gz").read_bytes())
    count, rows, cols = struct.unpack(">III", raw[4:16])
    images = np.frombuffer(raw[16:], dtype=np.uint8).reshape(count, 1, rows, cols)[:n]
    labels = np.frombuffer(
        gzip.decompress((DEMO_DIGITS / "digits-labels-idx1-ubyte.gz").read_bytes())[8:], np.uint8
    )
    return torch.from_numpy(images.copy()).float() / 127.5 - 1, torch.from_numpy(labels[:n].astype(np.int64))


def fit(model: torch.nn.Module, loss_fn, steps: int = 40, lr: float = 2e-3) -> list[float]:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_vae_loss_is_reconstruction_plus_beta_kl_and_falls(tmp_path: Path) -> None:
    x, y = digits()
    torch.manual_seed(0)
    vae = VAE(image_size=8, channels=1, latent_dim=8, beta=0.5, num_classes=10)
    eps = torch.randn(len(x), 8)
    out = vae(x, y, eps)
    assert torch.allclose(out["loss"], out["recon"] + 0.5 * out["kl"])
    assert out["kl"] > 0 and out["recon"] > 0
    losses = fit(vae, lambda: vae(x, y)["loss"], steps=60)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    mu, logvar = vae.encode(x[:4], y[:4])
    assert mu.shape == logvar.shape == (4, 8)
    assert vae.decode(mu, y[:4]).shape == (4, 1, 8, 8)
    samples = vae.sample(5, torch.Generator().manual_seed(0), labels=torch.full((5,), 3))
    assert samples.shape == (5, 1, 8, 8) and samples.min() >= -1 and samples.max() <= 1
    with pytest.raises(ValueError, match="class-conditional"):
        vae.sample(2)
    vae.save_pretrained(tmp_path / "vae")
    again = VAE.from_pretrained(tmp_path / "vae")
    z = torch.randn(3, 8)
    assert torch.equal(again.decode(z, y[:3]), vae.decode(z, y[:3]))


def test_slerp_keeps_the_norm_that_lerp_loses() -> None:
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    assert torch.allclose(slerp(a, b, 0.0), a) and torch.allclose(slerp(a, b, 1.0), b)
    assert slerp(a, b, 0.5).norm() == pytest.approx(3.0, rel=1e-5)
    assert lerp(a, b, 0.5).norm() == pytest.approx(3 / np.sqrt(2), rel=1e-5)
    path = interpolate(a, b, 5, "linear")
    assert path.shape == (5, 2) and torch.allclose(path[2], torch.tensor([1.5, 1.5]))
    with pytest.raises(ValueError, match="at least 2"):
        interpolate(a, b, 1)


@pytest.mark.parametrize("loss", ["nonsaturating", "hinge"])
def test_gan_gives_each_network_only_its_own_gradient(loss: str) -> None:
    """The single backward pass of d_loss + g_loss must equal separate D and G updates."""
    x, y = digits(32)
    torch.manual_seed(0)
    gen = Generator(image_size=8, latent_dim=16, num_classes=10)
    disc = Discriminator(image_size=8, num_classes=10, spectral=loss == "hinge")
    gan = GAN(gen, disc, loss)  # type: ignore[arg-type]
    z = torch.randn(32, 16)
    state = {k: v.clone() for k, v in gan.state_dict().items()}
    out = gan(x, y, z)
    out["loss"].backward()
    combined = {n: p.grad.clone() for n, p in gan.named_parameters()}

    gan.load_state_dict(state)
    gan.zero_grad()
    fake = gen(z, y)
    d_real, d_fake = disc(x, y), disc(fake.detach(), y)
    if loss == "hinge":
        d_loss = torch.relu(1 - d_real).mean() + torch.relu(1 + d_fake).mean()
    else:
        d_loss = torch.nn.functional.softplus(-d_real).mean() + torch.nn.functional.softplus(d_fake).mean()
    d_grads = torch.autograd.grad(d_loss, list(disc.parameters()))
    g_fake = disc(fake, y)
    g_loss = -g_fake.mean() if loss == "hinge" else torch.nn.functional.softplus(-g_fake).mean()
    g_grads = torch.autograd.grad(g_loss, list(gen.parameters()))
    for (name, _), grad in zip(disc.named_parameters(), d_grads, strict=True):
        assert torch.allclose(combined[f"discriminator.{name}"], grad, atol=1e-5), name
    for (name, _), grad in zip(gen.named_parameters(), g_grads, strict=True):
        assert torch.allclose(combined[f"generator.{name}"], grad, atol=1e-5), name


def test_diversity_sees_mode_collapse() -> None:
    x, _ = digits(64)
    collapsed = x[:1].repeat(64, 1, 1, 1)
    assert diversity(collapsed) < 0.01
    assert diversity(x) > 3.0


@pytest.mark.parametrize("condition", ["none", "class", "text"])
def test_diffusion_learns_and_samples_with_every_sampler(condition: str) -> None:
    x, y = digits(64)
    torch.manual_seed(0)
    unet = diffusion.build_unet(8, 1, condition, 10, block_out_channels=(16, 32, 32))  # type: ignore[arg-type]
    model = diffusion.Diffusion(unet, diffusion.training_scheduler())
    cond = {"none": None, "class": y, "text": torch.randn(64, diffusion.TEXT_DIM)}[condition]
    noise, steps = torch.randn_like(x), torch.randint(1000, (64,))
    losses = fit(model, lambda: model(x, noise, steps, cond)["loss"], steps=25, lr=3e-3)
    assert np.mean(losses[-3:]) < 0.7 * losses[0]
    config = model.scheduler.config
    null = {"none": None, "class": torch.full((4,), 10), "text": torch.zeros(4, diffusion.TEXT_DIM)}[
        condition
    ]
    use = None if cond is None else cond[:4]
    for kind, n_steps in (("ddpm", 10), ("ddim", 5), ("dpm", 5)):
        out = diffusion.sample(
            unet, diffusion.sampler(kind, config), 4, steps=n_steps,
            generator=torch.Generator().manual_seed(0),
            cond=use, null=null, guidance=2.0,
        )  # fmt: skip
        assert out.shape == (4, 1, 8, 8) and torch.isfinite(out).all() and out.abs().max() <= 1
    with pytest.raises(ValueError, match="positive"):
        diffusion.sample(unet, diffusion.sampler("ddim", config), 1, steps=0)


def test_frechet_distance_matches_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 6))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = np.array([1.0, 2.0, 0, 0, 0, 0])
    assert frechet_distance(a, a + shift) == pytest.approx(5.0, rel=1e-6)
    # N(0, I) vs N(0, 4I) in d dims: d * (1 + 4 - 2*2) = d
    assert frechet_distance(a, 2 * rng.normal(size=(4000, 6))) == pytest.approx(6.0, rel=0.1)
    singular = np.concatenate([a[:, :3], np.zeros((4000, 3))], axis=1)  # dead units must not break it
    assert np.isfinite(frechet_distance(singular, a))


def test_precision_recall_separate_matching_and_disjoint_sets() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(500, 4))
    p, r = precision_recall(real, rng.normal(size=(500, 4)))
    assert p > 0.8 and r > 0.8
    p, r = precision_recall(real, rng.normal(size=(500, 4)) + 20)
    assert p == 0 and r == 0


def test_feature_metrics_rank_real_above_noise() -> None:
    x, y = digits(512)
    torch.manual_seed(0)
    clf = FeatureClassifier(1, 10)
    fit(clf, lambda: torch.nn.functional.cross_entropy(clf(x), y), steps=80, lr=3e-3)
    real_vs_real = feature_metrics(clf, x[:256], x[256:], y[256:])
    vs_noise = feature_metrics(clf, x[:256], noise_images(x[256:]))
    assert real_vs_real["fid_clf"] < vs_noise["fid_clf"] / 5
    assert real_vs_real["precision"] > vs_noise["precision"]
    assert real_vs_real["class_accuracy"] > 0.8


def test_inception_fid_uses_a_local_torchscript_checkpoint(tmp_path: Path) -> None:
    """A stand-in with the pt_inception calling convention (uint8 in, features out)."""

    class Stub(torch.nn.Module):
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            assert x.dtype == torch.uint8 and x.shape[1] == 3
            return x.float().mean(dim=(2, 3))

    path = tmp_path / "inception.pt"
    torch.jit.script(Stub()).save(str(path))
    x, _ = digits(200)
    # identical sets: 0 up to the matrix square root's rounding (a few 1e-6, by scipy/numpy version)
    assert inception_fid(path, x[:100], x[:100]) == pytest.approx(0.0, abs=1e-4)
    assert inception_fid(path, x[:100], noise_images(x[:100])) > 1.0
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    from lamina.core.errors import LaminaError

    with pytest.raises(LaminaError, match="TorchScript"):
        inception_fid(tmp_path / "junk.pt", x[:10], x[:10])


def test_grid_tiles_and_upscales(tmp_path: Path) -> None:
    x, _ = digits(6)
    grid = make_grid(((x[:, 0] + 1) * 127.5).byte().numpy(), nrow=3, pad=1)
    assert grid.shape == (2 * 9 + 1, 3 * 9 + 1)
    path = save_grid(x, tmp_path / "g.png", nrow=3)
    from PIL import Image

    with Image.open(path) as img:
        assert img.size == (3 * 66 + 2, 2 * 66 + 2)  # 8 px upscaled 8x, 2 px padding


def test_the_bootstrap_interval_holds_the_estimate_and_narrows_with_n() -> None:
    from lamina.evaluation.images import bootstrap_interval, frechet_distance

    rng = np.random.default_rng(0)
    widths = {}
    for n in (100, 1000):
        real, fake = rng.normal(size=(n, 8)), rng.normal(0.3, 1.0, size=(n, 8))
        low, high = bootstrap_interval(real, fake, rounds=100)
        assert low <= frechet_distance(real, fake) <= high
        widths[n] = high - low
    assert widths[1000] < widths[100] / 2  # about 1/√10 as wide


def test_the_paired_difference_sees_a_gap_that_overlapping_intervals_hide() -> None:
    """Two models 0.15 and 0.25 σ off in every feature, N = 400: their own intervals overlap, the
    interval of their difference excludes 0 (it is below 0: the first is better); equal models' does not."""
    from lamina.evaluation.images import bootstrap_interval, difference_interval

    rng = np.random.default_rng(1)
    real = rng.normal(size=(400, 8))
    near, far = rng.normal(0.15, 1.0, size=(400, 8)), rng.normal(0.25, 1.0, size=(400, 8))
    (_, near_high), (far_low, _) = (
        bootstrap_interval(real, near, rounds=100),
        bootstrap_interval(real, far, rounds=100),
    )
    assert far_low < near_high  # marginal intervals overlap
    diff, low, high = difference_interval(real, near, far, rounds=100)
    assert low <= diff <= high < 0
    twin = rng.normal(0.15, 1.0, size=(400, 8))
    _, low, high = difference_interval(real, near, twin, rounds=100)
    assert low < 0 < high


def test_the_class_grid_has_one_labelled_row_per_class(tmp_path: Path) -> None:
    from PIL import Image

    from lamina.models.grid import save_class_grid

    images = torch.rand(30, 1, 8, 8) * 2 - 1
    labels = torch.arange(30) % 3
    path = save_class_grid(images, labels, ["zero", "one", "two"], tmp_path / "g.png", per_class=4)
    grid = np.asarray(Image.open(path).convert("L"))
    assert grid.shape[0] == 3 * (64 + 2) + 2 and grid.shape[1] > 4 * (64 + 2)
    label_column = grid[:, : grid.shape[1] - (4 * 66 + 2)]
    assert (label_column < 128).any(axis=1).sum() > 10  # the class names are drawn in it
