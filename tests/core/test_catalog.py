import threading
from datetime import UTC
from pathlib import Path

import pytest

from lamina.core.catalog import (
    ApiKey,
    AuditEvent,
    Catalog,
    DatasetVersion,
    Deployment,
    EvalReport,
    Feedback,
    ModelVersion,
    Run,
    Source,
)
from lamina.core.catalog.db import create_catalog_engine, upgrade_schema
from lamina.core.errors import InvalidReference, NotFound
from lamina.core.lineage import lineage_tree


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    url = f"sqlite:///{tmp_path / 'cat.db'}"
    engine = create_catalog_engine(url)
    upgrade_schema(engine)
    engine.dispose()
    cat = Catalog(url)
    yield cat
    cat.close()


def populate(catalog: Catalog) -> dict[str, str]:
    """source → dataset → run → model v1, v2 (v2 fine-tuned from v1) → eval report."""
    src = catalog.add(Source(name="raw"))
    ds = catalog.add(
        DatasetVersion(name="text", num_rows=10, splits={"train": 9, "val": 1}), [(src.id, "derived_from")]
    )
    run = catalog.add(Run(name="train", task="train-lm", params={"lr": 1e-3}), [(ds.id, "trained_on")])
    v1 = catalog.add(
        ModelVersion(name="shakes", family="causal_lm", run_id=run.id), [(run.id, "produced_by")]
    )
    v2 = catalog.add(
        ModelVersion(name="shakes", family="causal_lm"), [(v1.id, "fine_tuned_from"), (ds.id, "trained_on")]
    )
    ev = catalog.add(
        EvalReport(name="shakes-eval", subject_id=v2.id, metrics={"ppl": 4.2}, passed=True),
        [(v2.id, "evaluated")],
    )
    return {"src": src.id, "ds": ds.id, "run": run.id, "v1": v1.id, "v2": v2.id, "ev": ev.id}


def test_versions_count_up_per_kind_and_name(catalog: Catalog) -> None:
    ids = populate(catalog)
    assert catalog.get(ids["v1"]).version == 1
    assert catalog.get(ids["v2"]).version == 2
    assert catalog.add(Source(name="raw")).version == 2
    assert catalog.add(Source(name="other")).version == 1
    assert catalog.counts() == {
        "source": 3,
        "dataset_version": 1,
        "run": 1,
        "model_version": 2,
        "eval_report": 1,
    }


def test_rows_carry_their_details_and_utc_times(catalog: Catalog) -> None:
    ids = populate(catalog)
    ds = catalog.get(ids["ds"])
    assert isinstance(ds, DatasetVersion)
    assert (ds.num_rows, ds.splits) == (10, {"train": 9, "val": 1})
    assert ds.created_at.tzinfo is not None and ds.created_at.utcoffset() == UTC.utcoffset(None)
    report = catalog.get(ids["ev"])
    assert isinstance(report, EvalReport) and report.passed and report.subject_id == ids["v2"]


def test_resolve_every_reference_form(catalog: Catalog) -> None:
    ids = populate(catalog)
    assert catalog.resolve("shakes").id == ids["v2"]  # latest
    assert catalog.resolve("shakes@v1").id == ids["v1"]
    assert catalog.resolve(ids["run"]).id == ids["run"]
    catalog.set_alias("shakes", "champion", ids["v1"])
    assert catalog.resolve("shakes@champion").id == ids["v1"]
    assert catalog.resolve("model_version:shakes@champion").id == ids["v1"]
    assert catalog.resolve("text", kind="dataset_version").id == ids["ds"]


def test_resolve_errors_say_what_to_do(catalog: Catalog) -> None:
    populate(catalog)
    catalog.add(Source(name="shakes"))  # same name as the model, another kind
    with pytest.raises(InvalidReference, match="more than one kind") as info:
        catalog.resolve("shakes")
    assert "model_version:shakes" in (info.value.hint or "")
    with pytest.raises(NotFound, match="no artifact named 'nope'"):
        catalog.resolve("nope")
    with pytest.raises(NotFound, match="version 9"):
        catalog.resolve("model_version:shakes@v9")
    with pytest.raises(NotFound, match="no alias 'prod'") as info:
        catalog.resolve("shakes@prod")
    assert "no aliases yet" in (info.value.hint or "")
    with pytest.raises(InvalidReference, match="aliases belong to models"):
        catalog.resolve("source:raw@latest")


