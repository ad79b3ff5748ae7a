from pathlib import Path

import pytest

from lamina.core.errors import LaminaError
from lamina.core.workspace import Workspace
from lamina.hub import registry
from lamina.models.causal_lm import LMConfig, build_model, load_pretrained
from lamina.models.tokenizer import train_tokenizer


def tiny_folder(path: Path, seed: int = 0) -> Path:
    tok = train_tokenizer(["hello world, this is a tiny corpus.\n"], "char")
    model = build_model(LMConfig.from_preset("tiny", vocab_size=len(tok), num_layers=1), tok, seed=seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_promote_and_rollback_walk_the_alias_history(workspace: Workspace, tmp_path: Path) -> None:
    versions = [
        registry.register(
            workspace, tiny_folder(tmp_path / f"m{i}", i), "m", "causal_lm", config={"i": i}
        ).ref
        for i in range(3)
    ]
    assert versions == ["m@v1", "m@v2", "m@v3"]
    for ref in versions:
        registry.promote(workspace, ref, "champion")
    assert workspace.resolve("m@champion").ref == "m@v3"
    registry.rollback(workspace, "m")
    assert workspace.resolve("m@champion").ref == "m@v2"
    registry.rollback(workspace, "m")  # a second rollback goes further back, not forth
    assert workspace.resolve("m@champion").ref == "m@v1"
    with pytest.raises(LaminaError, match="no earlier version"):
        registry.rollback(workspace, "m")
    registry.promote(workspace, "m@v2", "challenger")
    listed = {r["ref"]: r["aliases"] for r in registry.list_models(workspace)}
    assert listed == {"m@v3": [], "m@v2": ["challenger"], "m@v1": ["champion"]}


def test_import_validates_and_export_round_trips(workspace: Workspace, tmp_path: Path) -> None:
    version = registry.import_model(workspace, tiny_folder(tmp_path / "outside"), "imported")
    assert version.ref == "imported@v1" and version.meta["imported_from"].endswith("outside")
    out = registry.export_model(workspace, "imported", tmp_path / "exported")
    assert not (out / "MANIFEST.json").exists()
    model, tok = load_pretrained(out)
    assert type(model).__name__ == "LlamaForCausalLM" and len(tok) > 10
    assert "## Limitations" in (out / "README.md").read_text()


@pytest.mark.parametrize(
    "problem", ["no-config", "not-causal", "wrong-config", "no-weights", "broken-weights"]
)
def test_bad_imports_register_nothing(workspace: Workspace, tmp_path: Path, problem: str) -> None:
    folder = tiny_folder(tmp_path / "m")
    if problem == "no-config":
        (folder / "config.json").unlink()
        message = "config.json is missing"
    elif problem == "not-causal":
        from transformers import ViTConfig

        ViTConfig(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        ).save_pretrained(folder)
        message = "not a causal language model"
    elif problem == "wrong-config":  # a causal-LM type, but not the one these weights belong to
        from transformers import BertConfig

        BertConfig(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        ).save_pretrained(folder)
        message = "weights do not match config.json"
    elif problem == "no-weights":
        (folder / "model.safetensors").unlink()
        message = "has no weights"
    else:
        (folder / "model.safetensors").write_bytes(b"not safetensors")
        message = "does not load as a causal LM"
    with pytest.raises(LaminaError, match=message):
        registry.import_model(workspace, folder, "bad")
    assert workspace.catalog.find() == []
