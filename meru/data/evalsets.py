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

Every evaluation set is read through :func:`open_evalset` -> :class:`EvalSet` (name, task, class names,
templates, class nodes, template sets, items; HierarCaps via :mod:`meru.data.hierarcaps`) and every caption
pool through :func:`open_text_pool`; ``meru embed`` only encodes them.

Nothing is downloaded unless ``download=True`` (``meru evalsets prepare``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from meru.data.wds_layout import dataset_type, is_wds_dir
from meru.arguments import add_evalsets_arguments as add_arguments  # noqa: F401  (light: fast --help)

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


# ----------------------------------------------------------------------------- evaluation sets

TASKS = ("classification", "retrieval", "hierarcaps", "caption-choice")
SINGLE_TEMPLATE = "a photo of a {}."
PROMPT_SET_NAMES = ("single", "meru", "clip_benchmark")


@dataclass
class EvalSet:
    """One evaluation set, opened by :func:`open_evalset`: what it is and an iterator over its items.

    ``name``: the dataset name that travels into the embedding cache and the metric record.
    ``task``: ``classification`` | ``retrieval`` | ``hierarcaps`` | ``caption-choice``. ``classnames [C]``, ``templates [T]``,
    ``class_nodes [C]`` (taxonomy ids or None), ``prompt_source`` and ``prompt_sets`` (alternative template
    sets ``{name: {"templates", "source"}}``, :func:`prompt_sets`) for classification, else None.
    ``num_items``: images in the split when known (progress lines), else None. ``hierarchies``: HierarCaps'
    caption hierarchies (:class:`meru.data.hierarcaps.CaptionHierarchies`), else None. ``choices``: a caption-choice
    set's items (:class:`meru.data.caption_choice.CaptionChoices`), else None.

    :meth:`batches` yields lists of item dicts ``{"order": (shard, position), "key", "image" [3, S, S] in
    [0, 1], "meta": json dict or None, "label": int | "captions": [str]}``; with several workers the lists
    may interleave shards, and ``order`` sorts them back into file order.
    """

    name: str
    task: str
    split: str
    source: str
    classnames: list[str] | None = None
    templates: list[str] | None = None
    class_nodes: list[str] | None = None
    prompt_source: dict | None = None
    prompt_sets: dict[str, dict] | None = None
    num_items: int | None = None
    hierarchies: object | None = None
    choices: object | None = None
    _batches: Callable[[int, int], Iterator[list[dict]]] | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"{self.source}: task {self.task!r} is not one of {TASKS}")

    def batches(self, batch_size: int = 256, num_workers: int = 0) -> Iterator[list[dict]]:
        """Lists of at most ``batch_size`` item dicts (see the class doc), read by ``num_workers`` processes."""
        return self._batches(batch_size, num_workers)


def image_transform(image_size: int, task: str):
    """Official MERU evaluation transforms: classification = resize short side + centre crop;
    retrieval = squeeze to a square. Both bicubic, then ``ToTensor`` ([0, 1], no normalisation)."""
    import torchvision.transforms as T

    bicubic = T.InterpolationMode.BICUBIC
    if task == "retrieval":
        return T.Compose([T.Resize((image_size, image_size), bicubic), T.ToTensor()])
    return T.Compose([T.Resize(image_size, bicubic), T.CenterCrop(image_size), T.ToTensor()])


