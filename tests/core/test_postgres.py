"""A whole workspace with its catalog on a real PostgreSQL server."""

from pathlib import Path

import pytest

from lamina.core.catalog import DatasetVersion, ModelVersion, Run, Source
from lamina.core.lineage import lineage_tree
from lamina.core.workspace import Workspace

pytestmark = pytest.mark.postgres


def test_workspace_on_postgres_end_to_end(postgres_url: str, tmp_path: Path) -> None:
    ws, created = Workspace.init(tmp_path / "w", catalog_url=postgres_url)
    assert created and ws.catalog.engine.dialect.name == "postgresql"
    src = tmp_path / "raw.txt"
    src.write_text("some text")
    raw = ws.commit(src, Source(name="raw")).artifact
    ds = ws.commit(src, DatasetVersion(name="text", num_rows=1), [(raw.id, "derived_from")]).artifact
    run = ws.record(Run(name="train", task="train-lm"), [(ds.id, "trained_on")])
    mv = ws.commit(
        src, ModelVersion(name="shakes", family="causal_lm", run_id=run.id), [(run.id, "produced_by")]
    )
    ws.catalog.set_alias("shakes", "champion", mv.artifact.id)
    ws.close()

    reopened = Workspace.open(tmp_path / "w")  # lamina.yaml now names the PostgreSQL catalog
    champion = reopened.resolve("shakes@champion")
    chain = [n.artifact.kind for n in lineage_tree(reopened.catalog, champion).walk()]
    assert chain == ["model_version", "run", "dataset_version", "source"]
    assert reopened.check().ok
    assert reopened.status()["counts"] == {"source": 1, "dataset_version": 1, "run": 1, "model_version": 1}
    reopened.close()
