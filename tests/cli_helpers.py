"""Helpers shared by the evaluation tests: the tiny evaluation-set generator and an in-process CLI runner."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "make_tiny_sets", Path(__file__).parent / "data" / "eval" / "make_tiny_sets.py"
)
mk = importlib.util.module_from_spec(_spec)  # tests/data/eval/make_tiny_sets.py: tiny wds-layout sets
_spec.loader.exec_module(mk)


def cli(module, argv: list[str]) -> int:
    """Run ``module``'s command (its ``add_arguments`` / ``run``) in-process on ``argv``."""
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))


def tiny_sets_and_model(directory: Path, kind: str = "meru", run_seed: int | None = None, **sets) -> tuple[dict, str]:
    """The tiny evaluation sets under ``directory`` and a ``tiny`` model of ``kind`` (weights from
    ``torch.manual_seed(0)``; ``run_seed``: the training seed its config records) saved as
    ``directory/model.pt``. One thread, so the embeddings do not depend on the machine. Returns
    (the sets' paths, the checkpoint path)."""
    import torch

    from meru.models import build_model
    from meru.models.checkpoints import save_model

    torch.set_num_threads(1)
    paths = mk.write_sets(directory, **sets)
    torch.manual_seed(0)
    config = None if run_seed is None else {"runtime": {"seed": run_seed}}
    save_model(build_model(kind, "tiny"), directory / "model.pt", config=config)
    return paths, str(directory / "model.pt")


def nan_loss_at(monkeypatch, bad_calls):
    """Make the training loss NaN at the given loss calls (1-based), through ``meru.losses.build_loss``."""
    import meru.losses

    real, calls = meru.losses.build_loss, [0]

    def build(*a, **k):
        fn = real(*a, **k)

        def loss(out):
            logs = fn(out)
            calls[0] += 1
            if calls[0] in bad_calls:
                logs["loss"] = logs["loss"] * float("nan")
            return logs

        return loss

    monkeypatch.setattr(meru.losses, "build_loss", build)
