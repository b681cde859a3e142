"""Fuzzing the readers (issue 22): Hypothesis builds malformed train and workflow configs, metric records,
embedding caches and shard manifests from valid ones. Property: each reader either accepts the input or raises
one of the project's user errors (``meru.cli.user_error_types()``, which ``meru`` prints as one line) with a
one-line, bounded message; never another exception (which would be a traceback).

Bounded in CI (profile ``ci``: 40 examples per reader, about 30 s in all); ``MERU_FUZZ=long`` runs 2000 per
reader (docs/FAILURES.md, "Fuzzing the readers").
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meru.cli import user_error_types
from meru.config import DEFAULTS, check_workflow_config, load_train_config
from meru.data.manifest import read_manifest, write_manifest
from meru.records import EmbeddingCache, MetricRecord
from meru.spaces import get_space

ROOT = Path(__file__).resolve().parent.parent
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# CI: the same 40 examples every run (derandomize), so a red CI is reproducible; the long run explores afresh
settings.register_profile("ci", max_examples=40, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=2000, **_COMMON)
settings.load_profile("long" if os.environ.get("MERU_FUZZ") == "long" else "ci")
MAX_MESSAGE = 4000  # characters: every echoed value is cut to 80, so even many bad keys stay far below this

# values a malformed file may hold where a valid one has something else
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.just("x" * 5000),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def _accepts_or_one_line(read, *args):
    """Run ``read(*args)``; a user error must be one short line, any other exception fails the test."""
    try:
        read(*args)
    except user_error_types() as e:
        message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        assert "\n" not in message.strip() and len(message) < MAX_MESSAGE, (type(e).__name__, message[:500])


def _mutate(data, path: list, value):
    """``data`` with the entry at ``path`` (keys / indices, walked as far as they exist) replaced by ``value``."""
    out = copy.deepcopy(data)
    node = out
    for key in path[:-1]:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            node = node[key]
        else:
            break
    last = path[-1] if path else None
    if isinstance(node, dict):
        node[last if isinstance(last, str) else "extra"] = value
    elif isinstance(node, list) and node:
        node[(last if isinstance(last, int) else 0) % len(node)] = value
    return out


def _paths(data, prefix=()) -> list[list]:
    """Every key path into ``data`` (dicts and lists)."""
    out = [list(prefix)]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data[:3]):
            out += _paths(v, (*prefix, i))
    return out


# ------------------------------------------------------------------------------------------------ configs
TRAIN_PATHS = _paths(DEFAULTS) + [["model", "nope"], ["optimm"], []]


@given(path=st.sampled_from(TRAIN_PATHS), value=values, sets=st.lists(st.text(max_size=20), max_size=2))
def test_train_config_reader(tmp_path_factory, path, value, sets):
    config = _mutate({"train": copy.deepcopy(DEFAULTS)}, ["train", *path], value)
    f = tmp_path_factory.mktemp("cfg") / "c.yaml"
    f.write_text(yaml.safe_dump(config, allow_unicode=True))
    _accepts_or_one_line(load_train_config, f, "meru", "tiny", 0, sets)


@given(text=st.text(alphabet=st.sampled_from(list("ab:{}[]-,\t\n '\"!&*%@#|>")), max_size=60))
def test_train_config_reader_on_broken_yaml(tmp_path_factory, text):
    f = tmp_path_factory.mktemp("cfg") / "c.yaml"
    f.write_text(text)
    _accepts_or_one_line(load_train_config, f, "meru", "tiny", 0)


WORKFLOW = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
SCHEMA = yaml.safe_load((ROOT / "configs" / "schema.yaml").read_text())


@given(path=st.sampled_from(_paths(WORKFLOW) + [["evaluation", "zeroshot"], ["pretrained"]]), value=values)
def test_workflow_config_checker(path, value):
    _accepts_or_one_line(check_workflow_config, _mutate(WORKFLOW, path, value), SCHEMA, "fuzz.yaml")


# ------------------------------------------------------------------------------------------ metric records
RECORD = json.loads(
    (ROOT / "results/reference/default/metrics/meru-cpu-conv-s0/zeroshot-synthhier-shape.json").read_text()
)


@given(path=st.sampled_from(_paths(RECORD)[:200]), value=values)
def test_metric_record_reader(tmp_path_factory, path, value):
    f = tmp_path_factory.mktemp("rec") / "m.json"
    f.write_text(json.dumps(_mutate(RECORD, path, value)))
    _accepts_or_one_line(MetricRecord.load, f)


# ---------------------------------------------------------------------------------------- embedding caches
def _valid_cache() -> dict:
    return EmbeddingCache(
        task="classification",
        space=get_space("meru", 1.0),
        dataset="x",
        image_emb=torch.randn(4, 8),
        image_feats=torch.randn(4, 3),
        labels=torch.tensor([0, 1, 0, 1]),
        classnames=["a", "b"],
        templates=["{}"],
        class_text_raw=torch.randn(1, 2, 8),
        visual_alpha=0.5,
    ).to_dict()


tensors = st.builds(
    lambda shape, dtype, fill: (
        torch.full(shape, fill, dtype=dtype)
        if dtype.is_floating_point
        else torch.zeros(shape, dtype=dtype) + int(fill if abs(fill) < 1e6 else 0)
    ),
    st.lists(st.integers(0, 5), max_size=4).map(tuple),
    st.sampled_from([torch.float32, torch.int64, torch.bool, torch.float64]),
    st.floats(-1e3, 1e3),
)
CACHE_PATHS = [[k] for k in _valid_cache()] + [["space", "curv"], ["space", "min_radius"], ["space", "name"], ["nope"]]


@given(path=st.sampled_from(CACHE_PATHS), value=st.one_of(values, tensors))
def test_embedding_cache_reader(tmp_path_factory, path, value):
    f = tmp_path_factory.mktemp("emb") / "e.pt"
    torch.save(_mutate(_valid_cache(), path, value), f)
    _accepts_or_one_line(EmbeddingCache.load, f)


# ------------------------------------------------------------------------------------------------ manifests
@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    (d / "0.tar").write_bytes(b"x" * 10)
    write_manifest(d, "t", "test", [("0.tar", 3)])
    return d


@given(
    path=st.sampled_from(
        _paths({"format": 1, "complete": 1, "shards": [{"path": 1, "num_samples": 1, "size": 1, "sha256": 1}]})
    ),
    value=values,
)
def test_manifest_reader(shard_dir, path, value):
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    broken = shard_dir.parent / f"{shard_dir.name}-broken"
    broken.mkdir(exist_ok=True)
    (broken / "0.tar").write_bytes((shard_dir / "0.tar").read_bytes())
    (broken / "manifest.json").write_text(json.dumps(_mutate(manifest, path, value)))
    _accepts_or_one_line(read_manifest, broken, True)
