import sqlalchemy as sa

from lamina.core.workspace import Workspace
from lamina.data.pipeline import build_dataset
from lamina.data.recipe import Recipe
from lamina.demo import DEMO_TEXT
from lamina.training.tune import SearchSpace, tune


def test_study_lives_in_the_catalog_and_registers_the_best(workspace: Workspace) -> None:
    build_dataset(workspace, "text", Recipe(source=str(DEMO_TEXT), split={"fractions": {"val": 0.1}}))
    space = SearchSpace(lr=(1e-4, 1e-2), batch_size=[4, 8], warmup_steps=(0, 5))
    seen: list[float] = []
    result = tune(
        workspace,
        "text",
        "tuned",
        trials=4,
        max_steps=10,
        space=space,
        on_trial=lambda n, p, v: seen.append(v),
    )
    assert result.trials == 4 and result.best_value == min(seen)
    assert set(result.best_params) == {"lr", "batch_size", "warmup_steps", "weight_decay"}
    assert result.version.ref == "tuned@v1" and result.plot is not None and result.plot.exists()
    with workspace.catalog.engine.connect() as conn:  # Optuna's tables sit beside Lamina's
        names = set(sa.inspect(conn).get_table_names())
    assert {"studies", "trials", "artifacts", "lamina_alembic_version"} <= names
    more = tune(workspace, "text", "tuned", trials=1, max_steps=10, space=space)  # another worker, same study
    assert more.trials == 5 and more.study_name == result.study_name
    assert more.best_value <= result.best_value  # the study's best, whichever worker found it
    assert workspace.check().ok  # the catalog still opens and verifies with the study inside it
