"""The embedding cache record (meru.records.EmbeddingCache): round trip, space, refusals, plain on-disk dict."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from meru.models.checkpoints import NonFiniteWeightsError, save_model
from meru.records import CACHE_FORMAT, CacheError, EmbeddingCache, PromptSet
from meru.spaces import Lorentz, get_space

from cli_helpers import cli, mk


def _same(a: EmbeddingCache, b: EmbeddingCache) -> None:
    """Every saved field equal (tensors exactly, dtype included); the space by record."""
    for f in dataclasses.fields(EmbeddingCache):
        if f.name == "path":
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "space":
            assert type(x) is type(y) and x.record() == y.record()
        elif f.name == "prompt_sets":
            assert (x is None) == (y is None)
            for name in x or {}:
                assert x[name].templates == y[name].templates and x[name].source == y[name].source
                assert torch.equal(x[name].class_text_raw, y[name].class_text_raw)
        elif isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y), f.name
        else:
            assert x == y, f.name


def _meru_cache(**over) -> EmbeddingCache:
    g = torch.Generator().manual_seed(0)
    fields = dict(
        task="classification",
        space=Lorentz(0.7),
        dataset="zeroshot_leaf",
        size="tiny",
        seed=3,
        step=120,
        checkpoint="runs/meru-tiny-s3/model.pt",
        visual_alpha=0.2,
        textual_alpha=0.3,
        keys=["a", "b", "c"],
        meta=[{"true_captions": [0]}, None, {"x": 1.5}],
        image_emb=torch.randn(3, 4, generator=g),
        image_feats=torch.randn(3, 6, generator=g),
        labels=torch.tensor([0, 1, 1]),
        classnames=["cat", "dog"],
        templates=["a {}.", "the {}."],
        class_text_raw=torch.randn(2, 2, 4, generator=g),
        class_nodes=["n1", "n2"],
        prompt_source={"templates": "meru", "classnames": "meru"},
        prompt_sets={"single": PromptSet(["a photo of a {}."], "single", torch.randn(1, 2, 4, generator=g))},
    )
    return EmbeddingCache(**{**fields, **over})


def test_round_trip_save_load_is_equal_and_plain(tmp_path):
    cache = _meru_cache()
    assert cache.kind == "meru"  # from the space
    cache.save(tmp_path / "emb.pt")
    back = EmbeddingCache.load(tmp_path / "emb.pt", "classification")
    _same(cache, back)
    assert back.path == tmp_path / "emb.pt" and back.name == str(tmp_path / "emb.pt")
    # the file is a plain dict that torch's safe loader reads: no classes of ours in it
    raw = torch.load(tmp_path / "emb.pt", weights_only=True)
    assert type(raw) is dict and raw["format"] == CACHE_FORMAT and "path" not in raw and "curv" not in raw
    assert raw["space"] == {"name": "lorentz", "kind": "meru", "curv": 0.7, "min_radius": 0.1}
    assert raw["prompt_sets"]["single"]["source"] == "single" and raw["text_emb"] is None
    _same(EmbeddingCache.from_dict(raw), cache)


@pytest.mark.parametrize("kind", ["clip", "meru", "euclip"])
def test_space_of_an_embedded_cache_is_the_models(tmp_path, kind):
    """The cache written by ``meru embed`` carries the model's space (MERU: its learned curvature) and
    alphas, and its embeddings are the model's."""
    from meru.evaluation import embed as E
    from meru.models import build_model

    torch.manual_seed(0)
    model = build_model(kind, "tiny").eval()
    if kind == "meru":
        with torch.no_grad():
            model.curv.fill_(math.log(0.37))  # not the default, so a lost curvature shows
    save_model(model, tmp_path / "model.pt", step=5, config={"runtime": {"seed": 11}})
    paths = mk.write_sets(tmp_path)
    argv = ["--checkpoint", str(tmp_path / "model.pt"), "--text-pool", str(paths["pool"])]
    assert cli(E, argv + ["--out", str(tmp_path / "pool.pt")]) == 0
    cache = EmbeddingCache.load(tmp_path / "pool.pt", "text-pool")
    assert cache.space.matches(model.space()) and type(cache.space) is type(model.space())
    assert cache.space.curv == (pytest.approx(0.37) if kind == "meru" else None)
    scales = model.projection_scales()
    assert cache.visual_alpha == scales["visual_alpha"] and cache.textual_alpha == scales["textual_alpha"]
    assert (cache.kind, cache.size, cache.seed, cache.step) == (kind, "tiny", 11, 5)
    assert cache.checkpoint == str(tmp_path / "model.pt") and cache.dataset == "captions.jsonl"
    assert cache.texts == [r["text"] for r in mk.POOL] and cache.n_items() == len(mk.POOL)
    with torch.no_grad():
        expect = model.encode_text(model.tokenize(cache.texts))
    torch.testing.assert_close(cache.text_emb, expect, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "field, value",
    [
        ("image_emb", torch.tensor([[0.0, float("nan"), 0, 0]] * 3)),
        ("class_text_raw", torch.full((2, 2, 4), float("inf"))),
        ("textual_alpha", float("nan")),
        ("space", Lorentz(float("inf"))),
    ],
)
def test_non_finite_is_refused_on_save_and_load(tmp_path, field, value):
    cache = _meru_cache(**{field: value})
    name = "curv" if field == "space" else field
    with pytest.raises(NonFiniteWeightsError, match=rf"emb\.pt \(not written\): .*{name}") as e:
        cache.save(tmp_path / "emb.pt")
    assert "\n" not in str(e.value) and not (tmp_path / "emb.pt").exists()
    torch.save(cache.to_dict(), tmp_path / "emb.pt")  # written by something else
    with pytest.raises(NonFiniteWeightsError, match=rf"emb\.pt: .*{name}.*diverged"):
        EmbeddingCache.load(tmp_path / "emb.pt")


