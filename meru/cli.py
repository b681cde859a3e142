"""Command-line entry `meru <command> ...` (also `python -m meru <command> ...`).

Each command's options live in :mod:`meru.arguments` (standard library only), its ``run(args) -> int`` in
the module that owns its concept. The command line is parsed before that module is imported, so
``meru --help``, ``meru <cmd> --help`` and argument errors import no torch, timm or open_clip.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("meru.models.info", "list registered model sizes and their parameter counts"),
    "synth": ("meru.data.synthhier", "generate the SynthHier dataset (train shards, eval sets, taxonomy)"),
    "contact-sheet": ("meru.data.contact_sheet", "render a PNG grid of samples with their captions"),
    "download": ("meru.data.download", "download RedCaps / CC3M / CC12M into webdataset shards"),
    "fetch-checkpoint": (
        "meru.data.fetch",
        "download a released checkpoint (resumable; Hugging Face hub cache; sha256 verified or recorded)",
    ),
    "evalsets": ("meru.data.evalsets", "list or prepare evaluation datasets (clip-benchmark)"),
    "train": ("meru.training.train", "train MERU or CLIP from a YAML config"),
    "embed": ("meru.evaluation.embed", "compute and cache embeddings of an evaluation set"),
    "evaluate": ("meru.evaluation.run", "compute metrics from cached embeddings"),
    "imagenet-tree": ("meru.evaluation.wordnet_tree", "build the ImageNet-1k WordNet is-a tree"),
    "tables": ("meru.reporting.tables", "build CSV/Markdown/LaTeX tables from metric JSON"),
    "track": ("meru.reporting.track", "log evaluation metrics to the experiment trackers of `tracking:`"),
    "plots": ("meru.reporting.plots", "draw the PDF/PNG figures from metric JSON and training logs"),
    "study": ("meru.reporting.studies", "a study's table, verdicts and figure (sizes, ablation, batch)"),
    "provenance": ("meru.reporting.provenance", "write PROVENANCE.md: commit, machine, versions, config, input hashes"),
    "reproduce": (
        "meru.reporting.reproduction",
        "compare a run's headline metrics with its reference (run or published)",
    ),
    "leaderboard": (
        "meru.reporting.leaderboard",
        "the family leaderboard: every released checkpoint, ours beside each published value (md, csv, html)",
    ),
    "reference": ("meru.reporting.reference", "refresh (or check) the committed reference run"),
    "claims": ("meru.reporting.claims", "the MERU paper's qualitative claims, computed with verdicts"),
    "prompt-sensitivity": (
        "meru.reporting.prompt_sensitivity",
        "tabulate zero-shot accuracy per prompt template set from metric JSON",
    ),
    "card": ("meru.reporting.cards", "write a MODEL_CARD.md (trained run) or DATASET_CARD.md (dataset directory)"),
    "report-pages": ("meru.reporting.pages", "the report's landing description and Verdicts pages (HTML)"),
    "workflow": ("meru.training.workflow", "run snakemake after reading every --configfile (YAML errors: one line)"),
}


def build_parser() -> argparse.ArgumentParser:
    from meru import __version__

    parser = argparse.ArgumentParser(prog="meru", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"meru-bench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of ``meru NAME`` (options from :mod:`meru.arguments`; imports no command module)."""
    from meru.arguments import COMMAND_ARGUMENTS

    parser = argparse.ArgumentParser(prog=f"meru {name}", description=COMMANDS[name][1])
    COMMAND_ARGUMENTS[name](parser)
    return parser


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input (missing / unreadable / malformed files, bad values), not a bug:
    ``main`` prints them as one line and exits 2 (``MERU_DEBUG=1`` shows the traceback instead)."""
    import pickle

    types: list[type[BaseException]] = [OSError, ValueError, KeyError, pickle.UnpicklingError]
    for module, name in (("yaml", "YAMLError"), ("meru.models.checkpoints", "CheckpointError")):
        if module in sys.modules:  # only if the command imported it: no import cost for the rest
            types.append(getattr(sys.modules[module], name))
    return tuple(types)


def _one_line(exc: BaseException) -> str:
    import pickle

    if isinstance(exc, pickle.UnpicklingError):  # torch.load(weights_only=True) of a file that is not ours
        return (
            "a --checkpoint / --embeddings / --text-pool file does not load with torch.load(weights_only=True): "
            "it is not a checkpoint or embedding cache, or it is corrupt"
        )
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") or argv[0] not in COMMANDS:
        parser = build_parser()
        if argv and not argv[0].startswith("-"):
            parser.error(f"unknown command {argv[0]!r}; choose one of: {', '.join(COMMANDS)}")
        if argv:
            parser.parse_args(argv)  # --version / -h exit here; unknown options error (exit 2)
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    parser = command_parser(name)
    if parser.get_default("passthrough") is not None:  # `meru workflow`: every other argument is Snakemake's, in order
        args, rest = parser.parse_known_args(argv[1:])
        args.passthrough = [a for a in rest if a != "--"]
    else:
        args = parser.parse_args(argv[1:])  # --help and bad options exit here: nothing heavy imported
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.run(args) or 0)
    except user_error_types() as e:
        if os.environ.get("MERU_DEBUG"):
            raise
        print(
            f"meru {name}: error: {_one_line(e)} ({type(e).__name__}; MERU_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 2
