"""In-memory loader (``TrainLoader(in_memory=True)``): the same batches as the shard path, bit for bit."""

from __future__ import annotations

import pytest
import torch

from meru.data.loader import TrainLoader
from meru.data.shards import write_shards
from test_loader import _samples, _take

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("memory") / "train"
    write_shards(_samples(60, corrupt={7, 33}), out, "t", shard_size=20, source="test")
    return out


def _assert_batches_equal(xs, ys):
    assert len(xs) == len(ys)
    for a, b in zip(xs, ys):
        assert a["keys"] == b["keys"] and a["texts"] == b["texts"] and a["skipped"] == b["skipped"]
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["tokens"], b["tokens"])


@pytest.mark.parametrize(
    "augment,image_size,dtype",
    [(False, 16, "float32"), (False, 16, "uint8"), (False, 12, "float32"), (True, 12, "float32"), (True, 12, "uint8")],
)
def test_same_batches_as_shard_path(shard_dir, augment, image_size, dtype):
    """Three epochs (60 samples, 2 corrupt, batch 8): order, captions, skips, crops and tokens agree."""
    kw = dict(
        batch_size=8,
        image_size=image_size,
        context_length=10,
        seed=3,
        shuffle_buffer=16,
        augment=augment,
        image_dtype=dtype,
        trim_tokens=True,
    )
    _assert_batches_equal(
        _take(TrainLoader(shard_dir, **kw), 21), _take(TrainLoader(shard_dir, in_memory=True, **kw), 21)
    )


def test_resume_matches_uninterrupted(shard_dir):
    kw = dict(batch_size=8, image_size=16, context_length=10, seed=1, shuffle_buffer=16, augment=False, in_memory=True)
    full = _take(TrainLoader(shard_dir, **kw), 12)
    first = TrainLoader(shard_dir, **kw)
    _take(first, 5)
    resumed = TrainLoader(shard_dir, **kw)
    resumed.load_state_dict(first.state_dict())
    _assert_batches_equal(full[5:], _take(resumed, 7))


def test_images_are_decoded_once(shard_dir):
    loader = TrainLoader(shard_dir, batch_size=8, image_size=16, context_length=10, in_memory=True)
    assert loader.decoded.images.shape == (58, 3, 16, 16) and loader.decoded.images.dtype == torch.uint8
    errors = [s for shard in loader.decoded.samples for s in shard if "__error__" in s]
    assert len(errors) == 2 and all("cannot decode image" in s["__error__"] for s in errors)
