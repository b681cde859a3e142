"""The records stages hand each other, with one owner: this module.

``meru embed`` -> :class:`EmbeddingCache` -> ``meru evaluate`` -> :class:`MetricRecord` -> ``meru tables`` /
``plots`` / ``claims`` / ``reproduce``. Each record has explicit typed fields, one file format (named by
``FORMAT``), one writer (atomic, :mod:`meru.io`) and one reader that checks the format and names the file
and the fix when it is wrong. The dataset name and the run label travel as fields; nothing downstream
parses them back from file names.

Layer: below training, above evaluation and reporting (``tests/test_layers.py``). It imports :mod:`meru.io`
and :mod:`meru.spaces`; the cache's ``load``/``save`` import :mod:`meru.models.tensor_files` (``safe_load``,
``save_torch``, ``require_finite``; torch only, no timm or open_clip) when called, so reporting, which never
opens embedding caches, does not load torch, and ``meru evaluate`` does not load the models.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from meru.io import read_json, remove_stale_temps, short_repr, write_json
from meru.kinds import KINDS, kind_of_space
from meru.spaces import MIN_RADIUS, Space, get_space

# ----------------------------------------------------------------------------------------- embedding cache
# EmbeddingCache: written by meru.evaluation.embed, read by every evaluator.

#: on-disk format of an embedding cache (2: the space record replaces the bare ``curv``; every field is stored)
CACHE_FORMAT = "meru-bench/embeddings/2"
#: what a cache holds: an image set with class prompts, an image set with captions, a caption pool, HierarCaps,
#: images each with a true caption and hard negatives (caption choice)
CACHE_TASKS = ("classification", "retrieval", "text-pool", "hierarcaps", "caption-choice")
#: fields that hold embeddings (refused when non-finite); ``prompt_sets[*].class_text_raw`` too
EMBEDDING_FIELDS = ("image_emb", "image_feats", "text_emb", "class_text_raw", "root_emb")
_TENSOR_FIELDS = EMBEDDING_FIELDS + ("labels", "text_to_image", "specificity", "depth", "levels", "caption_truth")
_STR_FIELDS = ("task", "kind", "model_name", "model_display", "dataset", "size", "checkpoint")
_LIST_FIELDS = (
    "keys",
    "meta",
    "classnames",
    "templates",
    "class_nodes",
    "texts",
    "node",
    "attributes",
    "hierarchy_ids",
)
_STR_LIST_FIELDS = ("keys", "classnames", "templates", "texts", "hierarchy_ids")


class CacheError(ValueError):
    """An embedding cache cannot be read or written (one line naming the file and the fix)."""


@dataclasses.dataclass
class PromptSet:
    """One alternative template set of a classification cache (:mod:`meru.evaluation.prompt_sensitivity`):
    ``templates`` [T'], where they come from (``source``), raw projected text features ``class_text_raw``
    [T', C, D] of the cache's class names."""

    templates: list[str]
    source: str
    class_text_raw: Tensor


@dataclasses.dataclass(kw_only=True, eq=False)
class EmbeddingCache:
    """Embeddings of one evaluation set (or caption pool) under one model: what ``meru embed`` writes and every
    evaluator reads. Tensors are float32 on CPU (labels / indices long); fields a task does not have are None.
    ``N`` images, ``D`` embedding width, ``W`` pre-projection image width, ``C`` classes, ``T`` templates,
    ``M`` captions, ``H`` HierarCaps hierarchies (``M = 4H``)."""

    # identity: model kind (a name in meru.kinds.KINDS; None: the space's), model name (the config's model name:
    # the kind, or a variant of it such as "meru-noentail"; None: the kind) and its display name (None: the kind's),
    # task (CACHE_TASKS), eval-set name, model size, training seed and step, the checkpoint (path or openclip spec)
    # the embeddings came from
    task: str
    kind: str | None = None
    model_name: str | None = None
    model_display: str | None = None
    dataset: str | None = None
    size: str | None = None
    seed: int | None = None
    step: int | None = None
    checkpoint: str | None = None

    # the space the embeddings live in (meru.spaces; MERU: its curvature), and the towers' scales applied to raw
    # projected features before the space's lift (MERU: exp of the learned log-alphas; EuCLIP: 1/sqrt(D);
    # CLIP: None); ``textual_alpha`` ensembles ``class_text_raw`` at evaluate time
    space: Space
    visual_alpha: float | None = None
    textual_alpha: float | None = None

    # images: sample keys [N], per-image json dicts [N] (or None), embeddings [N, D] (CLIP: unit vectors;
    # MERU: hyperboloid space components; EuCLIP: alpha * raw), pre-projection features [N, W] (linear probe)
    keys: list[str] | None = None
    meta: list[Any] | None = None
    image_emb: Tensor | None = None
    image_feats: Tensor | None = None

    # classification: labels [N] long, classnames [C], templates [T], raw projected text features of every
    # template x class [T, C, D] (before the lift; ``space.ensemble`` at evaluate time), taxonomy node per
    # class [C] (or None), where templates and class names come from (``{"templates", "classnames"}``: ``"meru"``
    # or ``"clip_benchmark"``; None for a wds set's own files), alternative template sets {name: PromptSet}
    labels: Tensor | None = None
    classnames: list[str] | None = None
    templates: list[str] | None = None
    class_text_raw: Tensor | None = None
    class_nodes: list[str] | None = None
    prompt_source: dict[str, str] | None = None
    prompt_sets: dict[str, PromptSet] | None = None

    # retrieval (also text pool and HierarCaps): captions [M], their embeddings [M, D], image row of each [M] long
    texts: list[str] | None = None
    text_emb: Tensor | None = None
    text_to_image: Tensor | None = None

    # text pool annotations [M]: specificity and concept depth (float, NaN = not annotated), node, attributes
    specificity: Tensor | None = None
    depth: Tensor | None = None
    node: list[Any] | None = None
    attributes: list[Any] | None = None

    # HierarCaps: caption level [4H] long (0 general .. 3 specific; caption 4h + l), hierarchy ids [H],
    # embedding of the empty caption [1, D] ([ROOT])
    levels: Tensor | None = None
    hierarchy_ids: list[str] | None = None
    root_emb: Tensor | None = None

    # caption choice (SugarCrepe, ARO): per caption [M] long, 1 for its image's true caption, 0 for a hard negative
    # (captions: ``texts``, ``text_emb``, ``text_to_image``; the images are the items)
    caption_truth: Tensor | None = None

    # where the cache was loaded from (not saved)
    path: Path | None = None

    def __post_init__(self):
        if not isinstance(self.space, Space):
            raise CacheError(f"{self.name}: space must be a meru.spaces.Space, got {type(self.space).__name__}")
        if self.path is not None:
            self.path = Path(self.path)
        self._check_scalars()
        if self.kind is None:
            self.kind = self.space.kind
        if self.model_name is None:
            self.model_name = self.kind
        if self.model_display is None:
            self.model_display = display_name(self.model_name, self.kind)
        if self.kind not in KINDS or KINDS[self.kind].space != self.space.name:
            raise CacheError(
                f"{self.name}: model kind {short_repr(self.kind)} but the {self.space.name} space; re-run `meru embed`"
            )
        if self.task not in CACHE_TASKS:
            raise CacheError(f"{self.name}: unknown task {short_repr(self.task)} (one of {', '.join(CACHE_TASKS)})")
        for name in _TENSOR_FIELDS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, Tensor):
                raise CacheError(f"{self.name}: {name} is a {type(value).__name__}, not a tensor; re-run `meru embed`")
        self._check_shapes()
        self._check_lengths()

    def _check_scalars(self) -> None:
        """Identity fields are str / int or None, list fields are lists (of str where they hold names or
        captions), the towers' scales are finite numbers > 0."""
        for name, types in (*((n, str) for n in _STR_FIELDS), *((n, int) for n in ("seed", "step"))):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
                raise CacheError(
                    f"{self.name}: {name} = {short_repr(value)} is not a {types.__name__}; re-run `meru embed`"
                )
        for name in _LIST_FIELDS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, list):
                raise CacheError(f"{self.name}: {name} is a {type(value).__name__}, not a list; re-run `meru embed`")
            if value is not None and name in _STR_LIST_FIELDS and not all(isinstance(v, str) for v in value):
                raise CacheError(f"{self.name}: {name} holds non-strings; re-run `meru embed`")
        for name in ("space.curv", "visual_alpha", "textual_alpha"):
            value = self.space.curv if name == "space.curv" else getattr(self, name)
            if value is not None and not _positive_number(value):
                raise CacheError(f"{self.name}: {name} = {short_repr(value)} must be a number > 0; re-run `meru embed`")

    def _check_shapes(self) -> None:
        """Embeddings are float matrices of one width ``D >= 1`` (``image_emb``/``text_emb``/``root_emb``: [*, D],
        ``class_text_raw``: [T, C, D]); index fields are 1-D integer tensors inside their range (``labels`` in
        ``[0, C)``, ``text_to_image`` in ``[0, N)``); annotations are 1-D."""
        raws = {"class_text_raw": self.class_text_raw}
        raws.update({f"prompt_sets.{k}.class_text_raw": v.class_text_raw for k, v in (self.prompt_sets or {}).items()})
        widths = set()
        for name in ("image_emb", "image_feats", "text_emb", "root_emb", *raws):
            value = raws[name] if name in raws else getattr(self, name)
            if value is None:
                continue
            rank = 3 if name in raws else 2
            if (
                not isinstance(value, Tensor)
                or value.ndim != rank
                or not value.is_floating_point()
                or value.shape[-1] < 1
            ):
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise CacheError(
                    f"{self.name}: {name} has shape {shape}, expected a float tensor of rank {rank} (last dimension = "
                    "embedding width >= 1); re-run `meru embed`"
                )
            if name != "image_feats":
                widths.add(int(value.shape[-1]))
        if len(widths) > 1:
            raise CacheError(f"{self.name}: embeddings of different widths {sorted(widths)}; re-run `meru embed`")
        bounds = {"labels": len(self.classnames) if self.classnames is not None else None}
        bounds["text_to_image"] = len(self.image_emb) if self.image_emb is not None else None
        bounds["caption_truth"] = 2
        for name in ("labels", "text_to_image", "levels", "specificity", "depth", "caption_truth"):
            value = getattr(self, name)
            if value is None:
                continue
            integral = name not in ("specificity", "depth")
            if value.ndim != 1 or (integral and (value.is_floating_point() or value.is_complex())):
                raise CacheError(
                    f"{self.name}: {name} has shape {tuple(value.shape)} and dtype {value.dtype}, expected a 1-D "
                    f"{'integer' if integral else 'number'} tensor; re-run `meru embed`"
                )
            top = bounds.get(name)
            if integral and len(value) and (int(value.min()) < 0 or (top is not None and int(value.max()) >= top)):
                raise CacheError(
                    f"{self.name}: {name} holds {int(value.min())}..{int(value.max())}, outside [0, {top}); "
                    "re-run `meru embed`"
                )

    def _check_lengths(self) -> None:
        """Per-image fields have one row per image, per-caption fields one per caption, ``class_text_raw`` is
        ``[len(templates), len(classnames), D]`` (each check where both sides are present)."""
        groups = {
            "image_emb": ("image_feats", "labels", "keys", "meta"),
            "text_emb": (
                "texts",
                "text_to_image",
                "specificity",
                "depth",
                "node",
                "attributes",
                "levels",
                "caption_truth",
            ),
        }
        for anchor, others in groups.items():
            ref = getattr(self, anchor)
            if ref is None:
                continue
            for other in others:
                value = getattr(self, other)
                if value is not None and len(value) != len(ref):
                    raise CacheError(
                        f"{self.name}: {other} has {len(value)} rows but {anchor} {len(ref)}; re-run `meru embed`"
                    )
        raw = self.class_text_raw
        if raw is not None:
            want = (len(self.templates or raw), len(self.classnames or raw[0])) if raw.ndim == 3 else None
            if want is None or tuple(raw.shape[:2]) != want:
                raise CacheError(
                    f"{self.name}: class_text_raw has shape {tuple(raw.shape)}, expected [templates, classnames, D] "
                    f"= {want}; re-run `meru embed`"
                )

    # ------------------------------------------------------------------ helpers for readers
    @property
    def name(self) -> str:
        """The file the cache was loaded from, for messages (``"embedding cache"`` when built in memory)."""
        return str(self.path) if self.path is not None else "embedding cache"

    def require(self, *fields: str, what: str) -> None:
        """Raise :class:`CacheError` naming the file unless every field in ``fields`` is present (not None);
        ``what``: the kind of cache the evaluation needs (e.g. ``"a retrieval embedding cache"``)."""
        missing = [f for f in fields if getattr(self, f) is None]
        if missing:
            raise CacheError(f"{self.name}: no {', '.join(missing)}; it is not {what}")

    def n_items(self) -> int:
        """Images (or, for a caption pool, captions) in the cache."""
        if self.image_emb is not None:
            return int(self.image_emb.shape[0])
        return len(self.texts or [])

    # ------------------------------------------------------------------ plain dict (the file's content)
    def to_dict(self) -> dict:
        """The on-disk plain dict (loads with ``torch.load(weights_only=True)``): ``format``, every field but
        ``path`` (None where absent), ``space`` as :meth:`meru.spaces.Space.record`, prompt sets as dicts."""
        out: dict = {"format": CACHE_FORMAT}
        for f in dataclasses.fields(self):
            if f.name == "path":
                continue
            value = getattr(self, f.name)
            if f.name == "space":
                value = value.record()
            elif f.name == "prompt_sets" and value is not None:
                value = {
                    k: {"templates": v.templates, "source": v.source, "class_text_raw": v.class_text_raw}
                    for k, v in value.items()
                }
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict, path: str | os.PathLike | None = None) -> EmbeddingCache:
        """Typed cache from the plain dict :meth:`to_dict` writes (or ``meru embed`` assembles: ``format`` may be
        absent, missing fields are None). Raises :class:`CacheError` (one line naming ``path``) for another
        format, unknown fields or a bad space record."""
        where = str(path) if path is not None else "embedding cache"
        fmt = data.get("format", CACHE_FORMAT)
        if fmt != CACHE_FORMAT:
            if isinstance(fmt, str) and fmt.startswith("meru-bench/embeddings/"):
                raise CacheError(
                    f"{where}: embedding cache of format {short_repr(fmt)}, this meru-bench reads {CACHE_FORMAT!r}; "
                    "re-run `meru embed` to rewrite it"
                )
            raise CacheError(f"{where}: not an embedding cache (expected format {CACHE_FORMAT!r}); re-run `meru embed`")
        names = {f.name for f in dataclasses.fields(cls)} - {"path"}
        unknown = sorted(str(k)[:80] for k in set(data) - names - {"format"})
        if unknown:
            raise CacheError(f"{where}: unknown embedding-cache field(s) {', '.join(unknown)}; re-run `meru embed`")
        for required in ("task", "space"):
            if data.get(required) is None:
                raise CacheError(f"{where}: embedding cache without {required!r}; re-run `meru embed`")
        fields = {k: v for k, v in data.items() if k in names}
        fields["space"] = space_from_record(data["space"], where)
        if fields.get("prompt_sets") is not None:
            try:
                fields["prompt_sets"] = {k: PromptSet(**v) for k, v in fields["prompt_sets"].items()}
            except (TypeError, AttributeError):
                raise CacheError(
                    f"{where}: prompt_sets must map names to {{templates, source, class_text_raw}}; re-run `meru embed`"
                ) from None
        for name in ("visual_alpha", "textual_alpha"):
            if isinstance(fields.get(name), Tensor):
                fields[name] = float(fields[name])
        return cls(**fields, path=None if path is None else Path(path))

    # ------------------------------------------------------------------ checks and I/O
    def check_finite(self, source: str | None = None) -> None:
        """Refuse (``NonFiniteWeightsError``, one line) NaN/inf embeddings, curvature or alphas: a diverged model
        must never be scored (NaN distances make every ranking a tie, which reads as perfect recall)."""
        from meru.models.tensor_files import NonFiniteWeightsError, require_finite

        source = source or self.name
        tensors = {k: getattr(self, k) for k in EMBEDDING_FIELDS if getattr(self, k) is not None}
        for set_name, entry in (self.prompt_sets or {}).items():
            tensors[f"prompt_sets.{set_name}.class_text_raw"] = entry.class_text_raw
        require_finite(tensors, source, "embeddings")
        for name, value in (
            ("curv", self.space.curv),
            ("visual_alpha", self.visual_alpha),
            ("textual_alpha", self.textual_alpha),
        ):
            if value is not None and not math.isfinite(float(value)):
                raise NonFiniteWeightsError(
                    f"{source}: {name} = {float(value)!r} is not finite; a diverged model is refused"
                )

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` to ``path`` atomically (:func:`meru.models.tensor_files.save_torch`), after removing
        temporaries of killed writes; refuses non-finite embeddings (nothing is written)."""
        from meru.models.tensor_files import save_torch

        path = Path(path)
        self.check_finite(f"{path} (not written)")
        remove_stale_temps(path)
        return save_torch(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, task: str | tuple[str, ...] | None = None) -> EmbeddingCache:
        """Read a cache written by :meth:`save` (``weights_only=True``: nothing in the file can run code) and
        check its format, content, finiteness and (given ``task``: one task or a tuple of allowed ones) its task.
        Every refusal is one line naming the file and the fix."""
        from meru.models.tensor_files import safe_load

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: embedding cache not found; create it with `meru embed ... --out {path}`")
        data = safe_load(path, "cpu", "embedding cache")
        if not isinstance(data, dict) or "format" not in data:
            raise CacheError(f"{path}: not an embedding cache (expected format {CACHE_FORMAT!r}); re-run `meru embed`")
        cache = cls.from_dict(data, path)
        cache.check_finite()
        tasks = (task,) if isinstance(task, str) else task
        if tasks is not None and cache.task not in tasks:
            raise CacheError(
                f"{path}: cache holds a {cache.task!r} set but this evaluation needs "
                f"{' or '.join(tasks)}; pass the matching --embeddings file"
            )
        return cache

    # ------------------------------------------------------------------ from a model
    @staticmethod
    def model_fields(model, checkpoint: str | os.PathLike | None = None) -> dict:
        """Identity and space fields of a loaded model (plain dict for :meth:`from_dict`): ``kind``, ``model_name`` and
        ``model_display`` (the training config's ``model.name`` / ``model.display``; None: the kind's), ``size``,
        ``checkpoint``, ``seed`` (training config), ``step``, ``space`` (record), ``visual_alpha``, ``textual_alpha``."""
        info = getattr(model, "checkpoint_info", None) or {}
        config = info.get("config") or {}
        seed = (config.get("runtime") or {}).get("seed") if isinstance(config, dict) else None
        model_config = (config.get("model") or {}) if isinstance(config, dict) else {}
        model_config = model_config if isinstance(model_config, dict) else {}
        return {
            "kind": model.kind,
            "model_name": model_config.get("name"),
            "model_display": model_config.get("display"),
            "size": getattr(model, "size", None),
            "checkpoint": str(checkpoint) if checkpoint is not None else None,
            "seed": None if seed is None else int(seed),
            "step": info.get("step"),
            "space": model.space().record(),
            **model.projection_scales(),
        }


def display_name(model: str, kind: str) -> str:
    """How reporting shows a model without a recorded display name: its kind's display name when the model is
    the plain kind (``meru`` -> ``MERU``), else the model name itself."""
    if model != kind:
        return model
    return KINDS[kind].display_name if kind in KINDS else kind.upper()


def _positive_number(value) -> bool:
    """A real number that is not ``<= 0`` (bools refused; a 0-d float tensor counts as its value). NaN and inf
    pass: :meth:`EmbeddingCache.check_finite` refuses them as a diverged model's."""
    if isinstance(value, Tensor) and value.numel() == 1 and value.is_floating_point():
        value = float(value)
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not value <= 0


def space_from_record(record: dict, where: str = "embedding cache") -> Space:
    """The space of a :meth:`meru.spaces.Space.record` dict (``name``, ``curv``, ``min_radius``). Domains:
    the Lorentz curvature ``c`` (hyperboloid of curvature ``-c``) and ``min_radius`` are finite and ``> 0``."""
    name = record.get("name") if isinstance(record, dict) else None
    kind = kind_of_space(name) if isinstance(name, str) else None
    if kind is None:
        raise CacheError(f"{where}: space record {short_repr(record)} names no known space; re-run `meru embed`")
    curv, min_radius = record.get("curv"), record.get("min_radius", MIN_RADIUS)
    checks = (("curv", curv), ("min_radius", min_radius)) if curv is not None else (("min_radius", min_radius),)
    for key, value in checks:
        if not _positive_number(value):
            raise CacheError(
                f"{where}: space.{key} = {short_repr(value)} must be a number > 0 (the {name} space); "
                "the cache is corrupt or hand-made: re-run `meru embed`"
            )
    try:
        return get_space(kind, curv, min_radius)
    except (TypeError, ValueError) as e:
        raise CacheError(f"{where}: bad space record {short_repr(record)} ({e}); re-run `meru embed`") from None


# ------------------------------------------------------------------------------------------- metric record
# MetricRecord: returned (as parts) by every evaluator, assembled and written by meru.evaluation.run,
# read by meru.reporting.

METRIC_FORMAT = "meru-bench/metrics/1"
CLIP_BENCHMARK_SUFFIX = ".clip_benchmark.json"  # clip-benchmark's result file beside each record: not a record


class RecordError(ValueError):
    """A record file that cannot be read; the message (one line) names the file and the fix."""


@dataclass
class Measurement:
    """What every evaluator returns (one shape for every task).

    * ``metrics``: ``{name: float | None}``, the headline numbers (None: undefined on this data);
    * ``intervals``: ``{name: [lo, hi]}``, 95% percentile bootstrap intervals over the test items;
    * ``n``: number of test items (images);
    * ``per_item``: ``{name: list}``, per-item outcomes for paired statistics, each over the task's items
      (images; retrieval ``t2i_rank``: captions; HierarCaps ``depth_tau``: hierarchies); reporting pairs them
      only where their mean (of ``correct``, ``correct_topK``, ``rank < K`` or the list named after the
      metric) reproduces the metric;
    * ``plot``: what the figures need (structure: ``histogram``, ``text_root_by_specificity`` / ``_by_depth``;
      traversal: ``paths`` and ``per_step``);
    * ``details``: other facts of the task (``n_texts``, ``n_classes``, ``n_mistakes``, ``root``, pair counts,
      p-values, probe cost, prompt-set descriptions, ...).
    """

    metrics: dict[str, float | None]
    intervals: dict[str, list] = field(default_factory=dict)
    n: int = 0
    per_item: dict[str, list] = field(default_factory=dict)
    plot: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def update(self, other: Measurement) -> Measurement:
        """Add ``other``'s metrics, intervals, per-item data, plot data and details (``n`` stays); returns self."""
        for name in ("metrics", "intervals", "per_item", "plot", "details"):
            getattr(self, name).update(getattr(other, name))
        return self


@dataclass
class Provenance:
    """Input files of a metric record (None where the task has no such input)."""

    checkpoint: str | None = None
    embeddings: str | None = None
    text_pool: str | None = None
    tree: str | None = None
    train_embeddings: str | None = None
    val_embeddings: str | None = None  # linear-probe: the val split's cache (evaluation.linear_probe_val: dataset)


IDENTITY = ("kind", "model_name", "model_display", "size", "seed", "label", "dataset", "task", "geometry")
#: identity fields a record file may lack (files written before model names: read as the kind)
OPTIONAL_IDENTITY = ("model_name", "model_display")
MEASUREMENT = tuple(f.name for f in dataclasses.fields(Measurement))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bad_record_field(data: dict) -> str | None:
    """What is wrong with the fields of a metric record's dict (None: nothing). Domains: identity fields are
    non-empty strings (``seed``: an int >= 0; ``geometry``: {str: str}); ``metrics`` maps names to finite numbers
    or null; ``intervals`` to ``[lo, hi]`` (numbers or null); ``n`` is an int >= 0; ``per_item`` maps names to
    lists; ``plot``, ``details`` and ``provenance`` are objects."""
    for key in ("kind", "size", "label", "dataset", "task", *(k for k in OPTIONAL_IDENTITY if k in data)):
        if not isinstance(data[key], str) or not data[key]:
            return f"{key} = {short_repr(data[key])} is not a non-empty string"
    if not isinstance(data["seed"], int) or isinstance(data["seed"], bool) or data["seed"] < 0:
        return f"seed = {short_repr(data['seed'])} is not an integer >= 0"
    for key in ("geometry", "metrics", "intervals", "per_item", "plot", "details", "provenance"):
        if not isinstance(data.get(key, {}), dict):
            return f"{key} is a {type(data[key]).__name__}, not an object"
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in data["geometry"].items()):
        return f"geometry = {short_repr(data['geometry'])} must map names to strings"
    for name, value in data["metrics"].items():
        if value is not None and not (_is_number(value) and math.isfinite(value)):
            return f"metrics.{name} = {short_repr(value)} is not a finite number (null marks an undefined metric)"
    for name, value in data.get("intervals", {}).items():
        if not (isinstance(value, list) and len(value) == 2 and all(v is None or _is_number(v) for v in value)):
            return f"intervals.{name} = {short_repr(value)} is not [lo, hi]"
    n = data.get("n", 0)
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        return f"n = {short_repr(n)} is not an integer >= 0"
    for name, value in data.get("per_item", {}).items():
        if not isinstance(value, list):
            return f"per_item.{name} is a {type(value).__name__}, not a list"
    return None


@dataclass
class MetricRecord:
    """One evaluation of one model on one dataset: the file ``meru evaluate --out M.json`` writes.

    Identity: ``kind`` (meru, clip, euclip, ...), ``model_name`` (the model name: the kind, or a config variant
    of it such as ``meru-noentail``; reporting groups by it; absent in older files: the kind), ``model_display``
    (how reporting shows it, e.g. ``MERU, no entailment``; absent: the kind's display name), ``size``, ``seed``
    (training seed; 0 for released
    checkpoints), ``label`` (the run name, e.g. ``meru-cpu-conv-s0``), ``dataset`` (the embedding cache's
    dataset name, e.g. ``synthhier-shape``), ``task`` (``meru evaluate --task``), ``geometry``
    (``{"space", "root_distance"}``: what distances from [ROOT] measure, with unit); the :class:`Measurement`
    fields; ``provenance`` (:class:`Provenance`). ``path``: where it was read from (not written).
    """

    kind: str
    size: str
    seed: int
    label: str
    dataset: str
    task: str
    geometry: dict[str, str]
    metrics: dict[str, float | None]
    model_name: str | None = None
    model_display: str | None = None
    intervals: dict[str, list] = field(default_factory=dict)
    n: int = 0
    per_item: dict[str, list] = field(default_factory=dict)
    plot: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    provenance: Provenance = field(default_factory=Provenance)
    format: str = METRIC_FORMAT
    path: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.model_name is None:
            self.model_name = self.kind
        if self.model_display is None:
            self.model_display = display_name(self.model_name, self.kind)

    @classmethod
    def of(cls, measurement: Measurement, provenance: Provenance | None = None, **identity) -> MetricRecord:
        """A record from an evaluator's :class:`Measurement`, the identity fields and the inputs."""
        return cls(**identity, **dataclasses.asdict(measurement), provenance=provenance or Provenance())

    def to_dict(self) -> dict:
        out = {"format": self.format}
        out.update({k: getattr(self, k) for k in IDENTITY + MEASUREMENT})
        out["provenance"] = dataclasses.asdict(self.provenance)
        return out

    def write(self, path: str | os.PathLike) -> Path:
        """Strict JSON (non-finite numbers -> null), written atomically."""
        return write_json(path, self.to_dict(), nonfinite="null")

    @classmethod
    def from_dict(cls, data: Any, path: str | os.PathLike = "<record>") -> MetricRecord:
        if not isinstance(data, dict) or data.get("format") != METRIC_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise RecordError(
                f"{path}: not a metric record (format {short_repr(found)}, expected {METRIC_FORMAT!r}); "
                "delete it and re-run the `meru evaluate` rule that writes it"
            )
        fields = {f.name for f in dataclasses.fields(cls)} - {"path"}
        missing = sorted(set(IDENTITY) - set(OPTIONAL_IDENTITY) - set(data) | ({"metrics", "provenance"} - set(data)))
        unknown = sorted(set(data) - fields)
        if missing or unknown:
            raise RecordError(
                f"{path}: metric record with missing {missing} / unknown {unknown} fields; "
                "re-run the `meru evaluate` rule that writes it"
            )
        bad = _bad_record_field(data)
        if bad:
            raise RecordError(f"{path}: {bad}; delete it and re-run the `meru evaluate` rule that writes it")
        prov = data["provenance"]
        try:
            provenance = Provenance(**prov)
        except TypeError as err:
            raise RecordError(
                f"{path}: bad provenance {short_repr(prov)} ({short_repr(str(err))}); re-run `meru evaluate`"
            ) from None
        return cls(**{**data, "provenance": provenance}, path=Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike) -> MetricRecord:
        """Read one record; :class:`RecordError` (one line naming the file and the fix) when it is not one."""
        try:
            data = read_json(path)
        except ValueError as err:  # json.JSONDecodeError, NaN/Infinity literals, bad UTF-8
            msg = str(err).splitlines()[0]
            raise RecordError(
                f"{path}: not valid strict JSON ({msg}); delete it and re-run the rule that wrote it"
            ) from None
        return cls.from_dict(data, path)


def load_metric_records(directory: str | os.PathLike) -> list[MetricRecord]:
    """Every metric record under ``directory`` (``*.json``, recursive, sorted by path; clip-benchmark side
    files ``*.clip_benchmark.json`` skipped). Any other JSON is an error naming the file."""
    return [
        MetricRecord.load(p)
        for p in sorted(Path(directory).rglob("*.json"))
        if not p.name.endswith(CLIP_BENCHMARK_SUFFIX) and not p.name.startswith(".")
    ]
