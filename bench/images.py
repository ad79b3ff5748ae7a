"""Image-model benchmark: training speed, quality after a fixed CPU budget, and sampler speed/quality.

On MNIST (../shared/data/images/mnist, the first 20,000 training images; 20 % held out as test), or
with ``--dataset fashion-mnist`` on the 2,000 Fashion-MNIST images the shared data has (half held
out as test, so N = 1,000 still fits; class names as captions):

1. Training images/s and steps/s per family (VAE, GAN, diffusion, latent diffusion; class-conditional,
   batch 64), measured on a short calibration run that also sizes each family's step count to the
   budget.
2. Quality: each family trains for ``--budget-min`` minutes (the trainer's ``max_seconds`` stops it
   there, evaluations included), then ``fid_clf`` (with its 95 % bootstrap
   interval) / precision / recall / class accuracy of N samples against N test images, beside the
   real-vs-real floor at the same N (test vs train images) and clipped Gaussian noise. Sampling gets
   the same wall-clock budget per image for every family (``--sample-ms``): the diffusion families
   take as many DPM-Solver steps as fit in it, measured on this machine; VAE and GAN need one pass.
3. Sampling: images/s and ``fid_clf`` for DDPM-1000 (the baseline), DDIM-50 and DPM-Solver-20 on
   the diffusion model from part 2.

    .venv/bin/python bench/images.py [--budget-min 10] [--samples 2000] [--sample-ms 40]
        [--sampler-samples 128] [--families vae,gan,diffusion,latent-diffusion] [--keep-others]

``--keep-others`` reruns only ``--families`` and keeps the other rows of the last run with the same
settings; every row names the commit and date it was measured at. Each run stores its samples'
classifier features (float16) in ``bench/results/NAME/DATASET-features.npz``, so a rerun family is
still paired with the kept ones, when the classifier gives the same features for the test images.

Peak RSS is reported. Writes bench/results/NAME.json, NAME.md and the sample grids under
bench/results/NAME/ (``--name``, default ``images``), so a smoke run under another name never
overwrites a committed run's grids.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
IMAGES = ROOT.parent / "shared" / "data" / "images"
SOURCES = {  # name → (images, labels, held-out fraction)
    "mnist": (
        "mnist/train-first20000-images-idx3-ubyte.gz", "mnist/train-first20000-labels-idx1-ubyte.gz", 0.2,
    ),
    "fashion-mnist": (
        "fashion-mnist/t10k-first2000-images-idx3-ubyte.gz",
        "fashion-mnist/t10k-first2000-labels-idx1-ubyte.gz",
        0.5,
    ),
}  # fmt: skip
DATA = "mnist"  # the dataset this run uses (--dataset)
RESULTS = ROOT / "bench" / "results"

from machine import machine_info, machine_line  # noqa: E402

from lamina.core.workspace import Workspace  # noqa: E402
from lamina.data.pipeline import build_dataset  # noqa: E402
from lamina.data.recipe import parse_recipe  # noqa: E402
from lamina.evaluation.images import (  # noqa: E402
    difference_interval,
    feature_classifier,
    feature_metrics,
    noise_images,
)
from lamina.hub.registry import model_path  # noqa: E402
from lamina.models import diffusion  # noqa: E402
from lamina.models.grid import save_grid  # noqa: E402
from lamina.models.image_generator import ImageGenerator  # noqa: E402
from lamina.training.image import (  # noqa: E402
    CLASS_NAME_PRESETS,
    image_train_config,
    load_image_data,
    train_image,
)

FAMILIES = ("vae", "gan", "diffusion", "latent-diffusion")
DIFFUSION = ("diffusion", "latent-diffusion")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def image_dataset(ws: Workspace):
    images, labels, held_out = SOURCES[DATA]
    recipe = {
        "source": {"type": "idx", "path": str(IMAGES / images), "labels": str(IMAGES / labels)},
        "split": {"fractions": {"test": held_out}, "by": "stratified", "field": "label", "seed": 0},
    }
    return build_dataset(ws, DATA, parse_recipe(DATA, recipe, "the benchmark")).version


def class_names() -> list[str] | None:
    """Fashion-MNIST's names for captions; MNIST keeps its numerals (as first measured)."""
    return CLASS_NAME_PRESETS["fashion-mnist"] if DATA == "fashion-mnist" else None


