"""Contact sheet (``meru contact-sheet``): a PNG grid of dataset samples with their captions.

Reads the first ``--n`` samples of a shard directory (``DIR/train`` of a SynthHier output, or any
shard directory with a manifest), shows each image upscaled with nearest-neighbour interpolation and
prints under it captions at several specificities (SynthHier ``json["captions"]``: the lowest, a middle
and the highest specificity) or the sample's ``txt`` for other data.
"""

from __future__ import annotations

import io
import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

from meru.arguments import add_contact_sheet_arguments as add_arguments  # noqa: F401  (light: fast --help)
from meru.data.manifest import IncompleteDatasetError, shard_paths
from meru.io import save_figure


def _shard_dir(data: Path) -> Path:
    """``data/train`` if ``data`` is a SynthHier output directory, else ``data`` itself."""
    return data / "train" if (data / "train" / "manifest.json").exists() else data


def read_samples(data: str | os.PathLike, n: int) -> list[dict]:
    """First ``n`` samples: ``{"key", "image" (uint8 HxWx3), "captions" [(specificity|None, text)]}``."""
    import webdataset as wds

    urls = shard_paths(_shard_dir(Path(data)))
    out = []
    for sample in wds.tarfile_to_samples()(iter([{"url": u} for u in urls])):
        ext = next((e for e in ("png", "jpg", "jpeg", "webp") if e in sample), None)
        if ext is None:
            continue
        with Image.open(io.BytesIO(sample[ext])) as im:
            image = np.asarray(im.convert("RGB"))
        captions = []
        if "json" in sample:
            caps = json.loads(sample["json"]).get("captions") or []
            if caps:
                by_spec = sorted(caps, key=lambda c: c["specificity"])
                picks = [by_spec[0], by_spec[len(by_spec) // 2], by_spec[-1]]
                captions = [(c["specificity"], c["text"]) for c in picks]
        if not captions and "txt" in sample:
            captions = [(None, sample["txt"].decode("utf-8", errors="replace").strip())]
        out.append({"key": sample["__key__"], "image": image, "captions": captions})
        if len(out) >= n:
            break
    return out


def draw_contact_sheet(samples: list[dict], out: str | os.PathLike, columns: int = 6, title: str | None = None) -> None:
    """Draw ``samples`` (from :func:`read_samples`) as a grid and save a PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(samples) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 2.6, rows * 3.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, s in zip(axes.flat, samples):
        ax.imshow(s["image"], interpolation="nearest")
        lines = []
        for spec, text in s["captions"]:
            label = f"[{spec}] " if spec is not None else ""
            lines.extend(textwrap.wrap(label + text, width=30)[:3])
        ax.set_title(s["key"], fontsize=7, color="0.4")
        ax.text(0.5, -0.03, "\n".join(lines), transform=ax.transAxes, ha="center", va="top", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, Path(out), dpi=110)
    plt.close(fig)


def run(args) -> int:
    try:
        samples = read_samples(args.data, args.n)
    except IncompleteDatasetError as e:
        print(f"meru contact-sheet: error: {e}", file=sys.stderr)
        return 2
    if not samples:
        print(f"meru contact-sheet: error: {args.data}: no samples with an image", file=sys.stderr)
        return 2
    title = f"{args.data}: first {len(samples)} samples ([specificity] caption)"
    draw_contact_sheet(samples, args.out, columns=args.columns, title=title)
    print(json.dumps({"out": str(args.out), "samples": len(samples)}))
    return 0
