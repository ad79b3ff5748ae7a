"""Which autoencoder bounds latent diffusion least in the same CPU time (docs/images.md, "Latent diffusion").

Latent diffusion's samples can be no better than its autoencoder's reconstructions. Each autoencoder
here trains alone for ``--seconds`` on the shared Fashion-MNIST (or MNIST) training split, exactly as
stage 1 does (reconstruction MSE + KL, batch 64, AdamW 1e-3), then reconstructs N test images from
their latent means; ``fid_clf`` of those reconstructions against the test images is the floor the
U-Net cannot go under.

    .venv/bin/python bench/latent_autoencoder.py [--dataset fashion-mnist] [--seconds 65]

Writes bench/results/latent_autoencoder.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import images as image_bench  # noqa: E402
from machine import machine_info, machine_line  # noqa: E402

from lamina.core.workspace import Workspace  # noqa: E402
from lamina.evaluation.images import feature_classifier, feature_metrics  # noqa: E402
from lamina.models import latent_diffusion  # noqa: E402
from lamina.training.image import load_image_data  # noqa: E402

CANDIDATES = {"(32, 64, 64), the first design": (32, 64, 64), "(16, 32, 32), the default": (16, 32, 32)}


def autoencoder(channels: tuple[int, ...]) -> torch.nn.Module:
    """Lamina's autoencoder with other block widths (everything else as ``build_autoencoder``)."""
    vae = latent_diffusion.build_autoencoder(32, 1)
    config = {**vae.config, "block_out_channels": channels}
    return type(vae).from_config(config)  # type: ignore[no-any-return]


def trained_for(vae: torch.nn.Module, train: torch.Tensor, seconds: float) -> int:
    """Stage 1's loss for ``seconds`` of wall clock; returns the steps taken."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(vae.parameters(), 1e-3, weight_decay=0.0)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        x = F.pad(train[torch.randint(len(train), (64,), generator=generator)], [2] * 4, value=-1.0)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        kl = posterior.kl().mean() / x[0].numel()
        loss = F.mse_loss(vae.decode(z).sample, x) + latent_diffusion.KL_WEIGHT * kl
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=sorted(image_bench.SOURCES), default="fashion-mnist")
    parser.add_argument("--seconds", type=float, default=65.0, help="training wall clock per autoencoder")
    parser.add_argument("--samples", type=int, default=1000, help="test images reconstructed")
    args = parser.parse_args()
    image_bench.DATA = args.dataset
    with tempfile.TemporaryDirectory(prefix="lamina-bench-ae-") as work:
        ws, _ = Workspace.init(Path(work))
        dataset = image_bench.image_dataset(ws)
        data = load_image_data(ws, dataset, class_names=None)
        train, test = data.images["train"], data.images["test"]
        clf, _ = feature_classifier(ws, dataset, (train, data.labels["train"]), (test, data.labels["test"]))
        n = min(args.samples, len(test))
        rows = []
        for name, channels in CANDIDATES.items():
            vae = autoencoder(channels)
            steps = trained_for(vae, train, args.seconds)
            vae.eval()
            with torch.no_grad():
                z = vae.encode(F.pad(test[:n], [2] * 4, value=-1.0)).latent_dist.mean
                recon = vae.decode(z).sample.clamp(-1, 1)[..., 2:30, 2:30]
            m = feature_metrics(clf, test[:n], recon)
            rows.append({"autoencoder": name, "steps": steps, "steps_per_s": steps / args.seconds,
                         "mse": float(((recon - test[:n]) ** 2).mean()), **m})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
        ws.close()
    report = {
        "machine": machine_info(),
        "dataset": args.dataset,
        "seconds": args.seconds,
        "samples": n,
        "rows": rows,
    }
    out = ROOT / "bench" / "results"
    (out / "latent_autoencoder.json").write_text(json.dumps(report, indent=1))
    lines = [
        f"# Latent diffusion autoencoders after {args.seconds:g} s ({args.dataset}, N = {n})",
        "",
        machine_line(report["machine"]),
        "",
        "| autoencoder channels | steps | steps/s | reconstruction MSE | fid_clf of reconstructions (95 %) |",
        "|---|---|---|---|---|",
        *[
            f"| {r['autoencoder']} | {r['steps']} | {r['steps_per_s']:.1f} | {r['mse']:.4f} | "
            f"{r['fid_clf']:.2f} ({r['fid_clf_low']:.1f}–{r['fid_clf_high']:.1f}) |"
            for r in rows
        ],
    ]
    (out / "latent_autoencoder.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
