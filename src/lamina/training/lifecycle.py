"""One training run's lifecycle, written once for every trainer (``train lm``, ``train image``,
``finetune``, ``distill``, ``tune``)::

    reuse? ─► record ─► track ─► guard( train ─► save ─► register ─► evaluate ─► promote ─► clean up )

- **reuse**: the same inputs (data version, configs, seed: the *fingerprint*) give back the version
  an earlier run registered instead of training again;
- **record**: a ``Run`` in the catalog (or, with ``resume``, the interrupted one with a checkpoint);
- **track**: an MLflow run with the parameters, metrics at each evaluation and the curves;
- **guard**: Ctrl-C leaves the run ``interrupted`` (resumable, checkpoints kept), any other error
  ``failed``; both end the MLflow run with the matching status;
- **finish**: register the saved folder with lineage (produced_by the run), write the eval
  report, mark the run completed, point the alias, delete the run's checkpoints.

Under ``accelerate launch`` every process runs the trainer; rank 0 alone writes the catalog and
MLflow (``main``), and ``share`` hands rank 0's ids to the others.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import xxhash

from lamina.core.catalog import ModelVersion, Run
from lamina.core.catalog.models import utcnow
from lamina.core.energy import EnergyMeter
from lamina.core.errors import LaminaError
from lamina.core.workspace import Workspace
from lamina.training.loop import latest_checkpoint
from lamina.training.tracking import Tracker

Share = Callable[[str | None], str]


def fingerprint(payload: dict[str, Any]) -> str:
    """A stable hash of everything that determines a trained model (data version, configs, seed)."""
    canonical = json.dumps(payload, sort_keys=True, default=str)
    return "xxh3:" + xxhash.xxh3_128(canonical.encode()).hexdigest()


def _alone(value: str | None) -> str:
    assert value is not None
    return value


class TrainingRun:
    """A context manager around one run: ``with TrainingRun.start(...) as run: ... run.finish(...)``."""

    def __init__(
        self, ws: Workspace, run: Run, *, fingerprint: str | None, tracker: Tracker | None, main: bool
    ) -> None:
        self.ws, self.run, self.fingerprint, self.tracker, self.main = ws, run, fingerprint, tracker, main
        self.display_name = run.name
        self.version: ModelVersion | None = None
        self.completed = False
        self._series: set[str] = set()  # metric names logged during training
        self.energy = EnergyMeter.from_settings(ws.settings).start()  # RAPL, else CPU time × W/core

    # -- before training -----------------------------------------------------------------------------
    @staticmethod
    def reuse(
        ws: Workspace, name: str, train_fingerprint: str, alias: str | None = None
    ) -> ModelVersion | None:
        """The version of ``name`` an earlier run with this fingerprint registered (alias moved to it)."""
        for version in ws.catalog.find("model_version", name):
            if not isinstance(version, ModelVersion):
                continue
            if version.meta.get("train_fingerprint") == train_fingerprint:
                if alias:
                    from lamina.hub.registry import promote

                    promote(ws, version.id, alias)
                return version
        return None

    @classmethod
    def start(
        cls,
        ws: Workspace,
        name: str,
        *,
        kind: str,
        task: str,
        params: dict[str, Any],
        parents: list[tuple[str, str]],
        fingerprint: str | None = None,
        resume: bool = False,
        track: bool = True,
        main: bool = True,
        share: Share = _alone,
    ) -> TrainingRun:
        """Record the run ``NAME-KIND`` (or find the interrupted one to resume) and start tracking it."""
        run_name = f"{name}-{kind}"
        run: Run | None = None
        if main:
            run = _find_resumable(ws, run_name, fingerprint) if resume else None
            if resume and run is None:
                raise LaminaError(
                    f"--resume: no interrupted run of {name!r} with these settings has a checkpoint",
                    hint="run without --resume to start a new run",
                )
            if run is None:
                recorded = Run(
                    name=run_name, task=task, status="running", started_at=utcnow(),
                    params={**params, "fingerprint": fingerprint} if fingerprint else params,
                )  # fmt: skip
                run = ws.record(recorded, parents)  # type: ignore[assignment]
            else:
                ws.catalog.update_run(run.id, status="running")
        shared = ws.catalog.get(share(run.id if run else None))
        assert isinstance(shared, Run)
        tracker = Tracker(ws.root, run_name, ws.settings.tracking_uri) if track and main else None
        if tracker:
            tracker.params(params)
            ws.catalog.update_run(shared.id, tracking_run_id=tracker.run_id)
        training = cls(ws, shared, fingerprint=fingerprint, tracker=tracker, main=main)
        training.display_name = name
        return training

    @property
    def run_dir(self) -> Path:
        """Where the loop writes checkpoints (kept until the version is registered)."""
        return self.ws.root / "runs" / self.run.id

    # -- while training ------------------------------------------------------------------------------
    def log(self, step: int, point: dict[str, float]) -> None:
        """Metrics of one evaluation into MLflow (the loop's ``on_eval``), and into the run folder's
        ``history.jsonl`` (the console draws the curve live from it)."""
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with (self.run_dir / LIVE_HISTORY).open("a") as fh:
                fh.write(json.dumps({"step": step, **point}) + "\n")
        if self.tracker:
            values = {k: v for k, v in point.items() if k != "step"}
            self._series.update(values)
            self.tracker.metrics(values, step)

    def artifact(self, path: Path) -> None:
        if self.tracker:
            self.tracker.artifact(path)

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if kind is None:
            if not self.completed and self.main:  # left without finishing: nothing was registered
                self._end("failed", "FAILED")
            return False
        if issubclass(kind, KeyboardInterrupt):
            self._end("interrupted", "KILLED")
            raise LaminaError(
                f"training of {self.display_name!r} interrupted; checkpoints are in {self.run_dir}",
                hint="continue with the same command plus --resume",
            ) from None
        self._end("failed", "FAILED")
        return False

    def _end(self, status: str, tracker_status: str) -> None:
        if self.main:
            self.ws.catalog.update_run(self.run.id, status=status, ended=True)
        if self.tracker:
            self.tracker.end(tracker_status)
            self.tracker = None

    # -- after training -----------------------------------------------------------------------------
    @contextmanager
    def scratch(self) -> Iterator[Path]:
        """An empty folder inside the workspace to save the model into before it is registered."""
        (self.ws.root / ".cache").mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.ws.root / ".cache") as tmp:
            yield Path(tmp) / "model"

    def finish(
        self,
        folder: Path,
        *,
        family: str,
        config: dict[str, Any],
        metrics: dict[str, Any],
        parents: list[tuple[str, str]] = (),  # type: ignore[assignment]
        meta: dict[str, Any] | None = None,
        description: str | None = None,
        evaluation: dict[str, Any] | None = None,
        samples: list[dict[str, str]] | None = None,
        alias: str | None = None,
        step: int = 0,
    ) -> ModelVersion:
        """Register ``folder``, record its eval report, complete the run, promote, clean up. The run's
        energy and CO2 (``lamina.core.energy``) join its metrics: MLflow, the catalog, the model card."""
        from lamina.evaluation.lm import record_eval
        from lamina.hub.registry import promote, register

        metrics = {**metrics, **self.energy.stop().metrics()}
        if self.tracker:
            # a name already logged at each evaluation (val_loss) gets final_: one series, one meaning
            final = {
                f"final_{k}" if k in self._series else k: v
                for k, v in metrics.items()
                if isinstance(v, float)
            }
            self.tracker.metrics(final, step)
            for name in ("training_curve.png", "training_curve.html", "samples.png"):
                if (folder / name).exists():
                    self.tracker.artifact(folder / name)
        run_meta = {"train_fingerprint": self.fingerprint} if self.fingerprint else {}
        version = register(
            self.ws, folder, self.display_name, family, config=config, metrics=metrics, run_id=self.run.id,
            parents=[(self.run.id, "produced_by"), *parents], meta={**run_meta, **(meta or {})},
            description=description,
        )  # fmt: skip
        if evaluation:
            record_eval(self.ws, version.id, f"{self.display_name}-eval", evaluation, samples or [])
        self.ws.catalog.update_run(self.run.id, status="completed", metrics=metrics, ended=True)
        if self.tracker:
            self.tracker.end()
            self.tracker = None
        if alias:
            promote(self.ws, version.id, alias)
        shutil.rmtree(self.run_dir, ignore_errors=True)  # the model version holds what the run made
        self.version, self.completed = version, True
        return version

    def complete(self, metrics: dict[str, Any]) -> None:
        """End the run as completed with nothing to register (a tuning worker whose every trial was
        pruned: another worker holds the best)."""
        self.ws.catalog.update_run(self.run.id, status="completed", metrics=metrics, ended=True)
        if self.tracker:
            self.tracker.end()
            self.tracker = None
        self.completed = True

    def adopt(self, version: ModelVersion) -> None:
        """On ranks other than 0: the version rank 0 registered ends this process's run too."""
        self.version, self.completed = version, True


def _find_resumable(ws: Workspace, run_name: str, train_fingerprint: str | None) -> Run | None:
    """An unfinished run with these settings that left a checkpoint behind."""
    for run in ws.catalog.find("run", run_name):
        if (
            isinstance(run, Run)
            and run.status in ("running", "interrupted", "failed")
            and run.params.get("fingerprint") == train_fingerprint
            and latest_checkpoint(ws.root / "runs" / run.id)
        ):
            return run
    return None


LIVE_HISTORY = "history.jsonl"


def run_history(ws: Workspace, run: Run) -> list[dict[str, float]]:
    """A run's evaluation points, oldest first: live from its folder while it trains, else from the
    model version it registered (``history.json``); empty when neither has any."""
    live = ws.root / "runs" / run.id / LIVE_HISTORY
    if live.is_file():
        return [json.loads(line) for line in live.read_text().splitlines() if line.strip()]
    import sqlalchemy as sa

    with ws.catalog.session() as session:
        version = session.scalar(sa.select(ModelVersion).where(ModelVersion.run_id == run.id).limit(1))
    saved = ws.artifact_path(version) / "history.json" if version is not None else None
    return json.loads(saved.read_text()) if saved is not None and saved.is_file() else []
