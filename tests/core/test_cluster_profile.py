"""The cluster profile: a workspace whose state lives on servers (PostgreSQL, S3, pgvector), shared by
processes that run at once, here two ``lamina tune`` workers on one Optuna study."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from lamina.core.errors import WorkspaceError
from lamina.core.settings import read_yaml
from lamina.core.workspace import Workspace
from lamina.data.pipeline import build_dataset
from lamina.data.recipe import Recipe
from lamina.demo import DEMO_TEXT
from tests.conftest import S3Location, run_lamina


def test_the_cluster_profile_refuses_state_that_lives_on_one_machine(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError) as info:
        Workspace.init(tmp_path / "ws", profile="cluster")
    for needed in ("--catalog-url postgresql", "--artifact-url s3://", "--vector-url postgresql"):
        assert needed in info.value.message
    with pytest.raises(WorkspaceError, match="SQLite is one machine"):
        Workspace.init(
            tmp_path / "ws", profile="cluster", catalog_url="sqlite:///x.db", artifact_url="s3://b/p"
        )
    with pytest.raises(WorkspaceError, match="unknown profile"):
        Workspace.init(tmp_path / "ws", profile="galaxy")
    assert not (tmp_path / "ws").exists()  # nothing half-made


@pytest.mark.slow
def test_a_cluster_workspace_shares_one_study_between_two_concurrent_tune_workers(
    tmp_path: Path, postgres_url: str, s3_location: S3Location
) -> None:
    root = tmp_path / "ws"
    options = [f"--artifact-option={k}={v}" for k, v in s3_location.options.items()]
    made = run_lamina("init", str(root), "--profile", "cluster", "--catalog-url", postgres_url,
                      "--artifact-url", s3_location.url, *options)  # fmt: skip
    assert made.returncode == 0, made.stderr
    settings = read_yaml(root / "lamina.yaml")
    assert settings["catalog_url"] == postgres_url and settings["vector_url"] == postgres_url
    assert settings["artifact_url"] == s3_location.url
    assert settings["artifact_options"]["endpoint_url"] == s3_location.endpoint
    assert settings["server"]["host"] == "0.0.0.0"
    ws = Workspace.open(root)
    try:
        built = build_dataset(ws, "text", Recipe(source=str(DEMO_TEXT), split={"fractions": {"val": 0.1}}))
        assert ws.store.url.startswith("s3://") and ws.store.exists(built.version.id)  # on S3
    finally:
        ws.close()
    # two workers at once, as two machines would run them
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMINA_")}
    command = [sys.executable, "-m", "lamina", "--workspace", str(root), "tune", "--dataset", "text@v1",
               "--name", "tuned", "--trials", "2", "--max-steps", "6", "--study", "shared"]  # fmt: skip
    workers = [
        subprocess.Popen([*command, "--seed", str(seed)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for seed in (1, 2)
    ]  # fmt: skip
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err + out
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT t.number, t.state FROM trials t JOIN studies s ON s.study_id = t.study_id "
            "WHERE s.study_name = 'shared' ORDER BY t.number"
        )).all()  # fmt: skip
    engine.dispose()
    assert [r.number for r in rows] == [0, 1, 2, 3]  # four trials, none lost, none twice
    assert {r.state for r in rows} <= {"COMPLETE", "PRUNED"}
    ws = Workspace.open(root)
    try:
        versions = ws.catalog.find("model_version", "tuned")
        assert versions and all(ws.store.exists(v.id) for v in versions)  # each worker's best, on S3
        assert json.loads(run_lamina("--workspace", str(root), "status", "--json").stdout)["catalog"]
    finally:
        ws.close()


@pytest.mark.postgres
def test_pods_that_start_together_all_initialise_one_new_catalog(tmp_path: Path, postgres_url: str) -> None:
    """Each pod of the Helm chart runs `lamina init` at start, all at once on a fresh database: the
    migration lock makes one create the schema and the others find it current."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMINA_")}
    pods = [
        subprocess.Popen(
            [sys.executable, "-m", "lamina", "init", str(tmp_path / f"pod{i}"), "--catalog-url",
             postgres_url],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(3)
    ]  # fmt: skip
    for pod in pods:
        out, err = pod.communicate(timeout=120)
        assert pod.returncode == 0, err + out
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        versions = conn.execute(sa.text("SELECT version_num FROM lamina_alembic_version")).all()
    engine.dispose()
    assert len(versions) == 1
