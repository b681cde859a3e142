"""Training loader: batch contents, exact resume, rank split, corrupt-sample skipping, incomplete dirs."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from meru.data.captions import CaptionPolicy
from meru.data.loader import TrainLoader, random_resized_crop_params
from meru.data.manifest import IncompleteDatasetError
from meru.data.shards import write_shards

TXT_ONLY = CaptionPolicy(sample_json_captions=False)  # the txt member, no prefix

torch.set_num_threads(1)


def _png(value: int, size: int = 16) -> bytes:
    """A constant-colour PNG whose red channel is ``value`` (so the image identifies its sample)."""
    arr = np.zeros((size, size, 3), np.uint8)
    arr[..., 0] = value
    arr[..., 1] = 255 - value
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _samples(n: int, corrupt: set[int] = frozenset()):
    for i in range(n):
        yield {
            "__key__": f"s{i:05d}",
            "png": b"not a png at all" if i in corrupt else _png(i),
            "txt": f"caption {i}",
            "json": {
                "captions": [{"text": f"generic {i}", "specificity": 0}, {"text": f"specific {i}", "specificity": 1}]
            },
        }


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("loader") / "train"
    write_shards(_samples(60), out, "t", shard_size=20, source="test")
    return out


def _take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def _assert_same(a, b):
    assert a["keys"] == b["keys"]
    assert torch.equal(a["images"], b["images"])
    assert torch.equal(a["tokens"], b["tokens"])


def test_batch_contents(shard_dir):
    loader = TrainLoader(shard_dir, batch_size=8, image_size=12, context_length=10, augment=False, captions=TXT_ONLY)
    (batch,) = _take(loader, 1)
    assert batch["images"].shape == (8, 3, 12, 12) and batch["images"].dtype == torch.float32
    assert batch["tokens"].shape == (8, 10) and batch["tokens"].dtype == torch.long
    assert batch["skipped"] == 0 and loader.skipped_total == 0 and loader.num_samples == 60
    for key, img, text in zip(batch["keys"], batch["images"], batch["texts"]):
        i = int(key[1:])
        # constant image survives resize exactly: red = i/255, green = (255-i)/255
        assert torch.allclose(img[0], torch.full((12, 12), i / 255), atol=1e-6)
        assert torch.allclose(img[1], torch.full((12, 12), (255 - i) / 255), atol=1e-6)
        assert text == f"caption {i}"
    # tokens: SOT, words..., EOT, zero padding (open_clip BPE)
    assert (batch["tokens"][:, 0] == 49406).all()


def test_epoch_covers_every_sample_once(shard_dir):
    loader = TrainLoader(shard_dir, batch_size=10, image_size=8, context_length=8, shuffle_buffer=16)
    keys = [k for b in _take(loader, 6) for k in b["keys"]]
    assert sorted(keys) == [f"s{i:05d}" for i in range(60)]
    assert keys != sorted(keys)  # shuffled
    keys2 = [k for b in _take(loader, 6) for k in b["keys"]]  # epoch 1: same set, new order
    assert sorted(keys2) == sorted(keys) and keys2 != keys
    assert loader.state_dict()["epoch"] >= 1


def test_caption_sampling_uses_json_captions(shard_dir):
    loader = TrainLoader(shard_dir, batch_size=30, image_size=8, context_length=8)
    texts = [(k, t) for b in _take(loader, 4) for k, t in zip(b["keys"], b["texts"])]
    for key, text in texts:
        assert text in (f"generic {int(key[1:])}", f"specific {int(key[1:])}")
    kinds = {t.split()[0] for _, t in texts}
    assert kinds == {"generic", "specific"}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_exact_resume(shard_dir, num_workers):
    kw = dict(batch_size=7, image_size=10, context_length=8, seed=3, num_workers=num_workers, shuffle_buffer=12)
    n, k = 12, 5  # crosses epoch boundaries (60 samples / 7 per batch)
    ref_loader = TrainLoader(shard_dir, **kw)
    it = iter(ref_loader)
    ref = []
    for i in range(n):
        ref.append(next(it))
        if i == k - 1:
            state = json.loads(json.dumps(ref_loader.state_dict()))  # must be JSON-safe
    resumed = TrainLoader(shard_dir, **kw)
    resumed.load_state_dict(state)
    for a, b in zip(ref[k:], _take(resumed, n - k)):
        _assert_same(a, b)
    # batch index only (e.g. another rank's checkpoint): replay gives the same batches
    replayed = TrainLoader(shard_dir, **kw)
    replayed.load_state_dict({"batch": k})
    for a, b in zip(ref[k:], _take(replayed, n - k)):
        _assert_same(a, b)


def test_augmentation_is_deterministic_and_random(shard_dir):
    kw = dict(batch_size=5, image_size=8, context_length=8, seed=1)
    a = _take(TrainLoader(shard_dir, **kw), 2)
    b = _take(TrainLoader(shard_dir, **kw), 2)
    for x, y in zip(a, b):
        _assert_same(x, y)
    c = _take(TrainLoader(shard_dir, **{**kw, "seed": 2}), 2)
    assert [x["keys"] for x in a] != [x["keys"] for x in c]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_ranks_see_disjoint_samples(shard_dir, num_workers):
    seen = []
    for rank in range(2):
        loader = TrainLoader(
            shard_dir, batch_size=5, image_size=8, context_length=8, rank=rank, world_size=2, num_workers=num_workers
        )
        seen.append({k for b in _take(loader, 6) for k in b["keys"]})  # one epoch = 30 samples per rank
    assert len(seen[0]) == len(seen[1]) == 30
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {f"s{i:05d}" for i in range(60)}


def test_corrupt_samples_skipped_and_counted(tmp_path):
    out = tmp_path / "bad"
    write_shards(_samples(20, corrupt={3, 11}), out, "b", shard_size=10, source="test")
    loader = TrainLoader(out, batch_size=6, image_size=8, context_length=8, shuffle_buffer=1)
    batches = _take(loader, 6)  # 18 good samples per epoch -> 3 batches per epoch
    keys = [k for b in batches[:3] for k in b["keys"]]
    assert sorted(keys) == sorted(f"s{i:05d}" for i in range(20) if i not in (3, 11))
    assert batches[2]["skipped"] == 2 and batches[5]["skipped"] == 4
    assert loader.skipped_total == 4


def test_incomplete_directory_is_rejected(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "t-000000.tar").write_bytes(b"")
    with pytest.raises(IncompleteDatasetError, match="manifest"):
        TrainLoader(tmp_path / "half", batch_size=2, image_size=8, context_length=8)


def test_crop_params_follow_the_scale_and_ratio_rule():
    rng = random.Random(0)
    for _ in range(500):
        top, left, h, w = random_resized_crop_params(32, 48, (0.5, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= top and top + h <= 32 and 0 <= left and left + w <= 48
        # rounding of w, h to integers moves the area/ratio slightly off the sampled range
        assert 0.45 <= h * w / (32 * 48) <= 1.0
        assert 3 / 4 - 0.1 <= w / h <= 4 / 3 + 0.1
    # a 1-pixel-wide image cannot fit any sampled box: central fallback with clamped ratio
    assert random_resized_crop_params(40, 1, (0.5, 1.0), (3 / 4, 4 / 3), rng) == (19, 0, 1, 1)


def test_generated_synthhier_end_to_end(synthhier):
    import tarfile

    from meru.data.manifest import shard_paths

    synth = synthhier(300, 100, shard_size=120)
    captions = {}
    for path in shard_paths(synth / "train"):
        with tarfile.open(path) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".json"):
                    captions[m.name[:-5]] = {c["text"] for c in json.loads(tf.extractfile(m).read())["captions"]}
    assert TrainLoader(synth, 2, 8, 8).num_samples == 300  # the output dir means its train/
    loader = TrainLoader(
        synth / "train", batch_size=32, image_size=32, context_length=24, num_workers=2, shuffle_buffer=50
    )
    batches = _take(loader, 12)  # > one epoch (300 samples)
    seen = set()
    for b in batches:
        assert b["images"].shape == (32, 3, 32, 32) and 0.0 <= b["images"].min() and b["images"].max() <= 1.0
        assert b["tokens"].shape == (32, 24) and b["skipped"] == 0
        for key, text in zip(b["keys"], b["texts"]):
            assert text in captions[key]
        seen.update(b["keys"])
    assert seen == set(captions)
    # a sample drawn in two epochs usually gets two different captions (24 stored per image)
    drawn = {}
    for b in batches:
        for key, text in zip(b["keys"], b["texts"]):
            drawn.setdefault(key, []).append(text)
    repeated = [t for t in drawn.values() if len(t) > 1]
    assert repeated and sum(len(set(t)) > 1 for t in repeated) > 0.7 * len(repeated)


def test_resume_across_corrupt_samples_restores_counts(tmp_path):
    out = tmp_path / "bad"
    write_shards(_samples(30, corrupt={2, 9, 17}), out, "b", shard_size=10, source="test")
    kw = dict(batch_size=4, image_size=8, context_length=8, shuffle_buffer=8, seed=5)
    ref = TrainLoader(out, **kw)
    it = iter(ref)
    first = [next(it) for _ in range(5)]
    state = ref.state_dict()
    rest = [next(it) for _ in range(10)]
    resumed = TrainLoader(out, **kw)
    resumed.load_state_dict(state)
    assert resumed.skipped_total == first[-1]["skipped"]
    for a, b in zip(rest, _take(resumed, 10)):
        _assert_same(a, b)
        assert a["skipped"] == b["skipped"]
    # 15 batches x 4 = 60 good samples: 2 full epochs of 27 (3 corrupt each) + 6 samples of epoch 3
    counts = [b["skipped"] for b in first + rest]
    assert counts == sorted(counts) and 6 <= counts[-1] <= 9


def test_truncated_shard_is_skipped(tmp_path):
    out = tmp_path / "trunc"
    write_shards(_samples(30), out, "t", shard_size=10, source="test")
    shard = out / "t-000001.tar"
    data = shard.read_bytes()
    # cut inside the 6th sample's members; the manifest still lists the shard (checksums not verified here:
    # damage met while reading). Each sample = 3 members (json, png, txt) of 512-byte header + data padded to 512
    shard.write_bytes(data[: 5 * 3 * 1024 + 700])
    loader = TrainLoader(
        out, batch_size=5, image_size=8, context_length=8, shuffle_buffer=1, captions=TXT_ONLY, verify=False
    )
    batches = _take(loader, 6)  # one epoch = 25 usable samples, then one batch of the next epoch
    keys = [k for b in batches[:5] for k in b["keys"]]
    assert sorted(keys) == [f"s{i:05d}" for i in list(range(15)) + list(range(20, 30))]
    # the 5 samples the manifest promised but the shard no longer has (counted when the shard ends)
    assert batches[5]["skipped"] == 5 and loader.skipped_total == 5


def test_write_shards_layout_reproducible_and_atomic(tmp_path):
    import tarfile

    from meru.data.manifest import read_manifest

    out = tmp_path / "set"
    m = write_shards(_samples(7), out, "x", shard_size=3, source="unit", counts={"attempted": 9})
    assert [(e["path"], e["num_samples"]) for e in m["shards"]] == [
        ("x-000000.tar", 3),
        ("x-000001.tar", 3),
        ("x-000002.tar", 1),
    ]
    assert m["counts"] == {"attempted": 9, "written": 7} and read_manifest(out, verify=True)["num_samples"] == 7
    with tarfile.open(out / "x-000002.tar") as tf:
        members = tf.getmembers()
        assert [x.name for x in members] == ["s00006.json", "s00006.png", "s00006.txt"]
        assert all(x.mtime == 946684800 and not x.pax_headers for x in members)
        assert tf.extractfile(members[2]).read() == b"caption 6"
    sums = [e["sha256"] for e in m["shards"]]

    def failing():
        yield from _samples(4)
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError, match="source died"):
        write_shards(failing(), out, "x", shard_size=3, source="unit")
    # the previous complete set is untouched and no temporary directory is left
    assert [e["sha256"] for e in read_manifest(out, verify=True)["shards"]] == sums
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]
    again = write_shards(_samples(7), out, "x", shard_size=3, source="unit")
    assert [e["sha256"] for e in again["shards"]] == sums
