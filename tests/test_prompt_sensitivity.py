"""Prompt sensitivity: alternative template sets in the embedding cache, their zero-shot scores, the table."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from meru.data.evalsets import clip_benchmark_templates, meru_prompts, prompt_sets
from meru.evaluation import embed as E
from meru.evaluation import prompt_sensitivity as P
from meru.evaluation.encode import class_text_raw
from meru.records import EmbeddingCache
from meru.reporting import prompt_sensitivity as T

from cli_helpers import cli, mk, tiny_sets_and_model
from metric_helpers import record, write


def test_prompt_sets_per_dataset():
    synth = prompt_sets("synthhier-shape")  # SynthHier: MERU's and clip-benchmark's ImageNet sets
    assert synth["single"]["templates"] == ["a photo of a {}."]
    assert synth["meru"]["templates"] == meru_prompts()["templates"]["imagenet"]
    assert synth["clip_benchmark"]["templates"] == clip_benchmark_templates()["imagenet1k"]
    assert len(synth["clip_benchmark"]["templates"]) == 80 and "imagenet1k" in synth["clip_benchmark"]["source"]
    cifar = prompt_sets("cifar10")
    assert cifar["meru"]["templates"] == meru_prompts()["templates"]["cifar10"]
    assert cifar["clip_benchmark"]["templates"] == clip_benchmark_templates()["cifar10"]
    assert prompt_sets("resisc45")["clip_benchmark"]["source"] == "clip_benchmark:resisc45"  # vtab/ stripped


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    d = tmp_path_factory.mktemp("ps")
    paths, ck = tiny_sets_and_model(d, "clip")
    assert cli(E, ["--checkpoint", ck, "--evalset", str(paths["zeroshot"]), "--out", str(d / "zs.pt")]) == 0
    assert (
        cli(
            E,
            ["--checkpoint", ck, "--evalset", str(paths["zeroshot"]), "--out", str(d / "plain.pt"), "--no-prompt-sets"],
        )
        == 0
    )
    return d


def test_cache_fields_and_unchanged_existing_fields(caches):
    from meru.models.checkpoints import load_model

    c = EmbeddingCache.load(caches / "zs.pt", "classification")
    plain = EmbeddingCache.load(caches / "plain.pt", "classification")
    assert plain.prompt_sets is None
    assert torch.equal(c.class_text_raw, plain.class_text_raw) and c.templates == plain.templates
    assert set(c.prompt_sets) == {"single", "meru", "clip_benchmark"}
    model = load_model(caches / "model.pt")
    single = class_text_raw(model, c.classnames, ["a photo of a {}."])
    assert torch.allclose(c.prompt_sets["single"].class_text_raw, single, atol=1e-6)
    cb = c.prompt_sets["clip_benchmark"]
    assert cb.class_text_raw.shape == (80, len(mk.CLASSES), c.class_text_raw.shape[-1])


def test_evaluate_prompts_matches_zeroshot_per_set(caches):
    from meru.evaluation.zeroshot import evaluate_zeroshot

    c = EmbeddingCache.load(caches / "zs.pt", "classification")
    res = P.evaluate_prompts(c, n_boot=20)
    assert set(res.details["prompt_sets"]) == {"evalset", "single", "meru", "clip_benchmark"}
    assert res.metrics["top1_evalset"] == pytest.approx(evaluate_zeroshot(c, n_boot=20).metrics["top1"])
    for name in ("single", "clip_benchmark"):
        ps = c.prompt_sets[name]
        alt = dataclasses.replace(c, templates=ps.templates, class_text_raw=ps.class_text_raw)
        assert res.metrics[f"top1_{name}"] == pytest.approx(evaluate_zeroshot(alt, n_boot=20).metrics["top1"])
    tops = [res.metrics[f"top1_{name}"] for name in res.details["prompt_sets"]]
    assert res.metrics["top1_spread"] == pytest.approx(max(tops) - min(tops))
    assert res.details["prompt_sets"]["clip_benchmark"]["n_templates"] == 80
    with pytest.raises(ValueError, match="no prompt_sets"):
        P.evaluate_prompts(EmbeddingCache.load(caches / "plain.pt"))


def _record(kind, seed, dataset, tops):
    return record(
        kind,
        seed,
        "prompts",
        dataset,
        metrics={f"top1_{k}": v for k, v in tops.items()},
        details={"prompt_sets": {k: {"n_templates": 1, "source": k} for k in tops}},
    )


def test_table_known_values(tmp_path):
    recs = [
        _record("meru", 0, "synthhier-shape", {"evalset": 30.0, "single": 20.0, "meru": 25.0, "clip_benchmark": 40.0}),
        _record("meru", 1, "synthhier-shape", {"evalset": 34.0, "single": 22.0, "meru": 25.0, "clip_benchmark": 38.0}),
        _record("meru", 0, "synthhier-family", {"evalset": 60.0, "single": 61.0, "meru": 62.0, "clip_benchmark": 63.0}),
        _record("clip", 0, "synthhier-shape", {"evalset": 50.0, "single": 50.0, "meru": 50.0, "clip_benchmark": 50.0}),
    ]
    for r in recs:
        write(tmp_path / "m", r)
    write(tmp_path / "m", record("meru", 0, "zeroshot", metrics={"top1": 1.0}))  # other tasks are left out
    assert cli(T, ["--metrics", str(tmp_path / "m"), "--out", str(tmp_path / "t")]) == 0
    df = pd.read_csv(tmp_path / "t" / "prompt_sensitivity.csv")
    meru = df[df.model == "meru-tiny"].set_index("templates")
    assert list(meru.index) == ["evalset", "single", "meru", "clip_benchmark", "spread (max - min)"]
    assert meru.loc["evalset", "synthhier-shape"] == pytest.approx(32.0) and meru.loc["evalset", "seeds"] == 2
    assert meru.loc["spread (max - min)", "synthhier-shape"] == pytest.approx(39.0 - 21.0)
    assert meru.loc["spread (max - min)", "synthhier-family"] == pytest.approx(3.0)
    assert meru.loc["spread (max - min)", "spread"] == pytest.approx(18.0)
    clip = df[df.model == "clip-tiny"].set_index("templates")
    assert clip.loc["spread (max - min)", "synthhier-shape"] == 0.0 and pd.isna(clip.loc["single", "synthhier-family"])
    md = (tmp_path / "t" / "prompt_sensitivity.md").read_text()
    assert "spread (max - min)" in md and "18.0" in md


def test_table_without_records_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    assert cli(T, ["--metrics", str(tmp_path / "m"), "--out", str(tmp_path / "t")]) == 2
    assert "no prompt-sensitivity records" in capsys.readouterr().err
    assert not (tmp_path / "t" / "prompt_sensitivity.csv").exists()