def open_evalset(
    evalset: str | os.PathLike,
    root: str | os.PathLike | None = None,
    split: str = "test",
    prompts: str = "auto",
    image_size: int = 224,
    name: str | None = None,
) -> EvalSet:
    """The evaluation set ``evalset`` -> :class:`EvalSet` (nothing is downloaded).

    ``evalset``: a clip-benchmark wds-layout directory (SynthHier's and HierarCaps' are), or a MERU /
    clip-benchmark name whose files are under ``root`` (a wds-layout ``root`` is read directly).
    ``prompts``: ``auto`` (MERU's where it has an ensemble for the dataset), ``meru`` or ``clip_benchmark``.
    ``image_size``: the model's input side (:func:`image_transform`). ``name``: the dataset name for the
    cache and the metric record; default the directory name (wds directory) or ``evalset`` as given
    (HierarCaps: ``hierarcaps``).
    """
    evalset = str(evalset)
    local = _wds_dir_of(evalset, root, split)
    ident = Path(evalset).name if Path(evalset).is_dir() else evalset  # what the dataset is (prompt lookup)
    if local is not None and dataset_type(local) == "hierarcaps":
        return open_hierarcaps(local, split, image_size, name or "hierarcaps")
    if local is not None and dataset_type(local) == "caption-choice":
        return open_caption_choice(local, split, image_size, name or ident)
    prompts = _resolve_prompts(evalset, prompts)
    if local is not None:
        task = "retrieval" if dataset_type(local) == "retrieval" else "classification"
        ds_info = build_eval_dataset(
            evalset, root if root is not None else local, transform=None, split=split, prompts=prompts
        )
        from meru.data.wds_eval import WdsShards, iter_batches

        data = WdsShards(local, split, task, image_transform(image_size, task))

        def batches(batch_size, num_workers):
            return iter_batches(data, batch_size, num_workers)

        total = _wds_total(local, split)
    else:
        if root is None:
            raise FileNotFoundError(
                f"--evalset {evalset!r} is not a wds-layout directory (no {evalset}/{split}/"
                "nshards.txt); for a named dataset pass --root DIR where its files are"
            )
        ds_info = build_eval_dataset(
            evalset, root, transform=image_transform(image_size, "classification"), split=split, prompts=prompts
        )
        task = "classification" if getattr(ds_info, "classes", None) is not None else "retrieval"
        if task == "retrieval":
            ds_info = build_eval_dataset(
                evalset, root, transform=image_transform(image_size, "retrieval"), split=split, prompts=prompts
            )

        def batches(batch_size, num_workers, ds=ds_info):
            from meru.data.wds_eval import map_style_batches

            return map_style_batches(ds, task, batch_size, num_workers)

        total = len(ds_info) if hasattr(ds_info, "__len__") else None
    out = EvalSet(
        name=name or ident,
        task=task,
        split=split,
        source=evalset,
        prompt_source=getattr(ds_info, "prompt_source", None),
        num_items=total,
        _batches=batches,
    )
    if task == "classification":
        out.classnames = list(ds_info.classes)
        out.templates = list(ds_info.templates or ["{}"])
        out.class_nodes = _class_nodes(local, evalset, out.classnames)
        out.prompt_sets = prompt_sets(ident)
    return out


def open_hierarcaps(
    directory: str | os.PathLike, split: str = "test", image_size: int = 224, name: str = "hierarcaps"
) -> EvalSet:
    """:class:`EvalSet` (task ``hierarcaps``) of a packed HierarCaps split (:mod:`meru.data.hierarcaps`): images
    resized + centre cropped (as HierarCaps' CLIP processor), captions per item (one per line), ``hierarchies``
    (:func:`meru.data.hierarcaps.read_hierarchies`) read up front."""
    from meru.data.hierarcaps import read_hierarchies
    from meru.data.wds_eval import WdsShards, iter_batches

    directory = Path(directory)
    hierarchies = read_hierarchies(directory, split)
    data = WdsShards(directory, split, "retrieval", image_transform(image_size, "classification"))
    return EvalSet(
        name=name,
        task="hierarcaps",
        split=split,
        source=str(directory),
        num_items=len(hierarchies.keys),
        hierarchies=hierarchies,
        _batches=lambda batch_size, num_workers: iter_batches(data, batch_size, num_workers),
    )


def open_caption_choice(directory: str | os.PathLike, split: str, image_size: int, name: str) -> EvalSet:
    """:class:`EvalSet` (task ``caption-choice``) of a packed caption-choice set (:mod:`meru.data.caption_choice`):
    images resized + centre cropped (CLIP's preprocessing, which clip-benchmark and ARO use), ``choices``
    (:func:`meru.data.caption_choice.read_choices`) read up front."""
    from meru.data.caption_choice import read_choices
    from meru.data.wds_eval import WdsShards, iter_batches

    directory = Path(directory)
    choices = read_choices(directory, split)
    data = WdsShards(directory, split, "retrieval", image_transform(image_size, "classification"))
    return EvalSet(
        name=name,
        task="caption-choice",
        split=split,
        source=str(directory),
        num_items=len(choices.keys),
        choices=choices,
        _batches=lambda batch_size, num_workers: iter_batches(data, batch_size, num_workers),
    )


