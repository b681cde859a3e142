"""Model names that are not kinds (`variants:` of a workflow config) and the training knobs the study configs turn:
MERU's frozen alpha, EuCLIP's logit-scale floor, the official weight decay on gains and biases."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from meru.config import ConfigError, check_workflow_config, load_config_file, load_train_config, merge_configs
from meru.config import variant_train_section
from meru.losses import build_loss
from meru.models import build_model
from meru.training.train import param_groups, train_step

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = yaml.safe_load((ROOT / "configs" / "schema.yaml").read_text())


def _ablations() -> dict:
    cfg = load_config_file(ROOT / "configs" / "ablations.yaml")
    cfg.pop("base", None)
    return cfg


def test_variant_train_section_names_kind_and_display():
    cfg = _ablations()
    assert variant_train_section(cfg, "meru-noentail") == {
        "model": {"kind": "meru", "name": "meru-noentail", "display": "MERU, no entailment"}
    }
    assert variant_train_section(cfg, "clip") == {"model": {"kind": "clip", "name": "clip", "display": "CLIP"}}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"models": ["meru", "meru-typo"]}, "models.1 = 'meru-typo'"),
        ({"variants": {"meru-x": {"kind": "hyperbolic"}}}, "variants.meru-x.kind"),
        ({"variants": {"clip": {"kind": "meru"}}}, "variants.clip is a model kind's name"),
        ({"variants": {"Meru_X": {"kind": "meru"}}}, "Meru_X"),
    ],
)
def test_bad_variants_are_one_line(change, message):
    cfg = merge_configs(_ablations(), change)
    with pytest.raises(ConfigError) as e:
        check_workflow_config(cfg, SCHEMA, "configs/ablations.yaml")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_study_configs_check_clean():
    for name in ("ablations", "ablations-short", "sizes", "batch"):
        cfg = load_config_file(ROOT / "configs" / f"{name}.yaml")
        cfg.pop("base", None)
        check_workflow_config(cfg, SCHEMA, name)


def test_short_ablation_study_is_the_ablation_study_on_a_shorter_schedule():
    """configs/ablations-short.yaml (the 45-minute version) changes only the schedule (10% warmup), drops the
    attribute zero-shot tasks and writes elsewhere: same models, variants, overrides, seeds and pairing."""
    full, short = _ablations(), load_config_file(ROOT / "configs" / "ablations-short.yaml")
    short.pop("base", None)
    optim = short["train"]["optim"]
    assert optim["total_steps"] < full["train"]["optim"]["total_steps"]
    assert optim["warmup_steps"] == optim["total_steps"] // 10
    assert short["data"]["synthhier"]["attributes"] == [] and full["data"]["synthhier"]["attributes"]
    for key in ("results_dir", "runs_dir", "name"):  # its own runs: full MERU and CLIP are not the default's here
        assert short[key] != full.get(key, "runs"), key
    same = merge_configs(short, {"train": {"optim": full["train"]["optim"]}, "data": full["data"]})
    own = ("results_dir", "runs_dir", "name", "reference")
    assert {k: v for k, v in same.items() if k not in own} == {k: v for k, v in full.items() if k not in own}


def test_dry_run_trains_variant_as_its_kind_with_its_overrides(tmp_path):
    """`meru train --model KIND` with the variant's own train config (its name, display and overrides)."""
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "--configfile", "configs/ablations.yaml"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(x for x in r.stdout.splitlines() if "--out runs/meru-noentail-cpu-conv-s1" in x)
    assert "--model meru " in line and "--config runs/config/train-meru-noentail.yaml" in line


def test_train_config_records_name_and_display(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "train": variant_train_section(_ablations(), "meru-frozenalpha")["model"]
                and {"model": {"name": "meru-frozenalpha", "display": "MERU, frozen alpha", "learn_alpha": False}}
            }
        )
    )
    cfg = load_train_config(path, kind="meru")
    assert (cfg["model"]["name"], cfg["model"]["display"], cfg["model"]["learn_alpha"]) == (
        "meru-frozenalpha",
        "MERU, frozen alpha",
        False,
    )
    plain = load_train_config(None, kind="clip")
    assert (plain["model"]["name"], plain["model"]["display"]) == ("clip", "CLIP")


