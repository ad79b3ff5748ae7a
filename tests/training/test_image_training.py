"""``lamina train image`` end to end on the bundled digits: register, evaluate, generate, export, refuse."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lamina.core.catalog import EvalReport, ModelVersion
from lamina.core.errors import ConfigError
from lamina.core.workspace import Workspace
from lamina.data.pipeline import build_dataset
from lamina.data.recipe import parse_recipe
from lamina.demo import DEMO_DIGITS
from lamina.hub.registry import export_model, model_path
from lamina.models.image_generator import ImageGenerator
from lamina.training.image import (
    ImageTask,
    build_image_model,
    collapse_ratio,
    image_train_config,
    load_image_data,
    train_image,
)
from lamina.training.loop import train
from tests.conftest import lamina_here, run_lamina

DIGITS = {
    "source": {
        "type": "idx",
        "path": str(DEMO_DIGITS / "digits-images-idx3-ubyte.gz"),
        "labels": str(DEMO_DIGITS / "digits-labels-idx1-ubyte.gz"),
    },
    "split": {"fractions": {"val": 0.15}, "by": "stratified", "field": "label", "seed": 0},
}


@pytest.fixture(scope="module")
def digits_ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    ws, _ = Workspace.init(tmp_path_factory.mktemp("images") / "ws")
    build_dataset(ws, "digits", parse_recipe("digits", DIGITS, "test"))
    yield ws
    ws.close()


def quick(family: str, steps: int = 40) -> object:
    return image_train_config(family, max_steps=steps, eval_every=20, checkpoint_every=20)  # type: ignore[arg-type]


@pytest.mark.parametrize(("family", "condition"), [("vae", "class"), ("gan", "none"), ("diffusion", "class")])
def test_each_family_trains_registers_and_is_evaluated(
    digits_ws: Workspace, family: str, condition: str
) -> None:
    result = train_image(
        digits_ws, "digits", f"t-{family}", family=family, condition=condition, train_cfg=quick(family),  # type: ignore[arg-type]
        eval_samples=120, alias="champion",
    )  # fmt: skip
    version = result.version
    assert isinstance(version, ModelVersion) and version.family == family and not result.reused
    m = result.metrics
    assert (
        m["fid_clf"] > 0 and 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1 and m["eval_samples"] == 120
    )
    assert ("class_accuracy" in m) == (condition == "class")
    folder = model_path(digits_ws, f"t-{family}@champion")
    assert (folder / "samples.png").exists() and {p.name for p in (folder / "samples").iterdir()} == {
        "step-20.png",
        "step-40.png",
    }
    history = json.loads((folder / "history.json").read_text())
    vals = [h for h in history if "val_loss" in h]
    assert len(vals) == 2
    if family == "vae":  # reconstruction and KL are both logged
        assert {"recon", "kl"} <= set(vals[0])
        assert vals[-1]["val_loss"] < vals[0]["val_loss"]
    if family == "gan":
        assert {"d_loss", "g_loss", "diversity_ratio"} <= set(vals[0])
    kinds = {a.kind: rel for a, rel in digits_ws.catalog.parents(version.id)}
    assert kinds == {"run": "produced_by", "dataset_version": "trained_on"}
    assert any(isinstance(c, EvalReport) for c, _ in digits_ws.catalog.children(version.id))
    run = digits_ws.catalog.get(version.run_id)
    with sqlite3.connect(digits_ws.root / "mlflow.db") as conn:
        logged = {
            k for (k,) in conn.execute("SELECT key FROM metrics WHERE run_uuid = ?", (run.tracking_run_id,))
        }  # type: ignore[union-attr]
    assert {"loss", "val_loss", "fid_clf"} <= logged
    again = train_image(
        digits_ws, "digits", f"t-{family}", family=family, condition=condition, train_cfg=quick(family),  # type: ignore[arg-type]
        eval_samples=120,
    )  # fmt: skip
    assert again.reused and again.version.id == version.id


def test_the_fid_classifier_is_trained_once_per_dataset_version(digits_ws: Workspace) -> None:
    train_image(digits_ws, "digits", "t-vae2", family="vae", train_cfg=quick("vae", 10), eval_samples=50)
    classifiers = digits_ws.catalog.find("model_version", "digits-fid-clf")
    assert len(classifiers) == 1 and classifiers[0].metrics["val_accuracy"] > 0.9  # type: ignore[attr-defined]


def test_text_conditional_diffusion_answers_prompts(digits_ws: Workspace) -> None:
    train_image(
        digits_ws, "digits", "t-text", family="diffusion", condition="text", train_cfg=quick("diffusion", 20),
        class_names=["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
        eval_samples=40,
    )  # fmt: skip
    gen = ImageGenerator.load(model_path(digits_ws, "t-text"))
    assert gen.info.caption(7) == "a photo of a seven"
    images = gen.generate(3, seed=0, prompt="a seven", steps=4)
    assert images.shape == (3, 1, 8, 8)
    again = gen.generate(3, seed=0, prompt="a seven", steps=4)
    assert torch.equal(images, again)
    with pytest.raises(ConfigError, match="not class-conditional"):
        gen.generate(1, class_id=3)
    with pytest.raises(ConfigError, match="text conditioning is not available for"):
        train_image(digits_ws, "digits", "bad", family="vae", condition="text", train_cfg=quick("vae", 2))


def test_diffusion_exports_a_folder_diffusers_loads(digits_ws: Workspace, tmp_path: Path) -> None:
    train_image(
        digits_ws, "digits", "t-plain", family="diffusion", train_cfg=quick("diffusion", 10), eval_samples=30
    )
    out = export_model(digits_ws, "t-plain", tmp_path / "export")
    from diffusers import DDPMPipeline, DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(out))
    assert isinstance(pipe, DDPMPipeline)
    images = pipe(batch_size=2, num_inference_steps=5, output_type="np").images
    assert images.shape == (2, 8, 8, 1)


def test_resume_is_exact_including_ema(digits_ws: Workspace, tmp_path: Path) -> None:
    dataset = digits_ws.resolve("digits", kind="dataset_version")
    data = load_image_data(digits_ws, dataset)  # type: ignore[arg-type]
    cfg = image_train_config("diffusion", max_steps=6, batch_size=8, checkpoint_every=3, eval_every=100)

    def fresh() -> tuple[object, ImageTask]:
        torch.manual_seed(0)
        model = build_image_model("diffusion", data, "class", "nonsaturating")
        return model, ImageTask("diffusion", model, data, "class", "val")

    model_a, task_a = fresh()
    train(model_a, task_a, cfg, tmp_path / "a")  # type: ignore[arg-type]
    model_b, task_b = fresh()
    train(model_b, task_b, cfg.model_copy(update={"max_steps": 3}), tmp_path / "b")  # type: ignore[arg-type]
    model_c, task_c = fresh()
    torch.manual_seed(123)  # a different state everywhere: resume must restore it all
    train(model_c, task_c, cfg, tmp_path / "b", resume=True)  # type: ignore[arg-type]
    for (name, pa), pc in zip(model_a.named_parameters(), model_c.parameters(), strict=True):  # type: ignore[attr-defined]
        assert torch.equal(pa, pc), name
    for ea, ec in zip(task_a.ema.shadow_params, task_c.ema.shadow_params, strict=True):  # type: ignore[union-attr]
        assert torch.equal(ea, ec)


def test_a_request_is_checked_from_the_model_file_alone() -> None:
    """The CLI refuses a bad request before any weights load, so every refusal comes from the info."""
    from lamina.models.image_generator import ImageModelInfo

    info = ImageModelInfo("diffusion", "class", 8, 1, ["zero", "one", "two"])
    info.check(n=4, prompt=None, class_id=2, steps=10, guidance=1.5)
    for kwargs, message in [
        ({"n": 0}, "n must be between 1 and 256"),
        ({"steps": 0}, "steps must be positive"),
        ({"guidance": -1.0}, "guidance must be"),
        ({"prompt": "a three"}, "does not take a text prompt"),
        ({"class_id": 3}, "class 3 is out of range: the model has classes 0..2"),
    ]:
        request = {"n": 4, "prompt": None, "class_id": None, "steps": 10, "guidance": 1.5, **kwargs}
        with pytest.raises(ConfigError, match=message):
            info.check(**request)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="at least 2"):
        info.check_walk(2, 1, prompt=None, class_id=None, sample_steps=25, guidance=1.0)


def test_collapse_monitor_flags_a_constant_generator(digits_ws: Workspace) -> None:
    dataset = digits_ws.resolve("digits", kind="dataset_version")
    data = load_image_data(digits_ws, dataset)  # type: ignore[arg-type]
    model = build_image_model("gan", data, "none", "nonsaturating")
    from lamina.models.image_generator import ImageModelInfo

    gen = ImageGenerator(ImageModelInfo("gan", "none", 8, 1), {"generator": model.generator})
    assert collapse_ratio(gen, data.images["val"], seed=0) > 0.05  # an untrained generator still varies
    with torch.no_grad():
        for layer in model.generator.modules():
            if isinstance(layer, torch.nn.ConvTranspose2d):
                layer.weight.zero_()  # output = tanh(bias): one image whatever z is
    model.eval()
    assert collapse_ratio(gen, data.images["val"], seed=0) < 0.5


def test_mixed_sizes_are_refused_or_resized_and_modes_normalised(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "pics"
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True)
        for i in range(6):
            size = 12 if i % 2 else 16
            mode = "RGB" if label == "cat" else "L"
            Image.new(mode, (size, size), color=(i * 20, 50, 90) if mode == "RGB" else i * 20).save(
                folder / label / f"{i}.png"
            )
    ws, _ = Workspace.init(tmp_path / "ws")
    recipe = {
        "source": {"type": "images", "path": str(folder)},
        "split": {"fractions": {"val": 0.25}, "seed": 0},
    }
    version = build_dataset(ws, "pets", parse_recipe("pets", recipe, "test")).version
    with pytest.raises(ConfigError, match="different sizes") as refused:
        load_image_data(ws, version)
    assert "--image-size" in (refused.value.hint or "")
    data = load_image_data(ws, version, image_size=16)
    assert data.images["train"].shape[1:] == (3, 16, 16) and data.channels == 3
    assert any("converted to RGB" in n for n in data.notes) and any("resized" in n for n in data.notes)
    with pytest.raises(ConfigError, match="multiple of 4"):
        load_image_data(ws, version, image_size=18)
    ws.close()


def test_cli_max_minutes_stops_a_run_at_its_budget(digits_ws: Workspace) -> None:
    ws = ["--workspace", str(digits_ws.root)]
    trained = lamina_here(
        *ws, "train", "image", "--family", "vae", "--dataset", "digits", "--condition", "class",
        "--max-steps", "1000000", "--max-minutes", "0.05", "--name", "timed-vae", "--eval-samples", "40",
        "--no-track",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "time budget: stopped at step" in trained.stdout and "Registered timed-vae@v1" in trained.stdout
    version = digits_ws.resolve("timed-vae@v1")
    assert 10 < version.metrics["steps"] < 1_000_000
    assert 3.0 <= version.metrics["train_seconds"] < 30  # 3 s of steps, then one evaluation and save


def test_cli_train_generate_interpolate_and_bad_requests(digits_ws: Workspace, tmp_path: Path) -> None:
    ws = ["--workspace", str(digits_ws.root)]
    trained = run_lamina(
        *ws, "train", "image", "--family", "vae", "--dataset", "digits", "--condition", "class",
        "--max-steps", "30", "--name", "cli-vae", "--eval-samples", "40", "--class-names", "digits",
        "--no-track", timeout=300,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "Registered cli-vae@v1" in trained.stdout and "fid_clf" in trained.stdout
    # the rest through the same entry point in this process (one import of torch and diffusers)
    out = tmp_path / "gen"
    made = lamina_here(
        *ws, "generate", "image", "cli-vae", "--class", "3", "--n", "4", "--seed", "1", "--out", str(out)
    )
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", *(f"image-{i:03d}.png" for i in range(4))]
    grid = tmp_path / "walk.png"
    walked = lamina_here(
        *ws, "latent", "interpolate", "cli-vae", "--steps", "6", "--rows", "2", "--out", str(grid)
    )
    assert walked.returncode == 0 and grid.exists(), walked.stderr

    for args, message in [
        (["generate", "image", "cli-vae", "a three"], "does not take a text prompt"),
        (["generate", "image", "cli-vae", "--class", "12"], "class 12 is out of range"),
        (["generate", "image", "cli-vae", "--steps", "0"], "steps must be positive"),
        (["generate", "image", "cli-vae", "--n", "0"], "n must be between 1 and 256"),
        (["latent", "interpolate", "cli-vae", "--steps", "1"], "at least 2"),
        (["train", "image", "--family", "gan", "--dataset", "digits", "--name", "x", "--condition", "text"],
         "text conditioning is not available for"),
        (["train", "image", "--family", "vae", "--dataset", "digits", "--name", "x", "--image-size", "10"],
         "not a multiple of 4"),
    ]:  # fmt: skip
        done = lamina_here(*ws, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.slow
def test_fashion_mnist_text_to_image_from_shared_data(tmp_path: Path) -> None:
    """The flagship path on ../shared/data: captions from Fashion-MNIST labels, then 'a sneaker'."""
    from tests.conftest import SHARED_DATA

    fashion = SHARED_DATA / "images" / "fashion-mnist"
    ws, _ = Workspace.init(tmp_path / "ws")
    recipe = {
        "source": {
            "type": "idx",
            "path": str(fashion / "t10k-first2000-images-idx3-ubyte.gz"),
            "labels": str(fashion / "t10k-first2000-labels-idx1-ubyte.gz"),
        },
        "split": {"fractions": {"val": 0.1}, "by": "stratified", "field": "label", "seed": 0},
    }
    build_dataset(ws, "fashion", parse_recipe("fashion", recipe, "test"))
    ws.close()
    root = ["--workspace", str(tmp_path / "ws")]
    trained = run_lamina(
        *root, "train", "image", "--family", "diffusion", "--dataset", "fashion", "--condition", "text",
        "--class-names", "fashion-mnist", "--max-steps", "15", "--name", "fashion-text",
        "--eval-samples", "20", "--no-track", timeout=600,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    out = tmp_path / "sneakers"
    made = run_lamina(
        *root, "generate", "image", "fashion-text", "a sneaker", "--n", "2", "--steps", "3", "--out", str(out)
    )
    assert made.returncode == 0, made.stderr
    from PIL import Image

    with Image.open(out / "image-000.png") as img:
        assert img.size == (28, 28) and img.mode == "L"
    wrong = run_lamina(*root, "generate", "image", "fashion-text", "--class", "7")
    assert wrong.returncode == 2 and "give a text prompt instead" in wrong.stderr
