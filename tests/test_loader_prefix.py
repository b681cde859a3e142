"""RedCaps subreddit prefix (MERU: "<subreddit words> : <caption>" with probability p) in the loader."""

import io
import json

import numpy as np
from PIL import Image

from meru.data.captions import CaptionPolicy
from meru.data.loader import TrainLoader
from meru.data.shards import write_shards


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _samples(n):
    for i in range(n):
        yield {
            "__key__": f"r{i:04d}",
            "png": _png(),
            "txt": f"caption {i}",
            "json": json.dumps({"subreddit": "itookapicture" if i % 2 == 0 else None}).encode(),
        }


def _texts(loader, n_batches):
    it = iter(loader)
    return [t for _ in range(n_batches) for t in next(it)["texts"]]


def test_prefix_always_never_and_only_with_subreddit(tmp_path):
    out = tmp_path / "redcaps"
    write_shards(_samples(20), out, "r", shard_size=10, source="test")
    common = dict(batch_size=10, image_size=8, context_length=16, shuffle_buffer=1)
    never = _texts(TrainLoader(out, captions=CaptionPolicy(False, 0.0), **common), 2)
    assert all(t.startswith("caption ") for t in never)
    always = _texts(TrainLoader(out, captions=CaptionPolicy(False, 1.0), **common), 2)
    for t in always:
        i = int(t.rsplit(" ", 1)[1])
        assert t == (f"i took a picture : caption {i}" if i % 2 == 0 else f"caption {i}")


def test_prefix_probability_is_deterministic_and_about_p(tmp_path):
    out = tmp_path / "redcaps"
    write_shards(_samples(200), out, "r", shard_size=100, source="test")
    common = dict(
        batch_size=100,
        image_size=8,
        context_length=16,
        shuffle_buffer=1,
        captions=CaptionPolicy(sample_json_captions=False, subreddit_prefix_prob=0.5),
        seed=3,
    )
    a, b = _texts(TrainLoader(out, **common), 2), _texts(TrainLoader(out, **common), 2)
    assert a == b
    prefixed = sum(t.startswith("i took a picture") for t in a)
    assert 25 <= prefixed <= 75  # 100 subreddit samples, p = 0.5
