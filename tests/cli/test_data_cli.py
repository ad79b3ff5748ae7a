import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lamina.core.workspace import Workspace
from tests.conftest import run_lamina


def write_jsonl(path: Path, n: int, prefix: str = "row") -> Path:
    path.write_text(
        "".join(
            json.dumps({"text": f"{prefix} number {i} with some words", "label": i % 3}) + "\n"
            for i in range(n)
        )
    )
    return path


def test_ingest_show_list_diff_export_append(cli, workspace: Workspace, tmp_path: Path) -> None:
    ws = ["-w", str(workspace.root)]
    src = write_jsonl(tmp_path / "in.jsonl", 200)
    # rows differing only by a number are near-duplicates of one another, so this dedups exactly
    result = cli(
        *ws,
        "data",
        "ingest",
        str(src),
        "--name",
        "rows",
        "--split",
        "val=0.1",
        "--stratify",
        "label",
    )
    assert result.code == 0, result.err
    assert "Built rows@v1" in result.out, result.out
    info = json.loads(cli(*ws, "data", "show", "rows", "--json").out)
    assert info["name"] == "rows" and info["version"] == 1 and info["rows"] == sum(info["splits"].values())
    assert set(info["splits"]) == {"train", "val"}, (result.out, info)
    assert [s["name"] for s in info["steps"]] == ["normalize", "missing", "dedup"]
    assert all({"name", "rows_in", "rows_out"} <= set(s) for s in info["steps"])
    assert (
        "Unchanged recipe and input"
        in cli(
            *ws,
            "data",
            "ingest",
            str(src),
            "--name",
            "rows",
            "--split",
            "val=0.1",
            "--stratify",
            "label",
        ).out
    )
    extra = write_jsonl(tmp_path / "more.jsonl", 5, prefix="fresh")
    appended = cli(*ws, "data", "append", "rows", str(extra))
    assert appended.code == 0 and "rows@v2" in appended.out
    listed = json.loads(cli(*ws, "data", "list", "--json").out)
    assert [r["ref"] for r in listed] == ["rows@v2", "rows@v1"]
    delta = json.loads(cli(*ws, "data", "diff", "rows@v1", "rows@v2", "--json").out)
    assert delta["rows_added"] == 5 and delta["rows_removed"] == 0
    exported = cli(*ws, "data", "export", "rows@v2", str(tmp_path / "out"), "--format", "jsonl")
    assert exported.code == 0 and (tmp_path / "out" / "train.jsonl").exists()
    lineage = cli(*ws, "lineage", "rows@v2")
    assert "previous_version" in lineage.out and "rows@v1" in lineage.out


def test_build_from_lamina_yaml(cli, workspace: Workspace, tmp_path: Path) -> None:
    write_jsonl(workspace.root / "docs.jsonl", 50)
    with open(workspace.root / "lamina.yaml", "a") as fh:
        fh.write(
            "datasets:\n  docs:\n    source: docs.jsonl\n    steps: [normalize, {filter: {min_chars: 5}}]\n"
            "    split: {fractions: {val: 0.2}}\n"
        )
    result = cli("-w", str(workspace.root), "data", "build", "docs")
    assert result.code == 0, result.err
    assert json.loads(cli("-w", str(workspace.root), "data", "show", "docs", "--json").out)["splits"] == {
        "train": 40,
        "val": 10,
    }
    missing = cli("-w", str(workspace.root), "data", "build", "nope")
    assert missing.code == 2 and "no recipe named 'nope'" in missing.err and "recipes: docs" in missing.err


def test_bad_input_is_one_clear_line(cli, workspace: Workspace, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "broken"\n')
    result = cli("-w", str(workspace.root), "data", "ingest", str(bad), "--name", "bad")
    assert result.code == 7
    assert result.err.startswith("error: bad.jsonl line 2: invalid JSON") and "--on-error skip" in result.err
    assert "Traceback" not in result.err and workspace.catalog.find() == []
    skipped = cli(
        "-w", str(workspace.root), "data", "ingest", str(bad), "--name", "bad", "--on-error", "skip"
    )
    assert skipped.code == 0 and "skipped 1 bad records" in skipped.out
    assert (
        cli("-w", str(workspace.root), "data", "ingest", str(bad), "--name", "x", "--split", "val").code == 2
    )
    assert cli("-w", str(workspace.root), "data", "show", "ghost").code == 6


def test_append_from_stdin(workspace: Workspace, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 20)
    assert (
        run_lamina(
            "-w", str(workspace.root), "data", "ingest", str(tmp_path / "in.jsonl"), "--name", "feed"
        ).returncode
        == 0
    )
    done = subprocess.run(
        [sys.executable, "-m", "lamina", "-w", str(workspace.root), "data", "append", "feed", "-"],
        input='{"text": "live record one"}\n{"text": "live record two"}\n',
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert done.returncode == 0, done.stderr
    assert "Appended 2 of 2 records" in done.stdout


@pytest.mark.slow
def test_gigabyte_jsonl_ingests_in_bounded_memory(tmp_path: Path) -> None:
    """>= 1 GB of JSONL through 'lamina data ingest' with peak RSS under 600 MB."""
    import random

    rng = random.Random(0)
    words = (
        "the of and to in a is that for it as was with be by on not he this are or his from at which".split()
    )
    pool = [" ".join(rng.choice(words) for _ in range(170)) for _ in range(1000)]
    src = tmp_path / "big.jsonl"
    size = 0
    with open(src, "w") as out:
        i = 0
        while size < 1_050_000_000:
            line = json.dumps({"id": i, "text": f"{pool[i % 1000]} record {i}"}) + "\n"
            out.write(line)
            size += len(line)
            i += 1
    Workspace.init(tmp_path / "ws")[0].close()
    probe = (
        "import resource, subprocess, sys; "
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); print(r.stderr[-2000:])"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            probe,
            sys.executable,
            "-m",
            "lamina",
            "-w",
            str(tmp_path / "ws"),
            "data",
            "ingest",
            str(src),
            "--name",
            "big",
            "--split",
            "val=0.01",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    code, peak_kb = done.stdout.split("\n")[0].split()
    assert code == "0", done.stdout
    assert int(peak_kb) / 1024 < 600, f"peak RSS {int(peak_kb) / 1024:.0f} MB"
    src.unlink()
    ws = Workspace.open(tmp_path / "ws")
    version = ws.resolve("big")
    assert version.num_rows == i and version.splits["val"] == round(i * 0.01)  # type: ignore[attr-defined]
    ws.close()
    # append streams too: the 1 GB parent is read batch by batch (dedup seeding and rewriting), and
    # the new records are staged, so peak RSS stays under the same bound
    extra = tmp_path / "more.jsonl"
    with open(extra, "w") as out:
        for k in range(50_000):
            out.write(json.dumps({"id": i + k, "text": f"{pool[k % 1000]} appended {k}"}) + "\n")
    done = subprocess.run(
        [sys.executable, "-c", probe, sys.executable, "-m", "lamina", "-w", str(tmp_path / "ws"),
         "data", "append", "big", str(extra)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    code, peak_kb = done.stdout.split("\n")[0].split()
    assert code == "0", done.stdout
    assert int(peak_kb) / 1024 < 600, f"append: peak RSS {int(peak_kb) / 1024:.0f} MB"
    ws = Workspace.open(tmp_path / "ws")
    assert ws.resolve("big").num_rows == i + 50_000  # type: ignore[attr-defined]
    ws.close()
