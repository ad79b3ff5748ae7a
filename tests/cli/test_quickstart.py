import json
import shlex
import subprocess
from pathlib import Path

import pytest

from lamina.demo import DEMO_INSTRUCTIONS, DEMO_TEXT
from lamina.quickstart import quickstart_steps, run_quickstart
from tests.conftest import run_lamina

WIDE = {"COLUMNS": "400"}  # the paths the output prints must not wrap, however long the temporary folder


def test_demo_data_ships_in_the_package() -> None:
    text = DEMO_TEXT.read_text(encoding="utf-8")
    assert text.startswith("First Citizen:") and len(text) > 100_000
    rows = [json.loads(line) for line in DEMO_INSTRUCTIONS.read_text().splitlines()]
    assert len(rows) > 100 and all(set(r) == {"instruction", "response"} for r in rows)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One fresh ``lamina quickstart --no-serve`` (a folder and its output), shared by the tests below:
    the serving test starts the quickstart again in the same folder, as a user would."""
    cwd = tmp_path_factory.mktemp("quickstart")
    first = run_lamina(
        "quickstart", "--train-steps", "20", "--image-steps", "30", "--no-serve", cwd=cwd, timeout=300,
        env=WIDE,
    )  # fmt: skip
    return cwd, first


@pytest.mark.slow
def test_quickstart_command_is_idempotent(made: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    tmp_path, first = made
    assert first.returncode == 0, first.stderr
    assert "9 new artifact(s)" in first.stdout and "The champion model writes:" in first.stdout
    asked = first.stdout.split("Asked Lamina's own docs:")[1]
    assert "[1] " in asked and "relevance" in asked  # a grounded answer with its citations
    grid = Path(first.stdout.split("The digit diffusion model draws: open ")[1].split()[0])
    assert grid.exists() and grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(grid).height == 10 * (64 + 2) + 2  # one row per digit, 8×8 digits shown at 64 px
    assert "classified as the digit asked for" in first.stdout and "real vs real" in first.stdout
    rails = first.stdout.split("The guardrails, on two prompts:")[1]
    assert "blocked" in rails and "<PHONE_NUMBER>" in rails
    printed = [line for line in first.stdout.split("Next, try:")[1].strip().splitlines() if line.strip()]
    assert len(printed) == 8
    for line in printed:  # the suggested commands work exactly as printed
        done = subprocess.run(line, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{line!r} failed: {done.stderr}"
    second = run_lamina(
        "quickstart",
        "--train-steps",
        "20",
        "--image-steps",
        "30",
        "--no-serve",
        cwd=tmp_path,
        timeout=300,
        env=WIDE,
    )
    assert second.returncode == 0, second.stderr
    assert "0 new artifact(s), 9 reused" in second.stdout
    assert (
        len(list((tmp_path / "sevens").glob("image-*.png"))) == 16
    )  # the printed generate-image command ran

    status = run_lamina("--workspace", "lamina-demo", "status", "--json", "--recent", "30", cwd=tmp_path)
    info = json.loads(status.stdout)
    assert info["counts"] == {
        "source": 4,  # three demo sources and the docs as indexed
        "dataset_version": 3,  # text, digits, and the injection rail's prompts
        "run": 2,
        "model_version": 4,  # the LM, the diffusion model, the fid_clf feature classifier, the injection rail
        "eval_report": 3,
        "vector_index": 1,
    }
    assert {a["name"] for a in info["recent"]} == {
        "demo-text",
        "demo-instructions",
        "demo-digits",
        "shakespeare",
        "digits",
        "shakes-train",
        "shakes",
        "shakes-eval",
        "digits-fid-clf",
        "digits-diffusion-train",
        "digits-diffusion",
        "digits-diffusion-eval",
        "lamina-docs-documents",
        "lamina-docs",
        "injection-guard-data",
        "injection-guard",
        "injection-guard-validation",
    }
    lineage = run_lamina("--workspace", "lamina-demo", "lineage", "shakespeare", cwd=tmp_path)
    assert lineage.returncode == 0 and "derived_from" in lineage.stdout and "demo-text@v1" in lineage.stdout
    shown = json.loads(
        run_lamina("--workspace", "lamina-demo", "data", "show", "digits", "--json", cwd=tmp_path).stdout
    )
    assert set(shown["splits"]) == {"train", "val"} and Path(shown["report_html"]).exists()
    assert run_lamina("--workspace", "lamina-demo", "check", cwd=tmp_path).returncode == 0


@pytest.mark.slow
def test_run_quickstart_reports_each_step(tmp_path: Path) -> None:
    started, finished = [], []
    report = run_quickstart(
        tmp_path / "demo",
        train_steps=10,
        image_steps=10,
        on_start=lambda i, step: started.append(step.key),
        on_done=lambda i, step, result: finished.append((step.key, result.reused)),
    )
    keys = [s.key for s in quickstart_steps()]
    assert started == keys and [k for k, _ in finished] == keys
    assert not any(reused for _, reused in finished)
    assert report.workspace == (tmp_path / "demo").resolve()
    again = run_quickstart(tmp_path / "demo", train_steps=10, image_steps=10)
    assert all(result.reused for _, result in again.results)


@pytest.mark.slow
def test_quickstart_ends_serving_with_snippets_that_work(
    made: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    """Run again where a quickstart already ran (every step is reused), then it serves."""
    import os
    import socket
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMINA_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "lamina", "quickstart", "--train-steps", "20", "--image-steps", "30",
         "--port", str(port)],
        cwd=made[0], env={**env, "COLUMNS": "400"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        deadline = time.time() + 400
        while time.time() < deadline:
            line = process.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            lines.append(line)
            if line.strip().startswith("python -c"):
                break
        out = "".join(lines)
        assert "Admin API key (shown once" in out, out
        curl, rag_curl, injection_curl, echo_curl = (
            line.strip() for line in lines if line.strip().startswith("curl -s")
        )
        snippet = next(line.strip() for line in lines if line.strip().startswith("python -c"))
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)
        done = subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and '"chat.completion"' in done.stdout, done.stdout + done.stderr
        done = subprocess.run(rag_curl, shell=True, capture_output=True, text=True, timeout=60)
        answer = json.loads(done.stdout)
        assert answer["rag"]["grounded"] and answer["citations"][0]["document"].endswith(".md"), done.stdout
        done = subprocess.run(injection_curl, shell=True, capture_output=True, text=True, timeout=60)
        refused = json.loads(done.stdout)["error"]
        assert refused["code"] == "content_filter" and "rail" in refused["message"], done.stdout
        done = subprocess.run(echo_curl, shell=True, capture_output=True, text=True, timeout=60)
        echoed = json.loads(done.stdout)["choices"][0]["text"]
        assert "<PHONE_NUMBER>" in echoed and "0132" not in echoed, done.stdout
        snippet = snippet.replace("python -c", f"{shlex.quote(sys.executable)} -c", 1)
        done = subprocess.run(snippet, shell=True, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    finally:
        process.terminate()
        process.wait(timeout=30)
