"""Train-config schema: defaults, workflow configs with per-model overrides, --set, clear errors."""

import pytest
import yaml

from meru.config import DEFAULTS, TRAIN_SCHEMA, ConfigError, load_train_config, validate_train_config


def _write(tmp_path, obj, name="c.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(obj) if not isinstance(obj, str) else obj)
    return p


def test_defaults_are_paper_recipe():
    cfg = load_train_config(None, "meru", "tiny", 3)
    assert cfg["optim"]["lr"] == 5e-4 and cfg["optim"]["betas"] == [0.9, 0.98]
    assert cfg["optim"]["weight_decay"] == 0.2 and cfg["optim"]["warmup_steps"] == 4000
    assert cfg["data"]["batch_size"] == 2048 and cfg["model"]["entail_weight"] == 0.2
    assert cfg["model"]["size"] == "tiny" and cfg["runtime"]["seed"] == 3
    assert set(TRAIN_SCHEMA["properties"]) == set(DEFAULTS)


def test_workflow_config_with_overrides_and_sets(tmp_path):
    p = _write(
        tmp_path,
        "train:\n  optim: {lr: 1e-3, warmup_steps: 10, total_steps: 100}\n  data: {batch_size: 64}\n"
        "train_overrides:\n  clip: {optim: {lr: 2e-3}}\n  meru: {model: {curv_init: 0.5}}\nother: 1\n",
    )
    clip = load_train_config(p, "clip", "tiny", 0)
    meru = load_train_config(p, "meru", "tiny", 0, ["optim.warmup_steps=7", "train.runtime.compile=true"])
    assert clip["optim"]["lr"] == 2e-3 and clip["model"]["kind"] == "clip"
    assert meru["optim"]["lr"] == 1e-3 and meru["model"]["curv_init"] == 0.5
    assert meru["optim"]["warmup_steps"] == 7 and meru["runtime"]["compile"] is True
    assert meru["optim"]["total_steps"] == 100 and meru["data"]["batch_size"] == 64
    assert meru["optim"]["eps"] == 1e-8  # default kept


def test_error_names_key_and_value(tmp_path):
    p = _write(tmp_path, {"optim": {"lr": "abc"}}, "x.yaml")
    with pytest.raises(ConfigError) as e:
        load_train_config(p, "meru", "tiny", 0)
    assert "x.yaml" in str(e.value) and "optim.lr = 'abc' is not a number" in str(e.value)
    with pytest.raises(ConfigError, match="optim.lrr"):
        validate_train_config({"optim": {"lrr": 1}}, "y.yaml")
    with pytest.raises(ConfigError, match=r"runtime.on_nonfinite = 'ignore'"):
        load_train_config(None, "meru", "tiny", 0, ["runtime.on_nonfinite=ignore"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_train_config(None, "meru", "tiny", 0, ["optim"])
