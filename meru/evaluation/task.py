"""An evaluation task as one object: what it needs embedded, how it evaluates, and its tables.

A task (a subclass of :class:`Task`, one per task module, listed once in :data:`meru.evaluation.tasks.TASKS`)
declares

* ``name``: the ``meru evaluate --task`` value and the metric record's ``task`` field;
* ``tables``: the names of the tables that show its records (``meru.reporting.tables.SPECS``, which select
  records by this name; reporting reads metric records only, so it never imports a task);
* ``embeds`` and :meth:`Task.embed`: the kind of evaluation set (``classification``, ``retrieval``,
  ``hierarcaps``, ``caption-choice`` or ``text-pool``) whose embedding cache it adds fields to at ``meru embed`` time, and those
  fields (``meru embed`` encodes the images once, :class:`meru.evaluation.encode.ImagePass`, then asks every
  task that embeds that kind);
* ``arguments``: the ``meru evaluate`` flags only this task reads (``--tree``, ``--steps`` ...);
* :meth:`Task.evaluate`: ``meru evaluate``'s arguments -> an :class:`Evaluation` (the
  :class:`meru.records.Measurement`, the cache that gives the record its identity, the inputs it read and,
  for tasks clip-benchmark also has, its result in clip-benchmark's names).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from meru.records import EmbeddingCache, Measurement, Provenance


@dataclass(frozen=True)
class EmbedOptions:
    """How ``meru embed`` encodes: texts per batch, bf16 autocast (``auto``/``bf16``/``fp32``), and whether
    classification caches get the alternative template sets (``--no-prompt-sets``)."""

    batch_size: int = 256
    amp: str = "auto"
    prompt_sets: bool = True


@dataclass
class Evaluation:
    """What a task's evaluation returns to ``meru evaluate``: the measurement, the test-set cache (identity,
    checkpoint), and for zero-shot / retrieval / linear probe clip-benchmark's ``{"task", "metrics"}``."""

    measurement: Measurement
    cache: EmbeddingCache
    clip_benchmark: dict | None = None


class Task:
    """One evaluation task (module doc). Subclasses set ``name``, ``tables``, ``embeds`` and override
    :meth:`evaluate` and, when ``embeds`` is set, :meth:`embed`."""

    name: str = ""
    tables: tuple[str, ...] = ()
    embeds: str | None = None
    #: ``meru evaluate`` flags of this task only: ``(flag, argparse keyword arguments)``; a flag two tasks
    #: share is declared alike by both (``meru evaluate`` adds it once)
    arguments: tuple[tuple[str, dict], ...] = ()

    def embed(self, model, source, images, options: EmbedOptions) -> dict:
        """Embedding-cache fields this task needs from ``source`` (an ``EvalSet``, or a ``TextPool`` when
        ``embeds == "text-pool"``); ``images``: the set's :class:`~meru.evaluation.encode.ImagePass` (None
        for a caption pool)."""
        return {}

    def evaluate(self, args: argparse.Namespace, inputs: Provenance) -> Evaluation:
        """Metrics from the caches named in ``args`` (``meru evaluate``'s flags); records every further input
        file it reads in ``inputs``."""
        raise NotImplementedError


def bootstrap_options(args: argparse.Namespace) -> dict:
    """``n_boot`` and ``seed`` of the percentile bootstrap from ``--n-boot`` / ``--bootstrap-seed``."""
    return {"n_boot": args.n_boot, "seed": args.bootstrap_seed}


def load_test_cache(args: argparse.Namespace, *kinds: str) -> EmbeddingCache:
    """The ``--embeddings`` cache, which must be one of ``kinds`` (cache tasks)."""
    return EmbeddingCache.load(args.embeddings, kinds[0] if len(kinds) == 1 else kinds)
