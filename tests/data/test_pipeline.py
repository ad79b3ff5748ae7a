import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from lamina.core.errors import ConfigError, LaminaError
from lamina.core.workspace import Workspace, render_yaml
from lamina.data import versions
from lamina.data.append import append
from lamina.data.pipeline import build_dataset
from lamina.data.recipe import Recipe, parse_recipe
from lamina.data.records import DataError
from tests.data.conftest import png_bytes


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def text_rows(n: int, seed: int = 0, words: int = 30) -> list[dict]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    return [
        {"text": " ".join(rng.choice(vocab) for _ in range(words)), "label": rng.choice("ab")}
        for _ in range(n)
    ]


def test_build_show_and_reuse(workspace: Workspace, tmp_path: Path) -> None:
    rows = text_rows(300)
    rows += [rows[0], rows[1]]  # two exact duplicates
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    recipe = Recipe(source=str(src), split={"fractions": {"val": 0.1, "test": 0.1}})
    first = build_dataset(workspace, "docs", recipe)
    v = first.version
    assert not first.reused and v.version == 1 and v.num_rows == 300
    assert v.splits == {"train": 240, "val": 30, "test": 30}
    folder = workspace.artifact_path(v)
    assert {p.name for p in (folder / "data").iterdir()} == {"train.parquet", "val.parquet", "test.parquet"}
    assert pq.read_table(folder / "data" / "val.parquet").num_rows == 30
    assert (folder / "report.html").read_text().startswith("<!doctype html>")
    info = versions.show(workspace, "docs")
    assert {"name", "version", "rows", "splits", "steps"} <= set(info)
    assert [(s["name"], s["rows_in"], s["rows_out"]) for s in info["steps"]] == [
        ("normalize", 302, 302),
        ("missing", 302, 302),
        ("dedup", 302, 300),
    ]
    assert info["duplicate_rate"] == pytest.approx(2 / 302)
    again = build_dataset(workspace, "docs", recipe)
    assert again.reused and again.version.id == v.id
    changed = build_dataset(workspace, "docs", recipe.model_copy(update={"seed": 1}))
    assert not changed.reused and changed.version.version == 2
    assert [a.id for a, rel in workspace.catalog.parents(changed.version.id)] == [v.id]


