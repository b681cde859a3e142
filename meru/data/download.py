"""Real-data acquisition: RedCaps / CC3M / CC12M into webdataset shards with img2dataset.

``meru download --source redcaps|cc3m|cc12m --annotations PATH --out DIR`` does four things:

1. reads the annotations (URL + caption [+ subreddit ...]) from a local file/directory, or from the
   Hugging Face hub copy when ``--annotations hf`` (needs network; never used by the tests);
2. drops repeated URLs (first occurrence kept; the count goes to ``counts["duplicate_url"]``) and writes
   the URL list to ``DIR/_urls.parquet`` (atomically, identical on every rerun so shard ids are stable);
3. calls ``img2dataset.download`` (webdataset output, ``incremental_mode="incremental"``: shards whose
   ``NNNNN_stats.json`` exists are not fetched again, so a rerun resumes), images resized so the short
   side is ``image_size`` (``resize_mode="keep_ratio"``; MERU crops at training time);
4. reads img2dataset's per-shard ``NNNNN.parquet`` (one row per attempted URL, ``status`` and
   ``error_message``), classifies failures with :func:`classify_error`, and writes ``DIR/manifest.json``
   (:func:`meru.data.manifest.write_manifest`) with the counts, so results can say how much of the web
   data still existed when it was fetched.

Samples in the shards: ``jpg`` (image), ``txt`` (the caption, *without* any subreddit prefix) and
``json`` (img2dataset metadata + ``subreddit``/``image_id``/... for RedCaps). The MERU training-time
prefix ("<subreddit words> : <caption>" with probability p) is :func:`meru.data.captions.apply_subreddit_prefix`.

img2dataset names its shards ``00000.tar`` (not ``{name}-000000.tar``); the manifest lists them by path,
which is all the loader uses.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import re
import sys
import zipfile
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

from meru.arguments import DOWNLOAD_SOURCES as SOURCES
from meru.arguments import add_download_arguments as add_arguments  # noqa: F401  (light: fast --help)
from meru.data.manifest import write_manifest
from meru.io import atomic_path

HF_DATASETS = {
    "redcaps": ("kdexd/red_caps", "all"),
    "cc3m": ("google-research-datasets/conceptual_captions", "unlabeled"),
    "cc12m": ("google-research-datasets/conceptual_12m", None),
}
REDCAPS_COLUMNS = ("image_id", "author", "subreddit", "score", "created_utc", "permalink")
FAILURE_REASONS = ("http_404", "http_error", "timeout", "truncated", "not_an_image", "other")
URLS_NAME = "_urls.parquet"


# ----------------------------------------------------------------------------- annotations


def _redcaps_from_json(data: dict, origin: str) -> Iterator[dict]:
    if "annotations" not in data:
        raise ValueError(
            f"{origin}: no 'annotations' key; expected a RedCaps annotation file "
            "({'info': ..., 'annotations': [...]})."
        )
    for ann in data["annotations"]:
        row = {"url": ann["url"], "caption": ann.get("caption") or ann.get("raw_caption") or ""}
        for col in REDCAPS_COLUMNS:
            row[col] = None if ann.get(col) is None else str(ann[col])
        yield row


def read_redcaps(path: str) -> Iterator[dict]:
    """RedCaps rows from ``redcaps_v1.0_annotations.zip``, an extracted directory (``annotations/*.json``
    or ``*.json``), a single ``<subreddit>_<year>.json``, or ``"hf"`` (hub copy ``kdexd/red_caps``)."""
    if path == "hf":
        yield from _read_hf("redcaps")
        return
    p = Path(path)
    if p.is_file() and zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as zf:
            names = sorted(n for n in zf.namelist() if n.endswith(".json"))
            if not names:
                raise ValueError(f"{p}: zip has no annotations/*.json files.")
            for n in names:
                yield from _redcaps_from_json(json.loads(zf.read(n)), f"{p}:{n}")
    elif p.is_dir():
        files = sorted(glob.glob(str(p / "annotations" / "*.json"))) or sorted(glob.glob(str(p / "*.json")))
        if not files:
            raise FileNotFoundError(
                f"{p}: no annotations/*.json or *.json files; point --annotations at "
                "redcaps_v1.0_annotations.zip or its extracted directory."
            )
        for f in files:
            yield from _redcaps_from_json(json.loads(Path(f).read_text()), f)
    elif p.is_file():
        yield from _redcaps_from_json(json.loads(p.read_text()), str(p))
    else:
        raise FileNotFoundError(f"{p}: annotations not found (RedCaps: the zip, its extracted directory, or 'hf').")


def read_cc_tsv(path: str, source: str) -> Iterator[dict]:
    """CC3M TSV is ``caption<TAB>url``, CC12M TSV is ``url<TAB>caption`` (no header in either).
    A first row whose url field does not look like a URL is treated as a header and skipped."""
    if path == "hf":
        yield from _read_hf(source)
        return
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: {source} URL list not found; pass the official TSV with --annotations.")
    url_idx, cap_idx = (1, 0) if source == "cc3m" else (0, 1)
    with open(p, newline="", encoding="utf-8") as f:
        for lineno, fields in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if not fields:
                continue
            if len(fields) < 2:
                raise ValueError(
                    f"{p}:{lineno}: expected 2 tab-separated fields "
                    f"({'caption, url' if source == 'cc3m' else 'url, caption'}), got {len(fields)}."
                )
            url = fields[url_idx].strip()
            if lineno == 1 and not re.match(r"^[a-z]+://", url):
                continue  # header
            yield {"url": url, "caption": fields[cap_idx].strip()}


def _read_hf(source: str) -> Iterator[dict]:
    """Annotations from the Hugging Face hub (network). Column names as published on the hub."""
    import datasets

    repo, config = HF_DATASETS[source]
    ds = datasets.load_dataset(repo, config, split="train") if config else datasets.load_dataset(repo, split="train")
    for ex in ds:
        if source == "redcaps":
            row = {"url": ex["url"], "caption": ex.get("caption") or ex.get("raw_caption") or ""}
            for col in REDCAPS_COLUMNS:
                row[col] = None if ex.get(col) is None else str(ex[col])
            yield row
        else:
            yield {"url": ex.get("image_url") or ex.get("url"), "caption": ex.get("caption", "")}


def read_annotations(source: str, path: str) -> Iterator[dict]:
    if source == "redcaps":
        return read_redcaps(path)
    if source in ("cc3m", "cc12m"):
        return read_cc_tsv(path, source)
    raise ValueError(f"unknown source {source!r}; choose one of {SOURCES}")


def dedupe(rows: Iterable[dict], max_samples: int | None = None) -> tuple[list[dict], int, int]:
    """Keep the first row of every URL. Returns (rows, number of input rows, number of duplicates dropped).
    ``max_samples`` caps the unique rows kept (input rows after the cap are not read)."""
    seen: set[str] = set()
    out, n_in, dups = [], 0, 0
    for row in rows:
        if max_samples is not None and len(out) >= max_samples:
            break
        n_in += 1
        if not row["url"]:
            continue
        if row["url"] in seen:
            dups += 1
            continue
        seen.add(row["url"])
        out.append(row)
    return out, n_in, dups


# ----------------------------------------------------------------------------- failures


def classify_error(message: str | None) -> str:
    """Map an img2dataset ``error_message`` (urllib / PIL / cv2 text) to a failure reason."""
    m = (message or "").lower()
    if "http error 404" in m:
        return "http_404"
    if "http error" in m:
        return "http_error"
    if "timed out" in m or "timeout" in m:
        return "timeout"
    if "incompleteread" in m or "truncated" in m or "incomplete read" in m:
        return "truncated"
    if "identify image" in m or "decod" in m or "not an image" in m:
        return "not_an_image"
    return "other"


def _write_url_list(rows: list[dict], path: Path, columns: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({c: pa.array([r.get(c) for r in rows], type=pa.string()) for c in columns})
    if path.exists():
        old = pq.read_table(path)
        if old.equals(table):
            return
        done = glob.glob(str(path.parent / "*_stats.json"))
        if done:
            raise RuntimeError(
                f"{path}: the URL list differs from the one of the earlier run in {path.parent} "
                f"({len(done)} shards done), so resuming would mix datasets. Use the same --annotations/"
                "--max-samples, or a new --out directory."
            )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def summarize(out: Path) -> tuple[list[tuple[str, int]], Counter, int]:
    """Per-shard results of img2dataset in ``out``: ([(tar, successes)], failure reasons, attempted)."""
    import pyarrow.parquet as pq

    shards, reasons, attempted = [], Counter(), 0
    for stats_file in sorted(out.glob("*_stats.json")):
        shard_id = stats_file.name.split("_")[0]
        tar, meta = out / f"{shard_id}.tar", out / f"{shard_id}.parquet"
        if not tar.exists() or not meta.exists():
            raise RuntimeError(
                f"{stats_file}: shard {shard_id} has stats but no {tar.name}/{meta.name}; "
                f"delete {stats_file} and re-run to fetch that shard again."
            )
        table = pq.read_table(meta, columns=["status", "error_message"]).to_pydict()
        ok = 0
        for status, err in zip(table["status"], table["error_message"]):
            attempted += 1
            if status == "success":
                ok += 1
            else:
                reasons[classify_error(err)] += 1
        shards.append((tar.name, ok))
    return shards, reasons, attempted


def download(
    source: str,
    annotations: str,
    out: str | os.PathLike,
    image_size: int = 224,
    processes: int = 1,
    threads: int = 16,
    max_samples: int | None = None,
    timeout: int = 10,
    retries: int = 0,
    shard_size: int = 10000,
    subreddit_prefix_prob: float = 0.5,
) -> dict:
    """Fetch ``source`` into ``out`` and return the written manifest (see the module docstring)."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {SOURCES}")
    out = Path(out)
    rows, n_in, dups = dedupe(read_annotations(source, annotations), max_samples)
    if not rows:
        raise ValueError(f"{annotations}: no usable (url, caption) rows for {source}.")
    out.mkdir(parents=True, exist_ok=True)
    extra = list(REDCAPS_COLUMNS) if source == "redcaps" else []
    urls = out / URLS_NAME
    _write_url_list(rows, urls, ["url", "caption", *extra])

    # img2dataset's resume logic reads every *.json in the folder as "<shard>_stats.json"; the manifest
    # would break it, and while shards are being added the directory is not a finished dataset anyway.
    (out / "manifest.json").unlink(missing_ok=True)
    _run_img2dataset(
        urls,
        out,
        extra,
        image_size=image_size,
        processes=processes,
        threads=threads,
        shard_size=shard_size,
        timeout=timeout,
        retries=retries,
    )
    manifest, attempted = _write_download_manifest(
        out, source, annotations, (n_in, dups, len(rows)), image_size, subreddit_prefix_prob
    )
    if attempted != len(rows):
        raise RuntimeError(
            f"{out}: img2dataset attempted {attempted} of {len(rows)} URLs (some shards failed); "
            "the manifest is marked incomplete. Re-run the same command to resume."
        )
    return manifest


def _run_img2dataset(urls: Path, out: Path, extra: list[str], **options) -> None:
    """``img2dataset.download`` of the URL list into webdataset shards in ``out`` (incremental: shards with a
    ``NNNNN_stats.json`` are kept, so a rerun resumes); ``options``: image_size, processes, threads,
    shard_size, timeout, retries."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations phones home on import
    import img2dataset

    img2dataset.download(
        url_list=str(urls),
        input_format="parquet",
        url_col="url",
        caption_col="caption",
        save_additional_columns=extra or None,
        output_format="webdataset",
        output_folder=str(out),
        image_size=options["image_size"],
        resize_mode="keep_ratio",
        processes_count=options["processes"],
        thread_count=options["threads"],
        number_sample_per_shard=options["shard_size"],
        timeout=options["timeout"],
        retries=options["retries"],
        incremental_mode="incremental",
        enable_wandb=False,
        distributor="multiprocessing",
        compute_hash="sha256",
    )


def _write_download_manifest(
    out: Path, source: str, annotations: str, rows: tuple[int, int, int], image_size: int, subreddit_prefix_prob: float
) -> tuple[dict, int]:
    """``out/manifest.json`` from img2dataset's per-shard results; ``rows`` = (input rows, duplicate URLs
    dropped, URLs listed); complete only when every listed URL was attempted. Returns (manifest, attempted)."""
    n_in, dups, expected = rows
    shards, reasons, attempted = summarize(out)
    succeeded = sum(n for _, n in shards)
    counts = {
        "input_rows": n_in,
        "duplicate_url": dups,
        "attempted": attempted,
        "succeeded": succeeded,
        "failed": attempted - succeeded,
        **{f"failed_{r}": reasons.get(r, 0) for r in FAILURE_REASONS},
    }
    manifest = write_manifest(
        out,
        name=source,
        source=source,
        shards=shards,
        counts=counts,
        complete=attempted == expected,
        failed_by_reason={r: reasons.get(r, 0) for r in FAILURE_REASONS},
        annotations=str(annotations),
        image_size=image_size,
        success_rate=(succeeded / attempted) if attempted else 0.0,
        subreddit_prefix_prob=subreddit_prefix_prob if source == "redcaps" else None,
    )
    return manifest, attempted


def format_summary(manifest: dict) -> str:
    c = manifest["counts"]
    att = max(c["attempted"], 1)
    lines = [
        f"{manifest['source']}: {c['succeeded']}/{c['attempted']} images downloaded "
        f"({100.0 * c['succeeded'] / att:.1f}%), {len(manifest['shards'])} shards; "
        f"{c['duplicate_url']} duplicate URLs dropped of {c['input_rows']} rows",
    ]
    for r in FAILURE_REASONS:
        if c.get(f"failed_{r}"):
            lines.append(f"  failed {r}: {c[f'failed_{r}']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        manifest = download(
            args.source,
            args.annotations,
            args.out,
            image_size=args.image_size,
            processes=args.processes,
            threads=args.threads,
            max_samples=args.max_samples,
            timeout=args.timeout,
            retries=args.retries,
            shard_size=args.shard_size,
            subreddit_prefix_prob=args.subreddit_prefix_prob,
        )
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        print(f"meru download: error: {e}", file=sys.stderr)
        return 1
    print(format_summary(manifest))
    return 0
