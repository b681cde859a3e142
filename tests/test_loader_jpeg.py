"""Batched JPEG decode in the main process (``TrainLoader(decode_device=...)``), run with device="cpu":
the same keys, captions, tokens, skips and crops as the worker (PIL) path, pixels within a stated
tolerance; exact resume; corrupt JPEGs skipped and counted; PNGs take the worker path."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from meru.data.loader import TrainLoader, jpeg_header, resolve_decode_device
from meru.data.shards import write_shards
from test_loader import _png, _take

torch.set_num_threads(1)

# Largest per-pixel difference (0..255) between the two paths: PIL's and torchvision's antialiased
# bicubic resampling round differently (libjpeg-turbo decodes the same pixels in both).
MAX_ABS_DIFF = 3


def _jpeg(i: int) -> bytes:
    """A textured JPEG (smooth gradients + noise, so crops and resampling matter) of varying size."""
    rng = np.random.default_rng(i)
    h, w = 40 + 4 * (i % 5), 48 - 3 * (i % 4)
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 5 + i, yy * 6, (xx + yy) * 3], -1) + rng.integers(0, 30, (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _samples(n: int, truncated=frozenset(), garbage=frozenset(), png=frozenset()):
    for i in range(n):
        if i in png:
            image = {"png": _png(i, size=20)}
        else:
            data = _jpeg(i)
            if i in truncated:
                data = data[: len(data) // 2]
            if i in garbage:
                data = b"not a jpeg at all"
            image = {"jpg": data}
        yield {
            "__key__": f"s{i:05d}",
            **image,
            "txt": f"caption {i}",
            "json": {"captions": [{"text": f"generic {i}"}, {"text": f"specific {i}"}]},
        }


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("jpeg") / "train"
    write_shards(_samples(48, truncated={5, 30}, garbage={17}, png={3, 22}), out, "t", shard_size=16, source="test")
    return out


KW = dict(batch_size=6, context_length=10, seed=5, shuffle_buffer=12, trim_tokens=True)


@pytest.mark.parametrize("augment,dtype", [(True, "uint8"), (False, "uint8"), (True, "float32")])
def test_same_batches_as_worker_path(shard_dir, augment, dtype):
    """Three epochs (48 samples, 3 corrupt, 2 PNG): everything but the pixels equal, pixels within tolerance."""
    kw = dict(KW, image_size=24, augment=augment, image_dtype=dtype)
    ref = _take(TrainLoader(shard_dir, **kw), 22)
    loader = TrainLoader(shard_dir, decode_device="cpu", **kw)
    got = _take(loader, 22)
    scale = 255.0 if dtype == "float32" else 1.0
    diffs = []
    for a, b in zip(ref, got):
        assert a["keys"] == b["keys"] and a["texts"] == b["texts"] and a["skipped"] == b["skipped"]
        assert torch.equal(a["tokens"], b["tokens"])
        assert b["images"].dtype == a["images"].dtype and b["images"].shape == a["images"].shape
        diff = (a["images"].double() - b["images"].double()).abs() * scale
        diffs.append(diff)
        is_png = [k in ("s00003", "s00022") for k in a["keys"]]
        for row, png in enumerate(is_png):
            if png:  # worker-decoded rows are placed unchanged
                assert torch.equal(a["images"][row], b["images"][row])
    diff = torch.cat(diffs)
    assert diff.max() <= MAX_ABS_DIFF + 1e-6, float(diff.max())
    assert diff.mean() < 0.5, float(diff.mean())
    # the skips: 3 corrupt per epoch, counted the same way
    assert got[-1]["skipped_total"] == ref[-1]["skipped_total"] >= 6
    assert loader.decode_fallbacks == 0


@pytest.mark.parametrize("num_workers", [0, 2])
def test_exact_resume(shard_dir, num_workers):
    kw = dict(KW, image_size=20, num_workers=num_workers, decode_device="cpu")
    full = _take(TrainLoader(shard_dir, **kw), 12)
    first = TrainLoader(shard_dir, **kw)
    _take(first, 5)
    for state in (first.state_dict(), {"batch": first.state_dict()["batch"]}):
        resumed = TrainLoader(shard_dir, **kw)
        resumed.load_state_dict(state)
        for a, b in zip(full[5:], _take(resumed, 7)):
            assert a["keys"] == b["keys"] and a["skipped"] == b["skipped"]
            assert torch.equal(a["images"], b["images"]) and torch.equal(a["tokens"], b["tokens"])


def test_corrupt_jpegs_skipped_and_counted(shard_dir):
    loader = TrainLoader(shard_dir, decode_device="cpu", **dict(KW, image_size=16))
    keys = [k for b in _take(loader, 8) for k in b["keys"]]  # 48: epoch 0 (45 good samples), then epoch 1
    good = {f"s{i:05d}" for i in range(48)} - {"s00005", "s00030", "s00017"}
    assert set(keys[:45]) == good and not set(keys) - good
    assert loader.skipped_total >= 3


def test_header_check():
    good = _jpeg(1)
    assert jpeg_header(good, "x.jpg").height == 44 and jpeg_header(good, "x.jpg").width == 45
    assert jpeg_header(good[:-100], "x.jpg") is None  # truncated: fully decoded in the worker instead
    assert jpeg_header(_png(1), "x.jpg") is None
    assert jpeg_header(b"junk", "x.jpg") is None


def test_decode_device_setting():
    assert resolve_decode_device("worker") is None and resolve_decode_device(None) is None
    assert resolve_decode_device("cpu") == "cpu"
    assert resolve_decode_device("auto") == ("cuda" if torch.cuda.is_available() else None)
    with pytest.raises(ValueError, match="decode_device"):
        resolve_decode_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_decode_device("cuda")


def test_train_config_key():
    from meru.config import ConfigError, load_train_config
    from meru.training.train import _decode_device

    assert load_train_config(None, "meru", "tiny", 0)["data"]["decode_device"] == "auto"
    cfg = load_train_config(None, "meru", "tiny", 0, ["data.decode_device=cuda:1"])
    assert cfg["data"]["decode_device"] == "cuda:1"
    with pytest.raises(ConfigError, match="decode_device"):
        load_train_config(None, "meru", "tiny", 0, ["data.decode_device=gpu"])
    # auto: the GPU a run trains on, else decoding stays in the workers
    assert _decode_device("auto", torch.device("cpu")) == "worker"
    assert _decode_device("auto", torch.device("cuda:1")) == "cuda:1"
    assert _decode_device("cpu", torch.device("cuda:0")) == "cpu"