def test_alias_moves_are_recorded(catalog: Catalog) -> None:
    from lamina.core.catalog import AliasEvent

    ids = populate(catalog)
    assert catalog.set_alias("shakes", "champion", ids["v1"]) is None
    assert catalog.set_alias("shakes", "champion", ids["v2"], reason="better ppl") == ids["v1"]
    assert catalog.aliases() == [
        {"model": "shakes", "alias": "champion", "version_id": ids["v2"], "ref": "shakes@v2"}
    ]
    with catalog.session() as session:
        events = session.query(AliasEvent).order_by(AliasEvent.id).all()
    assert [(e.from_version_id, e.to_version_id) for e in events] == [
        (None, ids["v1"]),
        (ids["v1"], ids["v2"]),
    ]
    with pytest.raises(NotFound):
        catalog.set_alias("shakes", "champion", ids["ds"])
    with pytest.raises(InvalidReference, match="looks like a version"):
        catalog.set_alias("shakes", "v2", ids["v2"])


def test_missing_parent_records_nothing(catalog: Catalog) -> None:
    with pytest.raises(NotFound, match="mv-00000000000000aa"):
        catalog.add(Source(name="child"), [("mv-00000000000000aa", "derived_from")])
    assert catalog.find() == []


def test_lineage_tree_walks_a_dag_once(catalog: Catalog) -> None:
    ids = populate(catalog)
    tree = lineage_tree(catalog, catalog.get(ids["ev"]))
    visited = [(n.artifact.id, n.relation, n.repeated) for n in tree.walk()]
    assert visited[0] == (ids["ev"], None, False)
    assert (ids["v2"], "evaluated", False) in visited
    assert (ids["v1"], "fine_tuned_from", False) in visited
    # the dataset feeds v2 directly and v1 through its run: expanded once, marked repeated the other time
    ds_nodes = [v for v in visited if v[0] == ids["ds"]]
    assert sorted(r for _, _, r in ds_nodes) == [False, True]
    assert sum(1 for v in visited if v[0] == ids["src"]) == 1
    shallow = lineage_tree(catalog, catalog.get(ids["ev"]), max_depth=1)
    assert [n.artifact.id for n in shallow.walk()] == [ids["ev"], ids["v2"]]
    assert shallow.parents[0].truncated
    assert tree.to_dict()["parents"][0]["relation"] == "evaluated"
    assert {(a.id, rel) for a, rel in catalog.children(ids["ds"])} == {
        (ids["run"], "trained_on"),
        (ids["v2"], "trained_on"),
    }
    assert [(a.id, rel) for a, rel in catalog.parents(ids["run"])] == [(ids["ds"], "trained_on")]


def test_concurrent_writers_get_distinct_versions(catalog: Catalog) -> None:
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            other = Catalog(catalog.url)
            for _ in range(5):
                other.add(Source(name="busy"))
            other.close()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(a.version for a in catalog.find("source", "busy")) == list(range(1, 21))


def test_serving_and_monitoring_records_round_trip(catalog: Catalog) -> None:
    ids = populate(catalog)
    dep = catalog.add(
        Deployment(name="shakes-prod", model_ref="shakes@champion", config={"quantize": "int8"})
    )
    with catalog.session() as session:
        session.add(ApiKey(id="key-1", name="ci", role="developer", key_hash="h" * 64, prefix="lam_ab12"))
        session.flush()
        session.add(
            AuditEvent(
                request_id="req-1",
                key_id="key-1",
                method="POST",
                route="/v1/completions",
                model_version_id=ids["v2"],
                status_code=200,
                tokens_in=5,
                tokens_out=7,
                latency_ms=12.5,
            )
        )
        session.add(Feedback(request_id="req-1", key_id="key-1", model_version_id=ids["v2"], rating=1))
    with catalog.session() as session:
        event = session.query(AuditEvent).one()
        feedback = session.query(Feedback).one()
        assert (event.tokens_out, event.model_version_id, event.at.tzinfo is not None) == (7, ids["v2"], True)
        assert (feedback.status, feedback.rating) == ("new", 1)
    assert catalog.get(dep.id).config == {"quantize": "int8"}
