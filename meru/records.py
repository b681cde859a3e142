"""The records stages hand each other, with one owner: this module.

``meru embed`` -> :class:`EmbeddingCache` -> ``meru evaluate`` -> :class:`MetricRecord` -> ``meru tables`` /
``plots`` / ``claims`` / ``reproduce``. Each record has explicit typed fields, one file format (named by
``FORMAT``), one writer (atomic, :mod:`meru.io`) and one reader that checks the format and names the file
and the fix when it is wrong. The dataset name and the run label travel as fields; nothing downstream
parses them back from file names.

This module sits below the models (it imports only :mod:`meru.io` and :mod:`meru.spaces`).
"""

from __future__ import annotations

# ----------------------------------------------------------------------------------------- embedding cache
# EmbeddingCache: written by meru.evaluation.embed, read by every evaluator (section owned by the
# embedding-cache change).


# ------------------------------------------------------------------------------------------- metric record
# MetricRecord: returned (as parts) by every evaluator, assembled and written by meru.evaluation.run,
# read by meru.reporting (section owned by the metric-record change).
