"""Evaluation datasets through clip-benchmark, with MERU's names, splits and prompts as data.

``meru/resources/meru_datasets.json`` maps MERU's 20 zero-shot classification datasets and 2 retrieval
datasets to clip-benchmark names and records where the splits differ (with citations);
``meru/resources/meru_prompts.json`` holds MERU's class names and prompt ensembles (parsed from the official
repository's ``class_names.py`` / eval config; commit cited in the file).

Only clip-benchmark's dataset builders, class names and templates are used here (its metric functions break on
numpy 2.4; our metrics live in ``meru.evaluation``).

``build_eval_dataset(name, root, transform)`` accepts

* a MERU name (``imagenet``, ``aircraft``, ``clevr``, ``coco`` ...) -> mapped clip-benchmark name;
* a clip-benchmark name (``cifar10``, ``vtab/resisc45``, ``wds/vtab/cifar10``);
* a local directory in clip-benchmark's wds layout (``DIR/<split>/nshards.txt``, ``DIR/<split>/{0..N-1}.tar``,
  ``DIR/classnames.txt``, ``DIR/zeroshot_classification_templates.txt``, ``DIR/dataset_type.txt``), given as
  ``name`` or as ``root`` (then ``name`` only picks the prompts); SynthHier eval sets are in this layout.

Nothing is downloaded unless ``download=True`` (``meru evalsets prepare``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from functools import lru_cache
from importlib import resources
from pathlib import Path

PROMPT_CHOICES = ("clip_benchmark", "meru")


class EvalDatasetUnavailable(FileNotFoundError):
    """The dataset files are not under ``root``; the message says where to put them."""


@lru_cache(maxsize=None)
def _resource(name: str) -> dict:
    return json.loads(resources.files("meru.resources").joinpath(name).read_text())


def dataset_table() -> dict[str, dict]:
    """MERU name -> entry of ``meru_datasets.json`` (clip_benchmark, wds, split_protocol, meru_splits, note ...)."""
    return _resource("meru_datasets.json")["datasets"]


def meru_prompts() -> dict:
    """``{"classnames": {meru_name: [...]}, "templates": {meru_name: [...]}, "citation": ...}``."""
    return _resource("meru_prompts.json")


def is_wds_dir(path: str | os.PathLike, split: str = "test") -> bool:
    return (Path(path) / split / "nshards.txt").is_file()


def _meru_name_for(name: str) -> str | None:
    """MERU name of a MERU or clip-benchmark name (``"fgvc_aircraft"`` -> ``"aircraft"``), else None."""
    table = dataset_table()
    if name in table:
        return name
    bare = name[4:] if name.startswith("wds/") else name
    for meru, e in table.items():
        if bare in (e["clip_benchmark"], (e["wds"] or "")[4:]) or name == e["wds"]:
            return meru
    return None


def _norm(s: str) -> str:
    return re.sub(r"[\s_\-]+", " ", s.strip().lower())


IMAGENET_HELP = (
    "ImageNet (ILSVRC2012) cannot be downloaded automatically. Download from https://image-net.org (login "
    "required) the two files\n  ILSVRC2012_devkit_t12.tar.gz\n  ILSVRC2012_img_val.tar\nand put them in {root}/ "
    "(torchvision.datasets.ImageNet, used by clip-benchmark's 'imagenet1k', unpacks them into {root}/meta.bin and "
    "{root}/val/<wnid>/*.JPEG on first use), or place an already prepared copy there (meta.bin + val/). "
    "Alternatively use a clip-benchmark wds copy: a directory with test/nshards.txt, test/0.tar ... (HF dataset "
    "clip-benchmark/wds_imagenet1k) passed as --root with dataset wds/imagenet1k."
)
CUB_HELP = (
    "CUB-200-2011 ({name}) is not in clip-benchmark (only VTAB variants via TensorFlow). Supply a local copy in "
    "clip-benchmark's wds layout: DIR/test/nshards.txt, DIR/test/0.tar ... (samples: image 'jpg'/'png' + 'cls' "
    "label), DIR/classnames.txt (200 lines, MERU's names are in meru/resources/meru_prompts.json 'cub2011'), "
    "DIR/zeroshot_classification_templates.txt; e.g. convert a torchvision-style dataset with "
    "clip_benchmark.webdataset_builder.convert_dataset. Then pass --root DIR (root given: {root})."
)


def _check_imagenet(root: Path, split: str) -> None:
    if split == "train":
        ok = (root / "train").is_dir() or (root / "ILSVRC2012_img_train.tar").is_file()
    else:
        ok = ((root / "meta.bin").is_file() and (root / "val").is_dir()) or (
            (root / "ILSVRC2012_devkit_t12.tar.gz").is_file() and (root / "ILSVRC2012_img_val.tar").is_file()
        )
    if not ok:
        raise EvalDatasetUnavailable(IMAGENET_HELP.format(root=root))


def resolve_name(name: str) -> tuple[str, str | None]:
    """(clip-benchmark dataset name, MERU name or None). Raises for MERU datasets clip-benchmark lacks."""
    meru = _meru_name_for(name)
    if name in dataset_table():
        cb = dataset_table()[name]["clip_benchmark"]
        if cb is None:
            raise EvalDatasetUnavailable(CUB_HELP.format(name=name, root="<none>"))
        return cb, meru
    return name, meru


def build_eval_dataset(
    name: str,
    root: str | os.PathLike,
    transform=None,
    split: str = "test",
    prompts: str = "clip_benchmark",
    download: bool = False,
    **kwargs,
):
    """A clip-benchmark dataset object with ``.classes`` and ``.templates`` (both None for retrieval).

    ``prompts="meru"`` replaces the templates by MERU's ensemble for that dataset and the class names by
    MERU's where they are index-aligned with the loaded dataset (same names after lower-casing and
    ``_``/``-`` -> space, or a known reordering recorded in ``meru_datasets.json`` as
    ``meru_classnames_reorder``); otherwise clip-benchmark's names are kept and a warning says so.
    ``ds.prompt_source`` records what was used: ``{"templates": ..., "classnames": ...}``.
    """
    from clip_benchmark.datasets.builder import build_dataset

    if prompts not in PROMPT_CHOICES:
        raise ValueError(f"prompts={prompts!r}; choose one of {PROMPT_CHOICES}")
    root = Path(root)
    local = None
    if Path(name).is_dir() and is_wds_dir(name, split):
        local = Path(name)
    elif root.is_dir() and is_wds_dir(root, split):
        local = root
    if local is not None:
        meru = _meru_name_for(name) if not Path(name).is_dir() else None
        cb_name = f"wds/{local.name}"
        type_file = local / "dataset_type.txt"
        kind = type_file.read_text().strip().lower() if type_file.is_file() else "classification"
        kwargs.setdefault("task", "zeroshot_retrieval" if kind == "retrieval" else "zeroshot_classification")
        ds = build_dataset(cb_name, root=str(local), transform=transform, split=split, download=False, **kwargs)
    else:
        meru = _meru_name_for(name)
        if name in dataset_table() and dataset_table()[name]["clip_benchmark"] is None:
            raise EvalDatasetUnavailable(CUB_HELP.format(name=name, root=root))
        cb_name, _ = resolve_name(name)
        if cb_name.startswith("wds/"):
            if not is_wds_dir(root, split):
                raise EvalDatasetUnavailable(
                    f"{root}/{split}/nshards.txt not found: '{cb_name}' reads a clip-benchmark wds copy from --root. "
                    f"Download it (e.g. HF dataset clip-benchmark/{cb_name.replace('/', '_')}) into {root}, or run "
                    "`meru evalsets prepare` for the torchvision version."
                )
        if cb_name == "imagenet1k":
            _check_imagenet(root, split)
        if meru is not None:
            kwargs.setdefault("task", dataset_table()[meru]["task"])
        try:
            ds = build_dataset(cb_name, root=str(root), transform=transform, split=split, download=download, **kwargs)
        except RuntimeError as e:
            if download or "download" not in str(e).lower():
                raise
            raise EvalDatasetUnavailable(
                f"{cb_name} not found under {root} ({e}). Fetch it once with "
                f"`meru evalsets prepare --dataset {name} --root {root}` (needs network), then re-run."
            ) from e
    ds.prompt_source = {"templates": "clip_benchmark", "classnames": "clip_benchmark"}
    if prompts == "meru" and getattr(ds, "classes", None) is not None:
        _apply_meru_prompts(ds, meru, name)
    return ds


def _apply_meru_prompts(ds, meru: str | None, name: str) -> None:
    mp = meru_prompts()
    if meru is None or meru not in mp["templates"]:
        raise KeyError(
            f"{name}: no MERU prompts (meru/resources/meru_prompts.json has {sorted(mp['templates'])}); "
            "use prompts='clip_benchmark'."
        )
    ds.templates = list(mp["templates"][meru])
    ds.prompt_source["templates"] = "meru"
    names = mp["classnames"][meru]
    reorder = dataset_table().get(meru, {}).get("meru_classnames_reorder")
    if reorder is not None and len(reorder) == len(ds.classes):
        ds.classes = [names[i] for i in reorder]
        ds.prompt_source["classnames"] = "meru"
    elif len(names) == len(ds.classes) and [_norm(a) for a in names] == [_norm(b) for b in ds.classes]:
        ds.classes = list(names)
        ds.prompt_source["classnames"] = "meru"
    else:
        warnings.warn(
            f"{name}: MERU class names are not verified index-aligned with this dataset's labels; "
            "keeping clip-benchmark's class names (templates are MERU's).",
            stacklevel=3,
        )


# ----------------------------------------------------------------------------- CLI


def table_rows() -> list[dict]:
    rows = []
    for meru, e in dataset_table().items():
        rows.append(
            {
                "meru": meru,
                "task": e["task"].replace("zeroshot_", ""),
                "clip_benchmark": e["clip_benchmark"] or "-",
                "wds": e["wds"] or "-",
                "split": e["split_protocol"],
                "meru_test_split": e["meru_splits"]["test"],
                "linear_probe": "yes" if e["linear_probe"] else "no",
                "note": e["note"],
            }
        )
    return rows


def format_table(markdown: bool = False) -> str:
    rows = table_rows()
    cols = list(rows[0])
    if markdown:

        def esc(s) -> str:
            return str(s).replace("|", "\\|")

        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(esc(r[c]) for c in cols) + " |" for r in rows]
        cite = _resource("meru_datasets.json")["citation"]
        lines += ["", "Sources: " + "; ".join(f"{k}: {v}" for k, v in cite.items())]
        return "\n".join(lines)
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols if c != "note"}
    head = "  ".join(c.ljust(widths[c]) for c in widths) + "  note"
    body = ["  ".join(str(r[c]).ljust(widths[c]) for c in widths) + "  " + r["note"] for r in rows]
    return "\n".join([head, *body])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action", choices=("list", "prepare"), help="list: the dataset table; prepare: fetch one dataset"
    )
    parser.add_argument("--markdown", action="store_true", help="list: print a Markdown table")
    parser.add_argument("--dataset", help="prepare: MERU or clip-benchmark name")
    parser.add_argument("--root", help="prepare: directory that holds the dataset files")
    parser.add_argument("--split", default="test", help="prepare: which split (default test)")
    parser.add_argument(
        "--coco-dir", help="prepare hierarcaps: local COCO val2014 image folder (skips those downloads)"
    )


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        print(format_table(markdown=args.markdown))
        return 0
    if not args.dataset or not args.root:
        print("meru evalsets prepare: error: --dataset and --root are required", file=sys.stderr)
        return 2
    if args.dataset == "hierarcaps":  # not a clip-benchmark set: meru.data.hierarcaps
        from meru.data.hierarcaps import HierarCapsUnavailable, prepare_hierarcaps

        try:
            info = prepare_hierarcaps(args.root, coco_dir=getattr(args, "coco_dir", None))
        except (HierarCapsUnavailable, ValueError) as e:
            print(f"meru evalsets prepare: error: {e}", file=sys.stderr)
            return 1
        print(
            f"hierarcaps: ready under {args.root} ({info['hierarchies']} hierarchies, {info['images']} images, "
            f"{info['downloaded']} downloaded)"
        )
        return 0
    try:
        ds = build_eval_dataset(args.dataset, args.root, split=args.split, download=True)
    except (EvalDatasetUnavailable, KeyError, ValueError) as e:
        print(f"meru evalsets prepare: error: {e}", file=sys.stderr)
        return 1
    n = len(ds) if hasattr(ds, "__len__") else "?"
    classes = getattr(ds, "classes", None)
    print(
        f"{args.dataset}: ready under {args.root} ({n} samples, split {args.split}"
        + (f", {len(classes)} classes)" if classes else ")")
    )
    return 0
