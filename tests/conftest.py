"""Fixtures shared by the test modules: generated SynthHier datasets, made once per session per size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


class SynthHierFactory:
    """``synthhier(train_size, test_size, **opts) -> Path``: a SynthHier directory made by ``meru synth`` in a
    subprocess (as the workflow runs it), generated once per session for each distinct set of arguments.
    ``.stderr[path]`` holds that run's progress output."""

    def __init__(self, tmp_path_factory):
        self._tmp, self._made, self.stderr = tmp_path_factory, {}, {}

    def __call__(self, train_size: int, test_size: int, seed: int = 0, shard_size: int | None = None) -> Path:
        key = (train_size, test_size, seed, shard_size)
        if key not in self._made:
            out = self._tmp.mktemp("synthhier") / "d"
            argv = [sys.executable, "-m", "meru", "synth", "--out", str(out), "--train-size", str(train_size)]
            argv += ["--test-size", str(test_size), "--seed", str(seed)]
            argv += ["--shard-size", str(shard_size)] if shard_size else []
            done = subprocess.run(argv, check=True, capture_output=True, text=True)
            self._made[key], self.stderr[out] = out, done.stderr
        return self._made[key]


@pytest.fixture(scope="session")
def synthhier(tmp_path_factory) -> SynthHierFactory:
    return SynthHierFactory(tmp_path_factory)
