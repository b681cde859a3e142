"""Run names: every evaluated model is one run, named by its label (the metric records' ``label`` field).

The one builder of run labels, in the foundation layer (no imports), so that evaluation (``meru evaluate``'s
default ``--label``), reporting and the workflow (through :mod:`meru.reporting.outputs`) all build them here.
"""


def run_label(kind: str, size: str, seed: int | None) -> str:
    """The label of a trained run: ``{kind}-{size}-s{seed}``; ``{kind}-{size}`` for a model with no training
    seed known (an open_clip model: no made-up ``-s0``)."""
    return f"{kind}-{size}" if seed is None else f"{kind}-{size}-s{int(seed)}"


def trained_run(kind: str, size: str, seed: int) -> dict:
    """A trained run: ``{"label": "{kind}-{size}-s{seed}", "kind", "size", "seed"}``."""
    return {"label": run_label(kind, size, seed), "kind": kind, "size": size, "seed": int(seed), "released": False}


def released_run(entry: dict) -> dict:
    """A released checkpoint of ``pretrained.checkpoints`` (``kind``, ``size``, ``data``: default ``redcaps``,
    MERU's own training data; ``name``: default the kind): label ``{name}-{size}-released``, or
    ``{name}-{size}-{data}-released`` with record size ``{size}-{data}`` for checkpoints trained on other data
    (e.g. HyCoCLIP's GRIT ones); ``model``: the model name (``name`` or the kind) its records carry; seed 0."""
    data = entry.get("data", "redcaps")
    size = entry["size"] if data == "redcaps" else f"{entry['size']}-{data}"
    model = entry.get("name") or entry["kind"]
    return {
        "label": f"{model}-{size}-released",
        "kind": entry["kind"],
        "model": model,
        "size": size,
        "seed": 0,
        "released": True,
    }


def unavailable_reason(marker) -> str | None:
    """The one line (``URL: why``) a released checkpoint's failed download wrote to its ``LABEL.unavailable``
    marker (``meru fetch-checkpoint --unavailable-out``), or None when there is no marker or it is empty."""
    try:
        with open(marker) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    return text.splitlines()[0] if text else None