def test_splits_are_disjoint_and_cover_all_rows(workspace: Workspace, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", text_rows(500))
    recipe = Recipe(source=str(src), split={"fractions": {"val": 0.2}, "by": "stratified", "field": "label"})
    v = build_dataset(workspace, "strat", recipe).version
    seen: dict[str, str] = {}
    for split in v.splits:
        for row in versions.iter_rows(workspace, v, split):
            assert row["text"] not in seen
            seen[row["text"]] = split
    assert len(seen) == 500
    labels = {s: [r["label"] for r in versions.iter_rows(workspace, v, s)] for s in v.splits}
    share = {s: labels[s].count("a") / len(labels[s]) for s in labels}
    assert abs(share["train"] - share["val"]) < 0.02


def test_drift_is_detected_against_the_previous_version(workspace: Workspace, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "v1.jsonl", text_rows(400, seed=1, words=30))
    build_dataset(workspace, "d", Recipe(source=str(tmp_path / "v1.jsonl")))
    write_jsonl(tmp_path / "v2.jsonl", text_rows(400, seed=2, words=30))
    same = build_dataset(workspace, "d", Recipe(source=str(tmp_path / "v2.jsonl")))
    assert not any(d["drifted"] for d in same.report["drift"] if d["field"] == "text.words")
    write_jsonl(tmp_path / "v3.jsonl", text_rows(400, seed=3, words=60))
    longer = build_dataset(workspace, "d", Recipe(source=str(tmp_path / "v3.jsonl")))
    drifted = {d["field"]: d for d in longer.report["drift"]}
    assert drifted["text.words"]["drifted"] and drifted["text.words"]["p_value"] < 1e-6


def test_failed_checks_commit_nothing(workspace: Workspace, tmp_path: Path) -> None:
    rows = text_rows(10) * 3
    src = write_jsonl(tmp_path / "dups.jsonl", rows)
    with pytest.raises(DataError, match=r"failed its checks: max_dup_rate = 0.6667 \(limit 0.3\)") as info:
        build_dataset(workspace, "dups", Recipe(source=str(src), checks={"max_dup_rate": 0.3}))
    assert "nothing was committed" in (info.value.hint or "")
    report = Path(info.value.hint.split("report at ")[1])  # type: ignore[union-attr]
    assert report.exists() and "FAIL" in report.read_text()
    assert workspace.catalog.find() == [] and workspace.store.list_ids() == []
    assert list((workspace.root / ".cache" / "staging").iterdir()) == []


def test_bad_records_fail_or_are_counted(workspace: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "mixed.jsonl"
    src.write_text('{"text": "good one here"}\n{"text": oops}\n{"text": 12}\n{"text": "another good"}\n')
    with pytest.raises(DataError, match="mixed.jsonl line 2: invalid JSON"):
        build_dataset(workspace, "mixed", Recipe(source=str(src)))
    assert workspace.catalog.find() == []
    result = build_dataset(workspace, "mixed", Recipe(source=str(src), on_error="skip"))
    assert result.version.num_rows == 2
    assert result.report["errors"]["skipped"] == 2
    assert result.report["errors"]["by_kind"] == {"invalid JSON": 1, "wrong schema": 1}


def test_export_every_format(workspace: Workspace, tmp_path: Path) -> None:
    import base64

    from lamina.data.sources import RecordsSource

    rows = [{"text": f"row {i}", "image": png_bytes(i)} for i in range(20)]
    recipe = Recipe(source="in-memory", split={"fractions": {"val": 0.25}})
    build_dataset(workspace, "imgs", recipe, source=RecordsSource(records=rows))
    hf = versions.export(workspace, "imgs", tmp_path / "hf", "hf")
    import datasets

    loaded = datasets.load_from_disk(str(hf))
    assert set(loaded) == {"train", "val"} and loaded["val"].num_rows == 5
    assert isinstance(loaded["train"][0]["image"], bytes)
    versions.export(workspace, "imgs", tmp_path / "pq", "parquet")
    assert pq.read_table(tmp_path / "pq" / "train.parquet").num_rows == 15
    versions.export(workspace, "imgs", tmp_path / "jl", "jsonl")
    exported = [json.loads(line) for line in (tmp_path / "jl" / "val.jsonl").read_text().splitlines()]
    assert len(exported) == 5
    by_text = {r["text"]: r for r in rows}
    assert all(base64.b64decode(r["image"]) == by_text[r["text"]]["image"] for r in exported)
    with pytest.raises(LaminaError, match="not empty"):
        versions.export(workspace, "imgs", tmp_path / "jl", "jsonl")


def test_append_dedups_against_parent_and_keeps_splits(workspace: Workspace, tmp_path: Path) -> None:
    rows = text_rows(100)
    build_dataset(
        workspace,
        "feed",
        Recipe(source=str(write_jsonl(tmp_path / "a.jsonl", rows)), split={"fractions": {"val": 0.2}}),
    )
    before = {s: {r["text"] for r in versions.iter_rows(workspace, "feed@v1", s)} for s in ("train", "val")}
    fresh = text_rows(10, seed=9)
    result = append(workspace, "feed", [rows[0], *fresh, fresh[0]])
    v2 = result.version
    assert (v2.version, v2.num_rows, result.report["appended_rows"]) == (2, 110, 10)
    assert result.report["steps"][2]["dropped"] == {"exact_duplicate": 2}
    after = {s: {r["text"] for r in versions.iter_rows(workspace, v2, s)} for s in v2.splits}
    assert before["train"] <= after["train"] and before["val"] <= after["val"]
    delta = versions.diff(workspace, "feed@v1", "feed@v2")
    assert (delta["rows_added"], delta["rows_removed"], delta["rows_common"]) == (10, 0, 100)
    with pytest.raises(LaminaError, match="no dataset named 'nope'"):
        append(workspace, "nope", fresh)
    # any iterable streams in, and a new field becomes a column (null in the older rows)
    more = (dict(r, source="feedback") for r in text_rows(5, seed=11))
    v3 = append(workspace, "feed", more).version
    assert v3.num_rows == 115 and "source" in v3.data_schema  # type: ignore[operator]
    sources = [r.get("source") for r in versions.iter_rows(workspace, v3)]
    assert sources.count("feedback") == 5 and sources.count(None) == 110
    with pytest.raises(LaminaError, match="no records were given"):
        append(workspace, "feed", iter(()))
    assert workspace.resolve("feed").id == v3.id  # a refused append commits nothing


def test_tokenizer_is_trained_and_saved(workspace: Workspace, tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    src = write_jsonl(tmp_path / "t.jsonl", text_rows(200))
    v = build_dataset(
        workspace, "tok", Recipe(source=str(src), tokenizer={"vocab_size": 400, "encode": True})
    ).version
    tok = Tokenizer.from_file(str(workspace.artifact_path(v) / "tokenizer" / "tokenizer.json"))
    row = next(versions.iter_rows(workspace, v))
    assert tok.decode(row["input_ids"]) == row["text"]
    assert tok.get_vocab_size() <= 400 and tok.token_to_id("<|endoftext|>") is not None


def test_synthetic_rows_stay_in_train_and_under_the_cap(workspace: Workspace, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "t.jsonl", text_rows(300))
    recipe = Recipe(
        source=str(src),
        steps=["normalize", {"augment": {"copies": 2, "max_synthetic_fraction": 0.25}}],
        split={"fractions": {"val": 0.2}},
    )
    result = build_dataset(workspace, "aug", recipe)
    v = result.version
    val = list(versions.iter_rows(workspace, v, "val"))
    train = list(versions.iter_rows(workspace, v, "train"))
    assert not any(r["synthetic"] for r in val) and len(val) == 60
    synthetic = [r for r in train if r["synthetic"]]
    assert 0 < len(synthetic) <= 0.25 * (len(synthetic) + 300)
    val_origins = {r["_origin"] for r in val}
    assert not any(r["augmented_from"] in val_origins for r in synthetic)
    assert result.report["steps"][1]["synthetic_fraction"] <= 0.25


def test_recipes_validate_and_the_template_example_builds(tmp_path: Path) -> None:
    text = render_yaml()

    def example(key: str) -> dict:
        """Uncomment the example block that starts at '# KEY:' and runs to the next blank line."""
        block = text[text.index(f"# {key}:") :].split("\n\n")[0]
        return yaml.safe_load("\n".join(line[2:] for line in block.splitlines()))[key]

    recipe = parse_recipe("shakes", example("datasets")["shakes"])
    from lamina.training.lm import parse_lm_recipe

    assert parse_lm_recipe("shakes", example("models")["shakes"]).train.max_steps == 2000
    assert recipe.split.fractions == {"val": 0.1}
    with pytest.raises(ConfigError, match=r"datasets.x.split.fractions"):
        parse_recipe("x", {"source": "a.txt", "split": {"fractions": {"val": 2}}})
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_recipe("x", "a.txt")