def test_nan_in_a_prompt_set_is_refused(tmp_path):
    bad = PromptSet(["{}"], "single", torch.full((1, 2, 4), float("nan")))
    with pytest.raises(NonFiniteWeightsError, match="prompt_sets.single.class_text_raw"):
        _meru_cache(prompt_sets={"single": bad}).save(tmp_path / "emb.pt")


def test_wrong_task_missing_file_old_and_foreign_formats_are_one_line_errors(tmp_path):
    _meru_cache().save(tmp_path / "emb.pt")
    with pytest.raises(ValueError, match=r"emb\.pt: cache holds a 'classification' set .*retrieval or text-pool"):
        EmbeddingCache.load(tmp_path / "emb.pt", ("retrieval", "text-pool"))
    with pytest.raises(FileNotFoundError, match=r"none\.pt: embedding cache not found; create it with `meru embed"):
        EmbeddingCache.load(tmp_path / "none.pt")
    old = {**_meru_cache().to_dict(), "format": "meru-bench/embeddings/1", "curv": 0.7}
    torch.save(old, tmp_path / "old.pt")
    foreign = {"format": "meru-bench/checkpoint/1", "state_dict": {}}
    torch.save(foreign, tmp_path / "ckpt.pt")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    unknown = {**_meru_cache().to_dict(), "extra_field": 1}
    torch.save(unknown, tmp_path / "unknown.pt")
    cases = [
        ("old.pt", r"old\.pt: embedding cache of format 'meru-bench/embeddings/1'.*re-run `meru embed`"),
        ("ckpt.pt", r"ckpt\.pt: not an embedding cache .*re-run `meru embed`"),
        ("list.pt", r"list\.pt: not an embedding cache .*re-run `meru embed`"),
        ("unknown.pt", r"unknown\.pt: unknown embedding-cache field\(s\) extra_field; re-run `meru embed`"),
    ]
    for name, pattern in cases:
        with pytest.raises(CacheError, match=pattern) as e:
            EmbeddingCache.load(tmp_path / name)
        assert "\n" not in str(e.value)


def test_bad_space_record_and_kind_mismatch_are_refused():
    rec = _meru_cache().to_dict()
    with pytest.raises(CacheError, match="names no known space"):
        EmbeddingCache.from_dict({**rec, "space": {"name": "poincare", "curv": 1.0}}, "x.pt")
    with pytest.raises(CacheError, match="bad space record"):
        EmbeddingCache.from_dict({**rec, "space": {"name": "lorentz", "curv": None}}, "x.pt")
    with pytest.raises(CacheError, match="model kind 'clip' but the lorentz space"):
        EmbeddingCache.from_dict({**rec, "kind": "clip"}, "x.pt")
    with pytest.raises(CacheError, match="image_emb is a list, not a tensor"):
        EmbeddingCache(task="retrieval", space=get_space("clip"), image_emb=[[0.0]])


def test_require_names_the_file_and_the_missing_fields(tmp_path):
    _meru_cache().save(tmp_path / "emb.pt")
    cache = EmbeddingCache.load(tmp_path / "emb.pt")
    cache.require("image_emb", "labels", what="a classification embedding cache")
    with pytest.raises(CacheError, match=r"emb\.pt: no text_emb, text_to_image; it is not a retrieval"):
        cache.require("image_emb", "text_emb", "text_to_image", what="a retrieval embedding cache")


def test_save_removes_temporaries_of_killed_writes(tmp_path):
    from meru.io import pid_alive

    dead = next(p for p in range(999_999, 900_000, -1) if not pid_alive(p))
    (tmp_path / f".emb.pt.tmp-{dead}").write_bytes(b"half")
    _meru_cache().save(tmp_path / "emb.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.pt"]


def test_rows_that_disagree_are_refused():
    with pytest.raises(CacheError, match="labels has 2 rows but image_emb 3"):
        _meru_cache(labels=torch.tensor([0, 1]))
    with pytest.raises(CacheError, match="text_to_image has 1 rows but text_emb 2"):
        EmbeddingCache(
            task="retrieval", space=get_space("clip"), text_emb=torch.ones(2, 4), text_to_image=torch.tensor([0])
        )
    with pytest.raises(CacheError, match=r"class_text_raw has shape \(2, 3, 4\), expected .* = \(2, 2\)"):
        _meru_cache(class_text_raw=torch.ones(2, 3, 4))
