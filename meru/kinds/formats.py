"""Released-checkpoint formats: the one table (:data:`FORMATS`). Light (no torch): config validation reads it;
:func:`meru.models.checkpoints.load_released` reads the files. It lives with the kinds because it names them (a format's files hold
given kinds; HyCoCLIP's and UNCHA's formats are named after their kinds).

A ``pretrained.checkpoints`` entry (configs/pretrained.yaml, configs/leaderboard.yaml) names its file's format
with ``format:``; each format says which kinds its files hold and the model settings its code base trains with
(an entry may override ``curv_init`` / ``learn_curv``). docs/CHECKPOINTS.md describes every layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meru.kinds import OFFICIAL


@dataclass(frozen=True)
class Format:
    """``name``: the ``format:`` value; ``kinds``: the kinds its files can hold (first: the default);
    ``model_kwargs``: model settings of its code base (defaults for the entry's ``curv_init`` / ``learn_curv``);
    ``needs_arch``: its entries name the open_clip architecture (``arch:``); ``source``: where it comes from;
    ``extra_keys``: keys only its files have (official key names), so a file read as another format names it."""

    name: str
    kinds: tuple[str, ...]
    source: str
    model_kwargs: dict = field(default_factory=dict)
    needs_arch: bool = False
    extra_keys: tuple[str, ...] = ()


#: every released-checkpoint format; ``official`` is the default
FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("official", OFFICIAL, "facebookresearch/meru releases and HyCoCLIP's zoo MERU/CLIP files"),
        Format("hycoclip", ("hycoclip",), "PalAvik/hycoclip (hycoclip_vit_{s,b}.pth)"),
        Format("uncha", ("uncha",), "jeeit17/UNCHA (uncha_vit_{s,b}.pth)",
               extra_keys=("global_logit_scale", "global_local_logit_scale", "local_logit_scale",
                           "textual.min_radius_head.0.weight", "textual.min_radius_head.0.bias")),
        Format("atmg", ("meru",), "samgregoost/atmg (configs/train_atmg_vit_*.py)",
               {"curv_init": 0.1, "learn_curv": False}),
        Format("openclip-train", ("meru", "euclip", "clip"), "EIFY/open_clip branch euclip (training checkpoints)",
               needs_arch=True),
    )
}  # fmt: skip
DEFAULT_FORMAT = "official"
#: entry keys a format reads besides ``kind`` / ``size`` (the other keys of an entry: url, sha256, data, ...)
ENTRY_KEYS = ("format", "curv_init", "learn_curv", "arch")


def format_of_entry(entry: dict) -> str:
    """The entry's ``format``; without one, the format named after the entry's ``kind`` (``hycoclip``, ``uncha``),
    else ``official``."""
    if entry.get("format"):
        return entry["format"]
    kind = entry.get("kind")
    return kind if kind in FORMATS and FORMATS[kind].kinds == (kind,) else DEFAULT_FORMAT


def entry_problem(entry: dict) -> str | None:
    """Why a checkpoint entry's ``format`` / ``kind`` / ``arch`` do not fit together (one line), or None."""
    name = format_of_entry(entry)
    fmt = FORMATS.get(name)
    if fmt is None:
        return f"format {name!r} is not a checkpoint format (choose from: {', '.join(FORMATS)})"
    kind = entry.get("kind")
    if kind is not None and kind not in fmt.kinds:
        return f"kind {kind!r} with format {name!r}: a {name} file holds kind {' or '.join(fmt.kinds)}"
    if fmt.needs_arch and not entry.get("arch"):
        return f"format {name!r} needs arch: the open_clip architecture (e.g. ViT-B-16, or a model config .json)"
    if not fmt.needs_arch and entry.get("arch"):
        return f"arch is only read for format openclip-train, not {name!r}"
    return None


__all__ = ["DEFAULT_FORMAT", "ENTRY_KEYS", "FORMATS", "Format", "entry_problem", "format_of_entry"]
