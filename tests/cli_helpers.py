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