def _wds_dir_of(evalset: str, root: str | os.PathLike | None, split: str) -> Path | None:
    """The wds-layout directory to read: ``evalset`` itself, else ``root``, else None (a named dataset)."""
    if Path(evalset).is_dir() and is_wds_dir(evalset, split):
        return Path(evalset)
    if root is not None and Path(root).is_dir() and is_wds_dir(root, split):
        return Path(root)
    return None


def _resolve_prompts(evalset: str, prompts: str) -> str:
    """``auto`` -> ``meru`` for a MERU/clip-benchmark name with a MERU ensemble, else ``clip_benchmark``."""
    if prompts != "auto":
        return prompts
    name = None if Path(evalset).is_dir() else _meru_name_for(evalset)
    return "meru" if name is not None and name in meru_prompts()["templates"] else "clip_benchmark"


def _wds_total(local: Path, split: str) -> int | None:
    """Samples in a wds split per its manifest (for progress lines), None when it has none."""
    try:
        manifest = json.loads((local / split / "manifest.json").read_text())
        return int(sum(int(e["num_samples"]) for e in manifest["shards"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _class_nodes(local: Path | None, evalset: str, classnames: list[str]) -> list[str] | None:
    """Taxonomy node per class: ``class_nodes.json`` beside the eval set, or the ImageNet-1k wnids."""
    if local is not None and (local / "class_nodes.json").is_file():
        nodes = json.loads((local / "class_nodes.json").read_text())
        if isinstance(nodes, dict):
            nodes = [nodes[str(i)] for i in range(len(nodes))]
        if len(nodes) != len(classnames):
            raise ValueError(
                f"{local}/class_nodes.json has {len(nodes)} nodes but classnames.txt has {len(classnames)} classes"
            )
        return [str(n) for n in nodes]
    if len(classnames) == 1000 and "imagenet" in evalset.lower():
        lines = resources.files("meru.resources").joinpath("imagenet_wnids.txt").read_text().splitlines()
        wnids = [w.strip() for w in lines if w.strip() and not w.lstrip().startswith("#")]
        if len(wnids) != 1000:
            raise ValueError(
                f"meru/resources/imagenet_wnids.txt lists {len(wnids)} wnids, expected 1000; "
                "restore it from the repository"
            )
        return wnids
    return None


# ----------------------------------------------------------------------------- prompt template sets


@lru_cache(maxsize=None)
def clip_benchmark_templates() -> dict[str, list[str]]:
    """clip-benchmark's packaged English zero-shot templates, ``{dataset: [template, ...]}``."""
    from clip_benchmark.datasets import builder

    path = Path(os.path.dirname(builder.__file__)) / "en_zeroshot_classification_templates.json"
    return json.loads(path.read_text())


def prompt_sets(dataset: str) -> dict[str, dict]:
    """Alternative template sets of a classification dataset, ``{name: {"templates": [...], "source": str}}``.

    With ``m`` the MERU name of ``dataset`` (a MERU or clip-benchmark name, or an eval-set directory name;
    None for SynthHier): ``single`` = ``["a photo of a {}."]``; ``meru`` = MERU's ensemble for ``m``
    (``meru_prompts.json``), else MERU's ImageNet ensemble; ``clip_benchmark`` = clip-benchmark's English
    templates for the dataset's clip-benchmark name (looked up as clip-benchmark does: the name, its part
    after ``vtab/`` or ``wds/``, then ``imagenet1k``)."""
    meru = _meru_name_for(dataset)
    mp = meru_prompts()["templates"]
    if meru is not None and meru in mp:
        meru_set = {"templates": list(mp[meru]), "source": f"meru_prompts.json:{meru}"}
    else:
        meru_set = {
            "templates": list(mp["imagenet"]),
            "source": "meru_prompts.json:imagenet (no MERU set for this dataset)",
        }
    cb_name = dataset_table()[meru]["clip_benchmark"] if meru is not None else dataset
    table = clip_benchmark_templates()
    keys = [] if cb_name is None else [cb_name, cb_name.split("/", 1)[-1]]
    key = next((k for k in keys if k in table), "imagenet1k")
    note = "" if key in keys else " (no clip-benchmark set for this dataset)"
    return {
        "single": {"templates": [SINGLE_TEMPLATE], "source": "single"},
        "meru": meru_set,
        "clip_benchmark": {"templates": list(table[key]), "source": f"clip_benchmark:{key}{note}"},
    }


# ----------------------------------------------------------------------------- caption pools


@dataclass
class TextPool:
    """A caption pool without images (SynthHier ``eval/captions.jsonl``): ``rows`` of ``{"text",
    "specificity", "depth", "node", "attributes"}`` (only ``text`` is required); ``name`` for the cache."""

    name: str
    path: str
    rows: list[dict]

    @property
    def texts(self) -> list[str]:
        return [r["text"] for r in self.rows]


def read_text_pool(path: str | os.PathLike) -> list[dict]:
    """Rows of a caption pool (``captions.jsonl``: ``text``, ``specificity``, ``depth``, ``node``, ``attributes``)."""
    rows = []
    with open(path) as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            row = json.loads(line)
            if "text" not in row:
                raise KeyError(f"{path}: line {i + 1} has no 'text' field")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: empty caption pool")
    return rows


def open_text_pool(path: str | os.PathLike, name: str | None = None) -> TextPool:
    """:class:`TextPool` of a ``captions.jsonl``; ``name`` defaults to the file name."""
    return TextPool(name=name or Path(path).name, path=str(path), rows=read_text_pool(path))


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


def _prepare_error(name: str, root: str, exc: BaseException) -> str:
    """One line for a failed ``prepare``: an unknown name gets difflib's closest known names; a failed
    download (offline) names the URL and where to put the file by hand (read from the failing download
    call's ``url`` / ``fpath``, e.g. torchvision's ``download_url``)."""
    import difflib

    if isinstance(exc, ValueError) and str(exc).startswith("Unsupported dataset"):
        from clip_benchmark.datasets.builder import dataset_collection

        known = set(dataset_table()) | {n for names in dataset_collection.values() for n in names}
        close = difflib.get_close_matches(name, sorted(known), n=3)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        return f"--dataset {name!r}: not a dataset clip-benchmark knows; {hint}(`meru evalsets list` shows them)"
    if not isinstance(exc, OSError) or isinstance(exc, EvalDatasetUnavailable):
        return str(exc)
    url = fpath = None
    tb = exc.__traceback__
    while tb is not None:
        found = tb.tb_frame.f_locals
        url = found["url"] if isinstance(found.get("url"), str) else url
        fpath = found["fpath"] if isinstance(found.get("fpath"), str) else fpath
        tb = tb.tb_next
    where = f"put it at {fpath}" if fpath else f"put the files under {root} (names as in the URLs)"
    return (
        f"{name}: download of {url or 'its files'} failed ({exc}); offline? fetch it elsewhere and {where}, "
        f"then rerun `meru evalsets prepare --dataset {name} --root {root}`"
    )


def _prepare_caption_choice(args: argparse.Namespace) -> int:
    """``meru evalsets prepare --dataset sugar_crepe/SUBSET | aro/SUBSET --root OUT [--source DIR] [--images DIR]``."""
    from meru.data.caption_choice import CaptionChoiceUnavailable, prepare_caption_choice

    try:
        info = prepare_caption_choice(
            args.dataset, args.root, getattr(args, "source", None), getattr(args, "images", None)
        )
    except (CaptionChoiceUnavailable, ValueError) as e:
        print(f"meru evalsets prepare: error: {e}", file=sys.stderr)
        return 1
    print(f"{args.dataset}: ready under {args.root} ({info['items']} items, {info['images']} images)")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        print(format_table(markdown=args.markdown))
        return 0
    if not args.dataset or not args.root:
        print("meru evalsets prepare: error: --dataset and --root are required", file=sys.stderr)
        return 2
    from meru.data.caption_choice import is_caption_choice_set

    if is_caption_choice_set(args.dataset):  # SugarCrepe / ARO from their released files: meru.data.caption_choice
        return _prepare_caption_choice(args)
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
    except (EvalDatasetUnavailable, KeyError, ValueError, OSError) as e:
        print(f"meru evalsets prepare: error: {_prepare_error(args.dataset, args.root, e)}", file=sys.stderr)
        return 1
    n = len(ds) if hasattr(ds, "__len__") else "?"
    classes = getattr(ds, "classes", None)
    print(
        f"{args.dataset}: ready under {args.root} ({n} samples, split {args.split}"
        + (f", {len(classes)} classes)" if classes else ")")
    )
    return 0