def calibrate(ws: Workspace, family: str, short: int = 10, long: int = 50) -> tuple[float, float]:
    """Seconds per training step at batch 64, and the fixed cost of one eval + checkpoint + start-up.

    Two short runs of the real trainer, ``short`` and ``long`` steps: their difference is the steady
    step time. One run alone counted its start-up and final eval as steps, which overstated a fast
    family's step time about 1.6× and gave the GAN 57 % of its budget on one machine (2026-12-02).
    """

    def seconds(steps: int) -> float:
        cfg = image_train_config(family, max_steps=steps, eval_every=10_000, checkpoint_every=10_000)
        name = f"calib-{family}" if steps == long else f"calib-{family}-short"  # steps_within samples it
        result = train_image(
            ws, DATA, name, family=family, condition="class", train_cfg=cfg,
            eval_samples=10, class_names=class_names(), track=False, eval_steps=2,
        )  # fmt: skip
        return result.metrics["train_seconds"]

    return per_unit_and_fixed(seconds, short, long)


def per_unit_and_fixed(timing: Callable[[int], float], short: int, long: int) -> tuple[float, float]:
    """A cost split into a part per step and a fixed part, from timings at ``short`` and ``long`` steps."""
    t_short, t_long = timing(short), timing(long)
    per_unit = (t_long - t_short) / (long - short)
    if per_unit <= 0:  # timing noise beat the difference: fall back to the long run's average
        per_unit = t_long / long
    return per_unit, max(0.0, t_short - short * per_unit)


def sampling_ms(ws: Workspace, ref: str, steps: int, n: int = 100) -> float:
    """Wall-clock milliseconds per image for ``n`` balanced samples (model loaded beforehand)."""
    gen = ImageGenerator.load(model_path(ws, ref))
    gen.sample(4, torch.Generator().manual_seed(1), **gen.balanced(4), steps=2, sampler="dpm")  # warm up
    started = time.perf_counter()
    gen.sample(n, torch.Generator().manual_seed(0), **gen.balanced(n), steps=steps, sampler="dpm",
               guidance=diffusion.DEFAULT_GUIDANCE)  # fmt: skip
    return (time.perf_counter() - started) * 1000 / n


def sample_features(ws: Workspace, ref: str, steps: int, n: int, clf) -> Any:
    """The classifier features of ``n`` balanced samples (seed 0), as the quality rows draw them."""
    gen = ImageGenerator.load(model_path(ws, ref))
    images = gen.sample(n, torch.Generator().manual_seed(0), **gen.balanced(n), steps=steps, sampler="dpm",
                        guidance=diffusion.DEFAULT_GUIDANCE)  # fmt: skip
    return clf.embed(images)


def paired_rows(real: Any, features: dict[str, Any]) -> list[dict]:
    """Each diffusion family against each one-pass family on the same real images: fid_clf(a) − fid_clf(b)
    with its paired 95 % interval (``difference_interval``); below 0 throughout means a is better."""
    rows = []
    for a in (f for f in features if f in DIFFUSION):
        for b in (f for f in features if f not in DIFFUSION):
            diff, low, high = difference_interval(real, features[a], features[b])
            verdict = "better" if high < 0 else "worse" if low > 0 else "not distinguishable"
            rows.append({"a": a, "b": b, "difference": diff, "low": low, "high": high, "verdict": verdict})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def steps_within(ws: Workspace, family: str, budget_ms: float) -> int:
    """The DPM-Solver steps a diffusion family can take in ``budget_ms`` per image (4-50).

    Estimated from 2 and 10 steps, then timed at the estimate and cut back while over budget: the
    extrapolation alone put a model at 50 steps that then sampled at 44 ms against 40 (2026-12-02)."""
    per_step, fixed = per_unit_and_fixed(lambda steps: sampling_ms(ws, f"calib-{family}", steps), 2, 10)
    steps = max(4, min(50, int((budget_ms - fixed) / max(per_step, 1e-6))))  # fixed: decoding and set-up
    for _ in range(3):
        measured = sampling_ms(ws, f"calib-{family}", steps)
        if measured <= budget_ms or steps == 4:
            break
        steps = max(4, min(steps - 1, int(steps * budget_ms / measured)))
    return steps


