"""meru.data.captions: SynthHier caption rules, the RedCaps subreddit prefix, and the training-time
caption choice (CaptionPolicy), alone and through the TrainLoader."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
from PIL import Image

from meru.data import captions as C
from meru.data.captions import CaptionError, CaptionPolicy, derive_seed
from meru.data.loader import TrainLoader
from meru.data.shards import write_shards

# ----------------------------------------------------------------------------- SynthHier rules


def test_synth_phrase_rules():
    assert C.synth_phrase("triangle", {"count": 2, "size": "small", "colour": "red", "texture": "stripes"}) == (
        "two small red triangles on stripes"
    )
    assert C.synth_phrase("triangle", {"count": 1}) == "one triangle"
    assert C.synth_phrase("cross", {"count": 3}) == "three crosses"  # irregular plural
    assert C.synth_phrase("letter T", {"count": 2, "colour": "blue"}) == "two blue letter Ts"
    assert C.synth_phrase("object", {"colour": "white"}) == "a white object"  # no count: existential
    assert C.synth_phrase("object", {}) == "an object"
    assert C.synth_phrase("square", {"texture": "plain"}) == "a square on a plain background"
    assert C.synth_caption("ring", {"size": "large"}, "a photo of ") == "a photo of a large ring."
    assert C.synth_specificity(3, {"count": 2, "colour": "red"}) == 5
    assert C.TEMPLATES == tuple(p + "a {c}." for p in C.PREFIXES)


def test_synth_training_captions_cover_every_specificity():
    names = ["object", "shape", "polygon", "triangle"]
    attrs = {"count": 2, "size": "small", "colour": "red", "texture": "dots"}
    caps = C.synth_training_captions(names, attrs, np.random.default_rng(0))
    n_spec = len(names) + len(attrs)  # specificity 0 .. 7
    assert [c["specificity"] for c in caps] == [s for s in range(n_spec) for _ in range(C.CAPTIONS_PER_SPECIFICITY)]
    # specificity 0 can only be the bare root, 7 only the leaf with every attribute (each with a prefix)
    assert all(c["text"] in {p + "an object." for p in C.PREFIXES} for c in caps[:3])
    assert all(c["text"] in {p + "two small red triangles on dots." for p in C.PREFIXES} for c in caps[-3:])
    # a pure function of the rng state
    again = C.synth_training_captions(names, attrs, np.random.default_rng(0))
    assert caps == again
    assert caps != C.synth_training_captions(names, attrs, np.random.default_rng(1))


# ----------------------------------------------------------------------------- subreddit prefix


def test_segment_subreddit():
    assert C.segment_subreddit("itookapicture") == "i took a picture"
    assert C.segment_subreddit("EarthPorn") == "earth porn"
    assert C.segment_subreddit("r/cat_pics") == "cat pics"
    assert C.segment_subreddit("qwzx") == "qwzx"  # unknown: kept whole


def test_subreddit_prefix_probability_and_one_draw_per_call():
    rng = random.Random(0)
    outs = [C.apply_subreddit_prefix("a cat", "catpics", rng, prob=0.5) for _ in range(400)]
    assert set(outs) == {"a cat", "cat pics : a cat"}
    ref = random.Random(0)
    assert [o != "a cat" for o in outs] == [ref.random() < 0.5 for _ in range(400)]
    assert 150 <= sum(o != "a cat" for o in outs) <= 250
    assert C.apply_subreddit_prefix("x", "catpics", random.Random(1), prob=0.0) == "x"
    rng = random.Random(5)
    assert C.apply_subreddit_prefix("x", None, rng, prob=1.0) == "x"  # no subreddit: unchanged ...
    ref = random.Random(5)
    ref.random()
    assert rng.random() == ref.random()  # ... but the draw was still taken


# ----------------------------------------------------------------------------- policy


def _raw(key, txt=None, meta=None):
    s = {"__key__": key}
    if txt is not None:
        s["txt"] = txt.encode()
    if meta is not None:
        s["json"] = json.dumps(meta).encode()
    return s


def test_policy_choice_is_a_function_of_seed_epoch_key():
    pol = CaptionPolicy()
    meta = {"captions": [{"text": f"caption {j}"} for j in range(10)]}
    sample = _raw("k1", "plain", meta)
    for seed, epoch, key in [(0, 0, "k1"), (3, 2, "k1"), (3, 2, "other")]:
        j = random.Random(derive_seed(seed, "caption", epoch, key)).randrange(10)
        assert pol.caption(sample, key, epoch, seed) == f"caption {j}"
    picks = {pol.caption(sample, "k1", e, 0) for e in range(40)}
    assert len(picks) > 3  # a fresh draw per epoch
    assert CaptionPolicy(sample_json_captions=False).caption(sample, "k1", 0, 0) == "plain"
    assert pol.caption(_raw("k", " only txt \n", {"captions": []}), "k", 0, 0) == "only txt"  # falls back to txt


def test_policy_prefix_probability():
    pol = CaptionPolicy(sample_json_captions=False, subreddit_prefix_prob=0.3)
    samples = [_raw(f"k{i}", "a dog", {"subreddit": "dogpics"}) for i in range(1000)]
    texts = [pol.caption(s, s["__key__"], 1, 9) for s in samples]
    expect = [random.Random(derive_seed(9, "prefix", 1, s["__key__"])).random() < 0.3 for s in samples]
    assert [t == "dog pics : a dog" for t in texts] == expect
    assert 240 <= sum(expect) <= 360
    assert CaptionPolicy(False, 1.0).caption(_raw("k", "a dog"), "k", 0, 0) == "a dog"  # no json: no prefix
    assert CaptionPolicy(False, 1.0).caption(_raw("k", "a dog", {}), "k", 0, 0) == "a dog"  # no subreddit


def test_policy_refuses_bad_samples_and_bad_settings():
    with pytest.raises(CaptionError, match="no caption"):
        CaptionPolicy().caption(_raw("k"), "k", 0, 0)
    with pytest.raises(CaptionError, match="empty caption"):
        CaptionPolicy().caption(_raw("k", "  "), "k", 0, 0)
    with pytest.raises(CaptionError, match="invalid JSON"):
        CaptionPolicy().caption({"__key__": "k", "txt": b"x", "json": b"{nope"}, "k", 0, 0)
    with pytest.raises(CaptionError, match="invalid JSON"):
        CaptionPolicy().caption({"__key__": "k", "txt": b"x", "json": b"[1]"}, "k", 0, 0)
    with pytest.raises(ValueError, match="subreddit_prefix_prob"):
        CaptionPolicy(subreddit_prefix_prob=1.5)
    pol = CaptionPolicy.from_config({"sample_captions": False, "subreddit_prefix_prob": 0.5})
    assert pol == CaptionPolicy(False, 0.5)
    assert CaptionPolicy.from_config({}) == CaptionPolicy(True, 0.0)


# ----------------------------------------------------------------------------- through the loader


def _png(i):
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), i % 256, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _samples(n):
    for i in range(n):
        meta = {"subreddit": ["itookapicture", None, "catpics"][i % 3]}
        if i % 2 == 0:
            meta["captions"] = [{"text": f"c{i}-{j}"} for j in range(4)]
        yield {"__key__": f"s{i:04d}", "png": _png(i), "txt": f"t{i}", "json": json.dumps(meta).encode()}


# Recorded from the loader before the caption choice moved into CaptionPolicy (sample_captions /
# subreddit_prefix_prob flags, commit 2e9d06f): 5 batches of 6 = epoch 0 and the first batch of epoch 1.
RECORDED = {
    (True, 0.0): "c2-0 t3 t1 t5 t7 c16-3 c0-2 t17 c6-3 c20-1 t21 c4-0 t23 c8-1 c18-2 t19 t9 t11 t13 c10-3 c22-0 t15 "
    "c12-1 c14-2 c2-2 t3 c4-0 t5 t1 t7",
    (False, 0.5): "cat pics : t2|i took a picture : t3|t1|t5|t7|t16|t0|cat pics : t17|i took a picture : t6|t20|t21|"
    "t4|cat pics : t23|t8|i took a picture : t18|t19|i took a picture : t9|t11|t13|t10|t22|"
    "i took a picture : t15|t12|t14|cat pics : t2|t3|t4|t5|t1|t7",
    (True, 0.5): "cat pics : c2-0|i took a picture : t3|t1|t5|t7|c16-3|c0-2|cat pics : t17|i took a picture : c6-3|"
    "c20-1|t21|c4-0|cat pics : t23|c8-1|i took a picture : c18-2|t19|i took a picture : t9|t11|t13|c10-3|"
    "c22-0|i took a picture : t15|c12-1|c14-2|cat pics : c2-2|t3|c4-0|t5|t1|t7",
}


@pytest.mark.parametrize("policy", list(RECORDED))
def test_loader_captions_match_recorded_values(tmp_path, policy):
    out = tmp_path / "shards"
    write_shards(_samples(24), out, "s", shard_size=8, source="test")
    loader = TrainLoader(
        out,
        batch_size=6,
        image_size=8,
        context_length=16,
        shuffle_buffer=4,
        seed=7,
        augment=False,
        captions=CaptionPolicy(*policy),
    )
    it = iter(loader)
    texts = [t for _ in range(5) for t in next(it)["texts"]]
    sep = " " if policy == (True, 0.0) else "|"
    assert texts == RECORDED[policy].split(sep)