def _batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    tokens = torch.randint(1, 400, (n, 8), generator=g)
    tokens[:, -1] = 49407  # [EOT]
    return images, tokens


def _step(model, kind, steps=1, **loss_kw):
    opt = torch.optim.AdamW(param_groups(model, 0.2), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    loss = build_loss(kind, 0.2)
    for i in range(steps):
        train_step(model, loss, [_batch(seed=i)], opt, sched)


def test_frozen_alpha_stays_at_init_and_is_rebuilt():
    torch.manual_seed(0)
    model = build_model("meru", "tiny", learn_alpha=False)
    init = model.embed_dim**-0.5
    _step(model, "meru", steps=2)
    assert math.isclose(model.visual_alpha.exp().item(), init, rel_tol=1e-6)
    assert math.isclose(model.textual_alpha.exp().item(), init, rel_tol=1e-6)
    assert model.model_kwargs()["learn_alpha"] is False
    torch.manual_seed(0)
    learned = build_model("meru", "tiny")
    _step(learned, "meru", steps=2)
    assert not math.isclose(learned.visual_alpha.exp().item(), init, rel_tol=1e-6)  # the knob is what froze it


def test_euclip_logit_scale_floor_after_each_step():
    """The reference clamps log s to [0, ln 100] after every optimiser step: step 1 runs at the init e^-1, every
    later step at s >= 1. Without the floor (None) log s stays below 0."""
    torch.manual_seed(0)
    model = build_model("euclip", "tiny")
    assert model.logit_scale.item() == pytest.approx(-1.0)
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append(o["logit_scale"].item()))
    _step(model, "euclip", steps=3)
    assert seen[0] == pytest.approx(math.exp(-1.0)) and min(seen[1:]) >= 1.0 and model.logit_scale.item() >= 0.0
    torch.manual_seed(0)
    old = build_model("euclip", "tiny", logit_scale_floor=None)
    _step(old, "euclip", steps=3)
    assert old.logit_scale.item() < 0.0


def test_euclip_logit_scale_init_is_a_config_option_saved_with_the_model(tmp_path):
    """``model.logit_scale_init`` (the reference's --init-logit-scale) sets log s at step 0, travels in the
    checkpoint's model kwargs, and a config without it keeps the reference's -1."""
    from meru.config import load_train_config
    from meru.kinds import model_options

    cfg = load_train_config(None, "euclip", "tiny", 0, ["model.logit_scale_init=2.0"])
    model = build_model("euclip", "tiny", **model_options("euclip", cfg["model"]))
    assert model.logit_scale.item() == pytest.approx(2.0)
    assert model.model_kwargs()["logit_scale_init"] == 2.0
    assert load_train_config(None, "euclip", "tiny", 0, [])["model"]["logit_scale_init"] == -1.0
    assert build_model("euclip", "tiny", **model.model_kwargs()).logit_scale.item() == pytest.approx(2.0)


def test_decay_gains_biases_official_decays_all_but_the_scalars():
    model = build_model("meru", "tiny")
    named = dict(model.named_parameters())
    ours, official = param_groups(model, 0.2), param_groups(model, 0.2, decay_gains_biases=True)
    scalars = {"logit_scale", "curv", "visual_alpha", "textual_alpha"}
    n_all = sum(p.requires_grad for p in named.values())
    assert len(official[0]["params"]) == n_all - len(scalars) and len(official[1]["params"]) == len(scalars)
    assert len(ours[0]["params"]) == sum(p.ndim >= 2 and p.requires_grad for n, p in named.items() if n not in scalars)
    assert {id(p) for p in official[1]["params"]} == {id(named[n]) for n in scalars}