def sampler_rows(ws: Workspace, clf, test: torch.Tensor, k: int, grids: Path) -> list[dict]:
    """DDPM-1000 (the baseline), DDIM-50 and DPM-Solver-20 on the pixel diffusion model, k images each."""
    gen = ImageGenerator.load(model_path(ws, f"{DATA}-diffusion"))
    samplers = []
    for kind, steps in (("ddpm", 1000), ("ddim", 50), ("dpm", 20)):
        cond = gen.balanced(k)
        started = time.perf_counter()
        images = diffusion.sample(
            gen.modules["unet"], diffusion.sampler(kind, gen.modules["scheduler_config"]), k, steps=steps,
            generator=torch.Generator().manual_seed(0), **cond,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        asked = torch.arange(k) % len(gen.info.class_names)
        metrics = feature_metrics(clf, test[:k], images, asked)
        samplers.append(
            {"sampler": f"{kind}-{steps}", "images_per_s": k / seconds, "seconds": seconds, **metrics}
        )
        save_grid(images[:64], grids / f"sampler-{kind}-{steps}.png", nrow=8)
        print(json.dumps(samplers[-1]), flush=True)
    return samplers


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget-min", type=float, default=10.0, help="training minutes per family")
    parser.add_argument("--samples", type=int, default=2000, help="images per side for fid_clf (part 2)")
    parser.add_argument("--sampler-samples", type=int, default=128, help="images per sampler (part 3)")
    parser.add_argument(
        "--sample-ms", type=float, default=40.0, help="sampling budget per image, every family (part 2)"
    )
    parser.add_argument("--workspace", type=Path, default=None, help="reuse a workspace (default: temporary)")
    parser.add_argument("--dataset", choices=sorted(SOURCES), default="mnist", help="which shared images")
    parser.add_argument("--name", default="images", help="results file stem (bench/results/NAME.json)")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma list of families to run")
    parser.add_argument(
        "--keep-others", action="store_true",
        help="keep the other families' rows from the last NAME.json (same dataset, budget, N and sampling "
        "budget; each kept row names the run it came from): rerun one family after changing only it",
    )  # fmt: skip
    parser.add_argument(
        "--steps", default="", help="fixed step counts instead of calibrating, e.g. diffusion=1000,vae=20000"
    )
    args = parser.parse_args()
    global DATA
    DATA = args.dataset
    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = args.workspace or Path(tempfile.mkdtemp(prefix="lamina-bench-images-"))
    ws, _ = Workspace.init(work)
    grids = RESULTS / args.name  # the grids belong to this run's results, never to another name's
    grids.mkdir(parents=True, exist_ok=True)
    dataset = image_dataset(ws)
    data = load_image_data(ws, dataset, class_names=None)
    test, test_labels = data.images["test"], data.labels["test"]
    n = min(args.samples, len(test), len(data.images["train"]))
    clf, clf_version = feature_classifier(
        ws, dataset, (data.images["train"], data.labels["train"]), (test, test_labels)
    )
    print(f"fid_clf classifier {clf_version.ref}: test accuracy {clf_version.metrics['val_accuracy']:.4f}")

    # Part 1 + 2: calibrate, then train each family for the budget.
    rows, speed = [], []
    references = {
        "real vs real (test vs train, the floor)": feature_metrics(clf, test[:n], data.images["train"][:n]),
        "Gaussian noise": feature_metrics(clf, test[:n], noise_images(test[:n])),
    }
    fixed = {k: int(v) for k, v in (item.split("=") for item in args.steps.split(",") if item)}
    features = {}  # family → its samples' classifier features, for the paired comparison
    for family in args.families.split(","):
        s_per_step, overhead = calibrate(ws, family)
        # The trainer's wall-clock limit makes the budget exact: it stops at the first step past
        # budget - one final eval and checkpoint. The step count only shapes the LR schedule and the
        # eval spacing: sized 10 % past the estimate (which leaves room for 5 evals and 3-4 checkpoints),
        # so a family whose calibration ran slow still uses its whole budget, and the cut-off tail of
        # the cosine is already near its floor (0.12 of the peak at 90 %).
        budget_s = args.budget_min * 60
        steps = fixed.get(family) or max(50, int(1.1 * (budget_s - 8 * overhead) / s_per_step))
        speed.append({"family": family, "steps_per_s": 1 / s_per_step, "images_per_s": 64 / s_per_step})
        print(
            f"{family}: {1 / s_per_step:.2f} steps/s ({64 / s_per_step:,.0f} img/s), "
            f"{overhead:.1f} s per eval -> {steps} steps",
            flush=True,
        )
        cfg = image_train_config(
            family, max_steps=steps, eval_every=max(1, steps // 5), checkpoint_every=max(1, steps // 3),
            max_seconds=None if family in fixed else max(1.0, budget_s - overhead),
        )  # fmt: skip
        sample_steps = steps_within(ws, family, args.sample_ms) if family in DIFFUSION else 1
        started = time.perf_counter()
        result = train_image(
            ws, DATA, f"{DATA}-{family}", family=family, condition="class", train_cfg=cfg,
            class_names=class_names(),
            eval_samples=n, eval_steps=sample_steps, track=False,
        )  # fmt: skip
        wall = time.perf_counter() - started
        m = result.metrics
        rows.append(
            {
                "family": family, "steps": m["steps"], "train_s": m["train_seconds"], "wall_s": wall,
                "fid_clf": m["fid_clf"], "fid_low": m["fid_clf_low"], "fid_high": m["fid_clf_high"],
                "floor": m["fid_clf_floor"], "precision": m["precision"], "recall": m["recall"],
                "class_accuracy": m.get("class_accuracy"), "parameters": m["parameters"],
                "sampler": m["eval_sampler"], "warnings": result.warnings,
                "sample_ms": sampling_ms(ws, f"{DATA}-{family}", sample_steps),
            }
        )  # fmt: skip
        shutil.copyfile(model_path(ws, result.version) / "samples.png", grids / f"{DATA}-{family}.png")
        features[family] = sample_features(ws, f"{DATA}-{family}", sample_steps, n, clf)
        print(json.dumps(rows[-1]), flush=True)
    real = clf.embed(test[:n])
    kept_features = stored_features(grids, real, args) if args.keep_others else {}
    paired = paired_rows(real, {**kept_features, **features})
    save_features(grids, real, {**kept_features, **features})

    # Part 3: samplers on the pixel diffusion model (same noise seed, same N for each).
    k = args.sampler_samples
    samplers = sampler_rows(ws, clf, test, k, grids) if "diffusion" in args.families.split(",") else []
    sampler_floor = feature_metrics(clf, test[:k], test[k : 2 * k])

    machine = {**machine_info(), "threads": torch.get_num_threads()}
    for row in rows + speed + paired:
        row["run"] = f"{machine['git_sha']} {machine['date']}"
    if args.keep_others:
        last = last_run(args, n)
        kept_rows, kept_speed = kept(last, "quality", args), kept(last, "speed", args)
        paired = kept_pairs(last, paired, args) + paired
        if not samplers:  # part 3 is the pixel diffusion model's: kept with its row
            samplers, sampler_floor = last["samplers"], last["sampler_floor"]
        order = FAMILIES.index
        rows = sorted(kept_rows + rows, key=lambda q: order(q["family"]))
        speed = sorted(kept_speed + speed, key=lambda q: order(q["family"]))
    report = {
        "machine": machine,
        "dataset": DATA, "budget_min": args.budget_min, "samples": n, "sample_ms": args.sample_ms,
        "classifier": clf_version.ref,
        "classifier_accuracy": clf_version.metrics["val_accuracy"], "speed": speed, "quality": rows,
        "paired": paired,
        "references": references, "samplers": samplers, "sampler_samples": k, "sampler_floor": sampler_floor,
        "peak_rss_mb": peak_rss_mb(),
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=1))
    md = render(report)
    (RESULTS / f"{args.name}.md").write_text(md)
    print(md)
    if args.workspace is None:
        shutil.rmtree(work, ignore_errors=True)


def last_run(args: argparse.Namespace, n: int) -> dict:
    """The last run's results, when it had the same settings (refused when they differ: rows
    measured under other budgets are not comparable)."""
    path = RESULTS / f"{args.name}.json"
    if not path.exists():
        raise SystemExit(f"--keep-others: no earlier {path} to keep rows from")
    last: dict = json.loads(path.read_text())
    same = (last.get("dataset", "mnist"), last["budget_min"], last["samples"], last.get("sample_ms"))
    if same != (DATA, args.budget_min, n, args.sample_ms):
        raise SystemExit(f"--keep-others: {path} was run with (dataset, budget, N, ms) = {same}; rerun all")
    return last


def kept(last: dict, key: str, args: argparse.Namespace) -> list[dict]:
    """The last run's ``key`` rows of the families not rerun now, each naming the run it came from."""
    ran = set(args.families.split(","))
    run = f"{last['machine']['git_sha']} {last['machine']['date']}"
    return [{"run": run, **row} for row in last[key] if row["family"] not in ran]


def save_features(grids: Path, real: Any, features: dict[str, Any]) -> None:
    """Each family's sample features (and the real ones) beside its grid, as float16: enough for a
    later ``--keep-others`` run to pair a rerun family with the kept ones (about 0.5 MB per 2,000)."""
    arrays = {"real": real, **features}
    half = {k: a.astype(np.float16) for k, a in arrays.items()}
    np.savez_compressed(grids / f"{DATA}-features.npz", **half)


def stored_features(grids: Path, real: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The kept families' features from the last run, when its real features are this run's (the
    same classifier on the same test images); else none, and the kept rows go unpaired."""
    path = grids / f"{DATA}-features.npz"
    if not path.exists():
        print(f"--keep-others: no {path}, so the kept families cannot be paired with this run", flush=True)
        return {}
    stored = np.load(path)
    same = stored["real"].shape == real.shape and np.allclose(
        stored["real"].astype(np.float32), real, rtol=1e-2, atol=1e-2 * float(np.abs(real).mean())
    )
    if not same:
        print(f"--keep-others: {path} came from another classifier or test set; not paired", flush=True)
        return {}
    ran = set(args.families.split(","))
    return {k: stored[k].astype(np.float32) for k in stored.files if k != "real" and k not in ran}


def kept_pairs(last: dict, paired: list[dict], args: argparse.Namespace) -> list[dict]:
    """The last run's pairs of families neither rerun now nor paired again here, naming that run."""
    ran = set(args.families.split(","))
    now = {(p["a"], p["b"]) for p in paired}
    run = f"{last['machine']['git_sha']} {last['machine']['date']}"
    return [
        {"run": run, **p}
        for p in last.get("paired", [])
        if p["a"] not in ran and p["b"] not in ran and (p["a"], p["b"]) not in now
    ]


def render(r: dict) -> str:
    def f(v: float | None, fmt: str = ".3f") -> str:
        return "-" if v is None else format(v, fmt)

    lines = [
        f"# Image models benchmark ({r.get('dataset', 'mnist')}, class-conditional, batch 64)",
        "",
        f"{machine_line(r['machine'])} {r['machine']['threads']} threads. "
        f"fid_clf features: `{r['classifier']}` (test accuracy {r['classifier_accuracy']:.4f}). "
        f"Peak RSS {r['peak_rss_mb']:,.0f} MB.",
        "",
        "## Training speed",
        "| family | steps/s | images/s |",
        "|---|---|---|",
        *[f"| {s['family']} | {s['steps_per_s']:.2f} | {s['images_per_s']:,.0f} |" for s in r["speed"]],
        "",
        f"## Quality after {r['budget_min']:g} CPU minutes per family "
        f"({r['samples']} samples vs {r['samples']} test images; sampling budget "
        f"{r.get('sample_ms', '?')} ms per image)",
        "| model | steps | train s | fid_clf ↓ (95 % interval) | floor at N | precision | recall "
        "| class accuracy | sampler | ms/image | run (sha, date) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *[
            f"| {q['family']} | {q['steps']} | {f(q.get('train_s'), '.0f')} | "
            f"{q['fid_clf']:.2f} ({f(q.get('fid_low'), '.1f')}–"
            f"{f(q.get('fid_high'), '.1f')}) | {f(q.get('floor'), '.2f')} | {q['precision']:.3f} | "
            f"{q['recall']:.3f} | {f(q['class_accuracy'])} | {q['sampler']} | "
            f"{f(q.get('sample_ms'), '.1f')} | {q.get('run', r['machine']['git_sha'])} |"
            for q in r["quality"]
        ],
        *[
            f"| *{name}* | - | - | {m['fid_clf']:.2f} | - | {m['precision']:.3f} | {m['recall']:.3f} "
            "| - | - | - | - |"
            for name, m in r["references"].items()
        ],
        "",
        "## Diffusion against the one-pass families, paired (same real images; fid_clf(a) − fid_clf(b))",
        "",
        "Both distances share the real set, so the interval of their difference is narrower than the",
        "two intervals above suggest: below 0 throughout means *a* is better.",
        "",
        "| a | b | difference (95 % interval) | verdict | run (sha, date) |",
        "|---|---|---|---|---|",
        *[
            f"| {p['a']} | {p['b']} | {p['difference']:+.2f} ({p['low']:+.1f} to {p['high']:+.1f}) "
            f"| {p['verdict']} | {p.get('run', r['machine']['git_sha'])} |"
            for p in r.get("paired", [])
        ],
    ]
    if not r["samplers"]:  # the pixel diffusion family did not run: no sampler table
        return "\n".join(lines) + "\n"
    lines += [
        "",
        f"## Samplers on the diffusion model ({r['sampler_samples']} images each; DDPM-1000 is the baseline)",
        "| sampler | images/s | speed-up | fid_clf ↓ | precision | recall | class accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    base = r["samplers"][0]["images_per_s"]
    for s in r["samplers"]:
        lines.append(
            f"| {s['sampler']} | {s['images_per_s']:.2f} | {s['images_per_s'] / base:.0f}× | "
            f"{s['fid_clf']:.2f} | "
            f"{s['precision']:.3f} | {s['recall']:.3f} | {f(s.get('class_accuracy'))} |"
        )
    fl = r["sampler_floor"]
    lines.append(
        f"| *real vs real* | - | - | {fl['fid_clf']:.2f} | {fl['precision']:.3f} | {fl['recall']:.3f} | - |"
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
