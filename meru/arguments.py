"""Every ``meru`` command's options, in one light module: ``meru --help`` / ``meru <cmd> --help`` and argument
errors answer from here without importing torch, timm, open_clip or any other heavy library.

``COMMAND_ARGUMENTS[name](parser)`` adds command ``name``'s options; ``meru.cli`` parses with it and only then
imports the module that owns the command for its ``run(args)``. A new command or option goes here (imports:
the standard library only); its ``run(args)`` stays in the module that owns the concept.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_N_BOOT = 1000  # paired-bootstrap resamples of `meru tables` (meru.reporting.tables' default too)
PUBLISHED_CSV = Path(__file__).resolve().parent / "resources" / "reference_values.csv"  # published values
REFERENCE_MARKER = ".meru-reference"  # the file that marks a reference run (meru.reporting.reference.MARKER)
DOWNLOAD_SOURCES = ("redcaps", "cc3m", "cc12m")  # web datasets `meru download` knows (meru.data.download.SOURCES)
# choices: tasks registry (the names of meru.evaluation.run.TASKS; tests/test_fast_help.py checks they agree)
EVALUATE_TASKS = (
    "zeroshot",
    "retrieval",
    "linear-probe",
    "structure",
    "traversal",
    "prompts",
    "hierarcaps",
    "caption-choice",
)


class _AppendSource(argparse.Action):
    """Collect ``--evalset`` / ``--text-pool`` values in command-line order as (kind, value) pairs."""

    def __call__(self, parser, namespace, values, option_string=None):
        sources = list(getattr(namespace, "sources", None) or [])
        sources.append((self.dest, values))
        namespace.sources = sources


def add_info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--sizes",
        nargs="*",
        default=None,
        metavar="SIZE",
        help="only these sizes (default: all registered, including $MERU_SIZES_FILE's)",
    )


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output directory (replaced atomically when complete)")
    parser.add_argument("--train-size", type=int, default=20000, help="training images (default 20000)")
    parser.add_argument("--test-size", type=int, default=2000, help="test images for the eval sets (default 2000)")
    parser.add_argument("--image-size", type=int, default=32, help="image side in pixels, even, >= 16 (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--shard-size", type=int, default=5000, help="samples per shard (default 5000)")
    parser.add_argument(
        "--add-attribute-sets",
        action="store_true",
        help="only add the missing eval/zeroshot_{colour,count,size,texture} sets to the existing SynthHier "
        "directory --out (made before they existed; the training data is not touched)",
    )


def add_contact_sheet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="SynthHier output directory or any shard directory")
    parser.add_argument("--out", required=True, help="output PNG path")
    parser.add_argument("--n", type=int, default=24, help="number of samples (default 24)")
    parser.add_argument("--columns", type=int, default=6, help="grid columns (default 6)")


def add_download_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, choices=DOWNLOAD_SOURCES, help="web dataset to download")
    parser.add_argument(
        "--annotations",
        required=True,
        help="RedCaps: annotations zip / extracted dir / json; CC3M/CC12M: the TSV; 'hf': the hub copy",
    )
    parser.add_argument("--out", required=True, help="output directory (shards + manifest.json); reruns resume")
    parser.add_argument("--image-size", type=int, default=224, help="short side after resizing (default 224)")
    parser.add_argument("--processes", type=int, default=1, help="img2dataset worker processes")
    parser.add_argument("--threads", type=int, default=16, help="download threads per process")
    parser.add_argument(
        "--subreddit-prefix-prob",
        type=float,
        default=0.5,
        help="recorded in the manifest; the prefix itself is applied at training time",
    )
    parser.add_argument("--max-samples", type=int, default=None, help="keep only the first N unique URLs")
    parser.add_argument("--timeout", type=int, default=10, help="seconds per request")
    parser.add_argument("--retries", type=int, default=0, help="retries per failed URL")
    parser.add_argument("--shard-size", type=int, default=10000, help="URLs per shard")


def add_evalsets_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action", choices=("list", "prepare"), help="list: the dataset table; prepare: fetch one dataset"
    )
    parser.add_argument("--markdown", action="store_true", help="list: print a Markdown table")
    parser.add_argument(
        "--dataset", help="prepare: MERU or clip-benchmark name, hierarcaps, sugar_crepe/SUBSET or aro/SUBSET"
    )
    parser.add_argument("--root", help="prepare: directory that holds the dataset files")
    parser.add_argument("--split", default="test", help="prepare: which split (default test)")
    parser.add_argument(
        "--coco-dir", help="prepare hierarcaps: local COCO val2014 image folder (skips those downloads)"
    )
    parser.add_argument(
        "--source",
        help="prepare sugar_crepe/SUBSET, aro/SUBSET: folder with the released annotation file (SugarCrepe: "
        "SUBSET.json, ARO: visual_genome_*.json; default --root)",
    )
    parser.add_argument(
        "--images",
        help="prepare sugar_crepe/aro: image folder (default SOURCE/val2017 for SugarCrepe, SOURCE/images for ARO)",
    )


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="train YAML or workflow YAML (train: + train_overrides:)")
    from meru.kinds import trainable_kinds  # the one list of model kinds (light: no torch)

    parser.add_argument("--model", choices=trainable_kinds(), required=True, help="model kind")
    parser.add_argument("--size", required=True, help="registered model size (see `meru info`)")
    parser.add_argument("--seed", type=int, required=True, help="training seed")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.SUB=VALUE", help="override a config key")
    parser.add_argument(
        "--tracking-config", help="YAML whose `tracking:` section names the experiment trackers (default: --config)"
    )
    parser.add_argument(
        "--resume",
        choices=["auto", "never"],
        default="auto",
        help="auto: continue from the run directory's last checkpoint; never: start fresh",
    )
    parser.add_argument(
        "--apply-config-changes",
        action="store_true",
        help="on resume, apply changed optimiser/schedule/augmentation settings (recorded in log.jsonl) "
        "instead of refusing them",
    )


def add_embed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="our model.pt, a released .pth of the MERU family (official MERU/CLIP; HyCoCLIP, UNCHA, ATMG and "
        "open_clip training checkpoints with --checkpoint-entry), or an open_clip model: openclip:ARCH:WEIGHTS | openclip:hf-hub:ORG/REPO | "
        "openclip:local-dir:DIR (CLIP geometry)",
    )
    parser.add_argument(
        "--checkpoint-entry",
        metavar="JSON",
        help="a released checkpoint's pretrained.checkpoints entry as JSON (format, kind, size, curv_init, "
        "learn_curv, arch; docs/CHECKPOINTS.md): how to read a file of the MERU family (default: an official file)",
    )
    parser.add_argument(
        "--evalset",
        action=_AppendSource,
        help="clip-benchmark wds-layout directory, or a dataset name (with --root); repeatable",
    )
    parser.add_argument(
        "--text-pool", action=_AppendSource, help="caption pool JSONL (SynthHier eval/captions.jsonl); repeatable"
    )
    parser.add_argument("--root", help="directory holding the named dataset's files")
    parser.add_argument(
        "--name",
        action="append",
        help="dataset name recorded in the cache (and the metric record), one per --evalset/--text-pool in "
        "the same order (default: the directory or file name, or the dataset name as given)",
    )
    parser.add_argument(
        "--out",
        required=True,
        action="append",
        help="output embedding cache (.pt), one per --evalset/--text-pool, in the same order",
    )
    parser.add_argument("--split", default="test", help="split of the eval set (wds: a subfolder; default test)")
    parser.add_argument("--batch-size", type=int, default=256, help="images / texts per forward pass")
    parser.add_argument("--num-workers", type=int, default=0, help="data-loading worker processes")
    parser.add_argument(
        "--prompts",
        choices=("auto", "meru", "clip_benchmark"),
        default="auto",
        help="prompt ensemble: MERU's (where it has one; 'auto') or clip-benchmark's",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument(
        "--no-prompt-sets",
        dest="prompt_sets",
        action="store_false",
        help="classification: skip the alternative template sets (prompt sensitivity)",
    )
    parser.add_argument(
        "--amp",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="bf16 autocast for the towers (auto: on CUDA; heads always float32)",
    )


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=EVALUATE_TASKS, help="which evaluation")
    parser.add_argument("--embeddings", help="embedding cache of the test set (meru embed --out)")
    parser.add_argument("--train-embeddings", help="linear-probe: embedding cache of the probe's training set")
    parser.add_argument(
        "--val-embeddings",
        help="linear-probe: embedding cache of the dataset's val split, on which C is chosen "
        "(default: a stratified 20%% slice of the training set)",
    )
    parser.add_argument("--text-pool", help="structure/traversal: caption-pool cache (meru embed --text-pool)")
    parser.add_argument("--tree", help="zeroshot: taxonomy edge file ('parent child' lines) for hierarchical metrics")
    parser.add_argument("--tree-names", help="zeroshot: node id -> name JSON for the tree")
    parser.add_argument("--out", required=True, help="metric JSON to write")
    parser.add_argument("--label", help="run name (default: KIND-SIZE-sSEED)")
    parser.add_argument("--seed", type=int, help="training seed (default: from the checkpoint config)")
    parser.add_argument(
        "--size",
        help="model size of the record (default: from the checkpoint); released checkpoints trained on other "
        "data than MERU's RedCaps ones get SIZE-DATA, e.g. vit-s16-grit",
    )
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the intervals")
    parser.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap resampling")
    parser.add_argument("--steps", type=int, default=50, help="traversal: points from image to [ROOT]")
    parser.add_argument("--max-images", type=int, help="traversal: only the first N images")


def add_imagenet_tree_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output edge file (parent child per line)")
    parser.add_argument(
        "--wordnet-dir",
        default=None,
        help="directory with WordNet 3.0 data.noun (default: $WORDNET_DIR, /usr/share/wordnet, "
        "then nltk's corpora/wordnet)",
    )


def add_tables_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", required=True, help="directory of metric JSON files (searched recursively)")
    parser.add_argument("--out", required=True, help="output directory for the tables")
    parser.add_argument(
        "--n-boot",
        type=int,
        default=DEFAULT_N_BOOT,
        help="paired-bootstrap resamples for the difference rows (p is floored at 1/B)",
    )


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--type",
        required=True,
        choices=("sizes", "ablation", "batch"),  # meru.reporting.outputs.STUDY_TYPES
        help="the study (the config's study.type): sizes, ablation or batch",
    )
    parser.add_argument("--metrics", required=True, help="directory of metric JSON files (searched recursively)")
    parser.add_argument("--runs", help="directory of training runs (RUNS/LABEL/config.yaml: batch size, steps)")
    parser.add_argument("--out", required=True, help="output directory (RESULTS/study)")
    parser.add_argument(
        "--baseline", help="ablation: the model name every row is paired with (default: the paper's kind, MERU)"
    )
    parser.add_argument(
        "--n-boot", type=int, default=DEFAULT_N_BOOT, help="bootstrap resamples (paired rows and trend slopes)"
    )
    parser.add_argument("--published", default=str(PUBLISHED_CSV), help="published values CSV (batch context)")


def add_plots_arguments(parser) -> None:
    parser.add_argument("--metrics", required=True, help="directory of metric JSON files (searched recursively)")
    parser.add_argument("--runs", required=True, help="directory of training runs (RUNS/*/log.jsonl)")
    parser.add_argument("--out", required=True, help="output directory for the PDF and PNG files")
    parser.add_argument(
        "--figures",
        help="comma-separated figures to draw (default: all that apply; 'scaling' only with two or more model sizes)",
    )
    parser.add_argument(
        "--images",
        help="wds evaluation folder holding the traversal images (thumbnails; e.g. data/synthhier/eval/zeroshot_shape)",
    )


def add_provenance_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="Markdown file to write (e.g. results/PROVENANCE.md)")
    parser.add_argument("--config-json", help="the workflow config as a JSON string")
    parser.add_argument(
        "--data",
        nargs="*",
        action="extend",
        default=[],
        metavar="DIR",
        help="data directories whose manifest.json files to hash",
    )
    parser.add_argument(
        "--reference",
        nargs="*",
        action="extend",
        default=None,
        metavar="PATH",
        help="reference files or directories to hash (default: meru/resources)",
    )
    parser.add_argument(
        "--checkpoint",
        nargs="*",
        action="extend",
        default=[],
        metavar="FILE",
        help="checkpoint files to hash (e.g. runs/*/model.pt)",
    )
    parser.add_argument(
        "--outputs",
        nargs="*",
        action="extend",
        default=[],
        metavar="DIR",
        help="workflow output directories (results, runs, data) not counted as uncommitted changes",
    )


def add_reproduce_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", required=True, help="the run's metric directory (RESULTS/metrics)")
    parser.add_argument(
        "--reference",
        default="none",
        help="reference-run directory (e.g. results/reference/default), 'published' "
        "(meru/resources/reference_values.csv) or 'none'",
    )
    parser.add_argument(
        "--training-data",
        default="",
        help="the run's training data (config data.source; 'redcaps' for released checkpoints)",
    )
    parser.add_argument("--published", default=str(PUBLISHED_CSV), help="published values CSV (--reference published)")
    parser.add_argument("--out", required=True, help="output directory for reproduction.{csv,md}")


def add_reference_arguments(parser) -> None:
    sub = parser.add_subparsers(
        dest="action",
        required=True,
        help="refresh: replace the reference; check: is a run complete; compare: are its numbers the same",
    )
    p = sub.add_parser(
        "refresh",
        help="copy a finished run's metrics, tables, plots, provenance, logs and "
        "per-job benchmarks into the committed reference",
    )
    p.add_argument("--from", dest="source", default="results", help="finished run's results directory")
    p.add_argument("--to", dest="dest", default="results/reference/default", help="reference directory to replace")
    p.add_argument(
        "--force",
        action="store_true",
        help=f"replace a non-empty --to that is not a reference run (no {REFERENCE_MARKER})",
    )
    p = sub.add_parser("check", help="say whether a results directory is complete enough to become the reference")
    p.add_argument("--from", dest="source", default="results", help="finished run's results directory")
    p = sub.add_parser(
        "compare",
        help="compare every number (metrics, intervals, per-item values, side files) of a run with the "
        "reference: did a change move any?",
    )
    p.add_argument("--from", dest="source", default="results", help="finished run's results directory")
    p.add_argument("--to", dest="dest", default="results/reference/default", help="reference directory")
    p.add_argument("--rel-tol", type=float, default=0.0, help="relative tolerance (default 0: exactly equal)")
    p.add_argument("--out", help="also write the summary (Markdown) to this file")


def add_claims_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", required=True, help="directory of metric JSON files (RESULTS/metrics)")
    parser.add_argument("--out", required=True, help="output directory for claims.{csv,md}")


def add_prompt_sensitivity_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", required=True, help="directory of metric JSON files (searched recursively)")
    parser.add_argument("--out", required=True, help="output directory (writes prompt_sensitivity.{csv,md})")


def add_leaderboard_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", required=True, help="the run's metric directory (RESULTS/metrics)")
    parser.add_argument("--published", default=str(PUBLISHED_CSV), help="published values CSV")
    parser.add_argument(
        "--released", required=True, help="released-checkpoint folder (RUNS/released: LABEL.unavailable files)"
    )
    parser.add_argument(
        "--config-json", required=True, help="the workflow config as JSON (pretrained.checkpoints, leaderboard)"
    )
    parser.add_argument("--out", required=True, help="output directory (leaderboard.{md,csv,html}, comparison CSV)")


# command name (meru.cli.COMMANDS) -> the function that adds its options
def add_fetch_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="https:// (Hugging Face hub files via huggingface_hub), file://")
    parser.add_argument("--out", required=True, help="where the verified file goes (OUT.part while downloading)")
    parser.add_argument("--sha256", default=None, help="published sha256 to verify against")
    parser.add_argument(
        "--checksums",
        default=None,
        help="file of 'SHA256  URL' lines: verify against the recorded sum, or record it on first download",
    )
    parser.add_argument("--sha256-out", default=None, help="write 'SHA256  NAME' here (sha256sum -c format)")
    parser.add_argument("--attempts", type=int, default=3, help="HTTP attempts, each resuming (default 3)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds without data before an attempt fails")
    parser.add_argument(
        "--unavailable-out",
        default=None,
        help="when the file cannot be fetched, write one line (URL: why) here and exit 3 (the workflow's "
        "`pretrained.unavailable: skip`: later plans leave the checkpoint out)",
    )


def add_card_arguments(parser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", metavar="RUN_DIR", help="a trained run's directory (config.yaml, log.jsonl, model.pt)")
    what.add_argument("--dataset", metavar="DIR", help="a SynthHier directory or a shard set with manifest.json")
    parser.add_argument("--label", help="the run's label in the metric records (--model; default: RUN_DIR's name)")
    parser.add_argument("--metrics", help="directory of metric JSON files (--model)")
    parser.add_argument("--out", required=True, help="the card's path (MODEL_CARD.md / DATASET_CARD.md)")
    parser.add_argument("--html", help="also write the card as an HTML page here (for the report)")


def add_report_pages_arguments(parser) -> None:
    parser.add_argument("--results", required=True, help="the run's results directory (RESULTS)")
    parser.add_argument("--out", required=True, help="output directory for workflow.rst and the verdict pages")
    parser.add_argument("--config-json", default="{}", help="the workflow config as JSON (the landing page's facts)")
    parser.add_argument("--config-file", action="append", default=[], help="config file(s) the run used")


def add_track_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="workflow YAML with a `tracking:` section")
    parser.add_argument("--metrics", required=True, help="directory of metric JSON files (searched recursively)")
    parser.add_argument("--out", required=True, help="TSV of what was logged: label, tag, value")


def add_workflow_arguments(parser: argparse.ArgumentParser) -> None:
    """No options of its own: every argument after ``meru workflow`` goes to snakemake (``args.passthrough``)."""
    parser.usage = "meru workflow SNAKEMAKE_ARGS (e.g. --cores all --configfile configs/ablation.yaml)"
    parser.epilog = "Every --configfile is read first, so a YAML error is one line naming the file and line."
    parser.set_defaults(passthrough=[])


COMMAND_ARGUMENTS = {
    "info": add_info_arguments,
    "synth": add_synth_arguments,
    "contact-sheet": add_contact_sheet_arguments,
    "download": add_download_arguments,
    "fetch-checkpoint": add_fetch_checkpoint_arguments,
    "evalsets": add_evalsets_arguments,
    "train": add_train_arguments,
    "embed": add_embed_arguments,
    "evaluate": add_evaluate_arguments,
    "imagenet-tree": add_imagenet_tree_arguments,
    "tables": add_tables_arguments,
    "track": add_track_arguments,
    "plots": add_plots_arguments,
    "study": add_study_arguments,
    "provenance": add_provenance_arguments,
    "reproduce": add_reproduce_arguments,
    "leaderboard": add_leaderboard_arguments,
    "reference": add_reference_arguments,
    "claims": add_claims_arguments,
    "prompt-sensitivity": add_prompt_sensitivity_arguments,
    "card": add_card_arguments,
    "report-pages": add_report_pages_arguments,
    "workflow": add_workflow_arguments,
}
