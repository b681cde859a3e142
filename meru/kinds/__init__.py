"""Model kinds: the one list (:data:`KINDS`). A kind is a model family (CLIP, MERU, EuCLIP): its embedding space,
its model class (a subclass of the CLIP baseline whose diff is the method) and its loss, in ``meru/kinds/<kind>.py``.

This module is light (no torch, timm or open_clip): config validation, the ``meru`` CLI choices, the Snakefile's
wildcard constraint, reporting and ``meru info`` read the records below. The heavy parts (``SPACE``, ``MODEL``,
``LOSS`` of ``meru.kinds.<kind>``) are imported on first use of :attr:`Kind.space_class`, :attr:`Kind.model_class`
or :attr:`Kind.loss_class`.

Adding a kind: write ``meru/kinds/<kind>.py`` (``SPACE``, ``MODEL``, ``LOSS``; for a kind that is not trainable here,
``LOSS`` is a string saying why) and add its line to ``KINDS``
(docs/ARCHITECTURE.md, "Where to add a model kind").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from types import ModuleType


@dataclass(frozen=True)
class Kind:
    """One model kind.

    ``name``: the value of ``model.kind`` / ``--model`` / the ``{model}`` wildcard, saved in checkpoints and records;
    ``display_name`` and ``color`` (matplotlib): how reporting shows it; ``space``: the name of its space
    (``Space.name``, saved in embedding caches); ``options``: its model constructor's keyword arguments, which are
    the config keys under ``model:``, each with its JSON schema (``"default"``: the config default);
    ``scalars``: learned parameters outside the two towers (``meru info`` counts them without building a model);
    ``text_heads``: linear ``text_width -> 1`` heads on the text tower (UNCHA's min-radius head), counted with it;
    ``trainable``: False for kinds evaluated from released checkpoints only (their training objective needs data
    this project does not have, e.g. HyCoCLIP's grounded box crops): ``meru train`` and the configs refuse them.
    """

    name: str
    display_name: str
    color: str
    space: str
    options: dict = field(default_factory=dict)
    scalars: int = 1
    text_heads: int = 0
    trainable: bool = True

    @property
    def module(self) -> ModuleType:
        """``meru.kinds.<name>`` (imports torch)."""
        return import_module(f"{__name__}.{self.name}")

    @property
    def space_class(self) -> type:
        """The :class:`meru.spaces.Space` subclass of this kind's embeddings."""
        return self.module.SPACE

    @property
    def model_class(self) -> type:
        """The model class (:class:`meru.models.clip_meru.CLIP` or a subclass); ``model_class(size, **options)``."""
        return self.module.MODEL

    @property
    def loss_class(self) -> type:
        """The training loss class (:class:`meru.losses.ClipLoss` or a subclass); ``ValueError`` for a kind that
        is not trainable here."""
        if not self.trainable:
            raise ValueError(
                f"model kind {self.name!r} is evaluated from released checkpoints only ({self.module.LOSS})"
            )
        return self.module.LOSS


_POSITIVE = {"type": "number", "exclusiveMinimum": 0}
_MERU_OPTIONS = {
    "curv_init": {**_POSITIVE, "default": 1.0},
    "learn_curv": {"type": "boolean", "default": True},
    "learn_alpha": {"type": "boolean", "default": True},  # False: the two scales stay at 1/sqrt(D) (frozen alpha)
}

#: every model kind, in display order; the only list of kinds
KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("meru", "MERU", "tab:red", "lorentz", _MERU_OPTIONS, scalars=4),
        Kind("clip", "CLIP", "tab:blue", "sphere"),
        # logit_scale_floor: the lower clamp of log s after every optimiser step (the reference euclip branch of
        # EIFY/open_clip clamps log s to [0, ln 100]); null: no lower clamp (this project before 2026-12-07)
        Kind("euclip", "EuCLIP", "tab:green", "euclidean",
             {"logit_scale_floor": {"type": ["number", "null"], "default": 0.0},
              # log s at initialisation: the reference's --init-logit-scale (-1 for its models with the entailment
              # loss, 0 for those without)
              "logit_scale_init": {"type": "number", "default": -1.0}}),
        # released checkpoints of MERU's successors, evaluated in MERU's space (meru/kinds/<kind>.py says why a kind)
        Kind("hycoclip", "HyCoCLIP", "tab:purple", "lorentz", _MERU_OPTIONS, scalars=4, trainable=False),
        Kind("uncha", "UNCHA", "tab:orange", "lorentz", _MERU_OPTIONS, scalars=7, text_heads=1, trainable=False),
    )
}  # fmt: skip

#: the kind of the MERU paper (Desai et al. 2023): the subject of its claims and the default ``model.kind``
PAPER = "meru"
#: the baseline every other kind is compared with ("KIND - CLIP" rows)
BASELINE = "clip"
#: the kinds of the official release (facebookresearch/meru checkpoints, format ``official`` of
#: :mod:`meru.kinds.formats`): a file with a ``curv`` key is the paper's kind, one without is the baseline
OFFICIAL = (PAPER, BASELINE)


def get_kind(name: str) -> Kind:
    """The kind called ``name``; ``ValueError`` naming the choices otherwise."""
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model kind {name!r}; choose one of {', '.join(map(repr, KINDS))}") from None


def kind_of_space(space_name: str) -> str | None:
    """The first kind whose space is called ``space_name`` (``"lorentz"`` -> the MERU kind, which defines it;
    HyCoCLIP and UNCHA embed there too), or None."""
    return next((k.name for k in KINDS.values() if k.space == space_name), None)


def trainable_kinds() -> list[str]:
    """The kinds ``meru train`` trains (:attr:`Kind.trainable`), in display order."""
    return [k.name for k in KINDS.values() if k.trainable]


def model_options(kind: str, options: dict) -> dict:
    """The entries of ``options`` that ``kind``'s model constructor takes (the others belong to other kinds)."""
    return {k: v for k, v in options.items() if k in get_kind(kind).options}


__all__ = [
    "BASELINE",
    "KINDS",
    "OFFICIAL",
    "PAPER",
    "Kind",
    "get_kind",
    "kind_of_space",
    "model_options",
    "trainable_kinds",
]
