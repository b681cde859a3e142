"""Experiment tracking: training log rows and evaluation metrics to TensorBoard, wandb and MLflow, each in
its local mode (TensorBoard event files, a wandb *offline* run, an MLflow *file store*), one run per model
and seed (the run label, e.g. ``meru-vit-b16-s0``).

Configured by the workflow config's ``tracking:`` section (:func:`meru.config.load_tracking_config`)::

    tracking: {backends: [tensorboard, wandb, mlflow], dir: runs/tracking, project: meru-bench}

Layout under ``dir``: ``tensorboard/LABEL/events.out.tfevents.*``, ``wandb/wandb/offline-run-*-LABEL/``
(upload later with ``wandb sync``), ``mlruns/`` (``mlflow ui --backend-store-uri file://DIR/mlruns``).
Tags: ``train/<key>`` at the training step (every ``runtime.log_every`` steps), ``eval/<task>/<dataset>/<metric>``
at step 0, one value per run (``meru track``). Each backend's package is imported only when it is configured.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Iterator, Protocol

BACKENDS = ("tensorboard", "wandb", "mlflow")


class Tracker(Protocol):
    def log(self, values: dict[str, float], step: int) -> None:
        """Scalars ``{tag: value}`` at ``step``."""

    def close(self) -> None: ...


class TensorBoardTracker:
    """Event files under ``DIR/tensorboard/RUN`` (tensorboard's own writer: no torch import)."""

    def __init__(self, root: Path, run: str, project: str):
        from tensorboard.summary import Writer

        self.logdir = root / "tensorboard" / run
        self.writer = Writer(str(self.logdir))

    def log(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A wandb offline run (``mode="offline"``: nothing leaves the machine) with id and name ``RUN``, project
    ``project``; a later process logging the same run writes a second offline folder that ``wandb sync``
    appends to the same run (``resume="allow"``)."""

    def __init__(self, root: Path, run: str, project: str):
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        (root / "wandb").mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            mode="offline", dir=str(root / "wandb"), project=project, id=run, name=run, resume="allow", reinit=True
        )

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log({**values, "step": step})

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    """An MLflow run named ``RUN`` in experiment ``project`` of the file store ``DIR/mlruns`` (created on first
    use; later processes log to the same run). MLflow 3 keeps the file store in maintenance mode behind
    ``MLFLOW_ALLOW_FILE_STORE=true``, set here unless the environment says otherwise."""

    def __init__(self, root: Path, run: str, project: str):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=(root / "mlruns").resolve().as_uri())
        exp = self.client.get_experiment_by_name(project)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(project)
        found = self.client.search_runs([exp_id], filter_string=f"tags.mlflow.runName = '{run}'", max_results=1)
        self.run_id = found[0].info.run_id if found else self.client.create_run(exp_id, run_name=run).info.run_id

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.client.log_metric(self.run_id, key, value, step=step)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


TRACKERS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}


class Trackers:
    """Every configured backend for one run; ``log`` keeps finite numbers only (a NaN loss row stays in
    ``log.jsonl``, where ``None`` marks it)."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def log(self, values: dict, step: int) -> None:
        scalars = {
            k: float(v)
            for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
        for tracker in self.trackers:
            tracker.log(scalars, int(step))

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()


def open_trackers(section: dict | None, run: str) -> Trackers:
    """The trackers of a validated ``tracking:`` section (None or no backends: none) for run ``run``."""
    section = section or {}
    root = Path(section.get("dir", "runs/tracking"))
    return Trackers([TRACKERS[b](root, run, section.get("project", "meru-bench")) for b in section.get("backends", [])])


_ACTIVE: Trackers | None = None


@contextlib.contextmanager
def session(section: dict | None, run: str) -> Iterator[Trackers]:
    """Open the trackers of ``run`` for :func:`log_train` calls inside the block (``meru train``)."""
    global _ACTIVE
    _ACTIVE = open_trackers(section, run)
    try:
        yield _ACTIVE
    finally:
        _ACTIVE.close()
        _ACTIVE = None


def log_train(row: dict) -> None:
    """The training hook: one ``log.jsonl`` row as ``train/<key>`` at ``row["step"]`` (no-op outside a session)."""
    if _ACTIVE is not None:
        _ACTIVE.log({f"train/{k}": v for k, v in row.items() if k != "step"}, row["step"])
