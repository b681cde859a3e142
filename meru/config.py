"""Training configuration: one YAML schema (``TRAIN_SCHEMA``), validated with jsonschema.

Defaults are the paper recipe (Desai et al. 2023, official ``meru`` configs): AdamW lr 5e-4,
betas (0.9, 0.98), weight decay 0.2, 4000 linear warmup steps then half-cosine decay to zero over
120k steps, global batch 2048, entailment weight 0.2, curvature init 1.0 (learned). ``model.entail_weight``
weights the entailment-cone loss of every kind with cones (MERU, EuCLIP; CLIP has none and ignores it);
``curv_init``/``learn_curv`` apply to MERU only.

``load_train_config(path, kind, size, seed, sets)`` accepts a bare train config or a workflow config
(its ``train:`` section, then ``train_overrides[kind]``), applies ``--model/--size/--seed/--set``,
fills defaults, validates, and returns a plain dict.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import jsonschema
import yaml

_NUM = {"type": "number"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}


def _obj(props: dict, required: tuple = ()) -> dict:
    return {"type": "object", "properties": props, "additionalProperties": False, "required": list(required)}


TRAIN_SCHEMA: dict = _obj({
    "model": _obj({
        "kind": {"enum": ["meru", "clip", "euclip"]},
        "size": {"type": "string"},
        "entail_weight": {"type": "number", "minimum": 0},
        "curv_init": {"type": "number", "exclusiveMinimum": 0},
        "learn_curv": _BOOL,
    }),
    "data": _obj({
        "train": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]},
        "batch_size": {"type": "integer", "minimum": 1},
        "num_workers": {"type": "integer", "minimum": 0},
        "shuffle_buffer": {"type": "integer", "minimum": 1},
        "augment": _BOOL,
        "sample_captions": _BOOL,
        "subreddit_prefix_prob": {"type": "number", "minimum": 0, "maximum": 1},
        "scale": {"type": "array", "items": _NUM, "minItems": 2, "maxItems": 2},
    }),
    "optim": _obj({
        "lr": {"type": "number", "exclusiveMinimum": 0},
        "betas": {"type": "array", "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1}, "minItems": 2, "maxItems": 2},
        "weight_decay": {"type": "number", "minimum": 0},
        "eps": {"type": "number", "exclusiveMinimum": 0},
        "warmup_steps": {"type": "integer", "minimum": 0},
        "total_steps": {"type": "integer", "minimum": 1},
        "grad_clip": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "grad_accum": {"type": "integer", "minimum": 1},
    }),
    "precision": _obj({"amp": {"enum": ["auto", "bf16", "fp32"]}}),
    "runtime": _obj({
        "seed": _INT,
        "threads": {"type": ["integer", "null"], "minimum": 1},
        "compile": _BOOL,
        "grad_checkpointing": _BOOL,
        "checkpoint_every": {"type": "integer", "minimum": 1},
        "log_every": {"type": "integer", "minimum": 1},
        "tensorboard": _BOOL,
        "on_nonfinite": {"enum": ["stop", "skip"]},
        "max_nonfinite_skips": {"type": "integer", "minimum": 0},
        "device": {"type": "string", "pattern": "^(auto|cpu|cuda(:[0-9]+)?)$"},
        "stop_after": {"type": ["integer", "null"], "minimum": 0},
    }),
})

DEFAULTS: dict = {
    "model": {"kind": "meru", "size": "small-cpu", "entail_weight": 0.2, "curv_init": 1.0, "learn_curv": True},
    "data": {"train": "data/synthhier/train", "batch_size": 2048, "num_workers": 4, "shuffle_buffer": 4000,
             "augment": True, "sample_captions": True, "subreddit_prefix_prob": 0.0, "scale": [0.5, 1.0]},
    "optim": {"lr": 5.0e-4, "betas": [0.9, 0.98], "weight_decay": 0.2, "eps": 1.0e-8, "warmup_steps": 4000,
              "total_steps": 120000, "grad_clip": None, "grad_accum": 1},
    "precision": {"amp": "auto"},
    "runtime": {"seed": 0, "threads": None, "compile": False, "grad_checkpointing": False, "checkpoint_every": 1000,
                "log_every": 50, "tensorboard": True, "on_nonfinite": "stop", "max_nonfinite_skips": 10,
                "device": "auto", "stop_after": None},
}


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file, key and value."""


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _describe(err: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    v = err.validator
    if v == "additionalProperties":
        allowed = err.schema.get("properties", {})
        extra = [k for k in err.instance if k not in allowed]
        prefix = "" if key == "<top level>" else key + "."
        return (f"{', '.join(prefix + k for k in extra)}: unknown key (allowed under {key}: {', '.join(sorted(allowed))})")
    if v == "type":
        want = err.validator_value if isinstance(err.validator_value, str) else " or ".join(err.validator_value)
        article = "an" if want[0] in "aeiou" else "a"
        return f"{key} = {err.instance!r} is not {article} {want}"
    if v == "enum":
        return f"{key} = {err.instance!r} is not one of {err.validator_value}"
    return f"{key} = {err.instance!r}: {err.message}"


def validate_train_config(cfg: dict, source: str = "<config>") -> dict:
    """Validate a full or partial train config against ``TRAIN_SCHEMA``; raise ``ConfigError`` naming every bad key."""
    errors = sorted(jsonschema.Draft202012Validator(TRAIN_SCHEMA).iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("\n".join(f"{source}: train.{_describe(e)}" if e.absolute_path else f"{source}: {_describe(e)}"
                                    for e in errors))
    return cfg


def parse_set(item: str, source: str = "--set") -> tuple[list[str], Any]:
    """``"optim.lr=1e-3"`` -> (["optim", "lr"], 0.001); the value is parsed as YAML (numbers, bools, null, lists)."""
    if "=" not in item:
        raise ConfigError(f"{source} {item!r}: expected key.sub=value, e.g. optim.lr=1e-3")
    key, value = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if path and path[0] == "train":
        path = path[1:]
    if len(path) < 2:
        raise ConfigError(f"{source} {item!r}: key must be section.name, e.g. optim.lr (sections: {', '.join(DEFAULTS)})")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    # YAML reads 5e-4 as a string; accept float notation without a dot.
    if isinstance(parsed, str):
        try:
            parsed = float(parsed) if any(c in parsed.lower() for c in "e.") or parsed.lower() in ("inf", "nan") else parsed
        except ValueError:
            pass
    return path, parsed


def _fix_floats(obj):
    """YAML 1.1 reads ``5e-4`` (no dot) as a string; convert such strings to floats."""
    if isinstance(obj, dict):
        return {k: _fix_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fix_floats(v) for v in obj]
    if isinstance(obj, str):
        try:
            if "e" in obj.lower() and not obj.lower().startswith(("e", "-e")):
                return float(obj)
        except ValueError:
            return obj
    return obj


def load_train_config(path: str | os.PathLike | None, kind: str | None = None, size: str | None = None,
                      seed: int | None = None, sets: list[str] | None = None) -> dict:
    """Resolved train config: defaults <- file (``train:`` + ``train_overrides[kind]`` or bare) <- CLI; validated."""
    source = str(path) if path else "<defaults>"
    raw: dict = {}
    if path:
        try:
            with open(path) as f:
                raw = yaml.safe_load(f) or {}
        except FileNotFoundError:
            raise ConfigError(f"{source}: config file not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: top level must be a mapping, got {type(raw).__name__}")
        raw = _fix_floats(raw)
    cfg = raw.get("train", {}) if "train" in raw else raw
    if cfg is None or not isinstance(cfg, dict):
        raise ConfigError(f"{source}: 'train' must be a mapping")
    validate_train_config(cfg, source)
    kind = kind or cfg.get("model", {}).get("kind") or DEFAULTS["model"]["kind"]
    if "train" in raw:
        over = (raw.get("train_overrides") or {}).get(kind) or {}
        validate_train_config(over, f"{source} (train_overrides.{kind})")
        cfg = _merge(cfg, over)
    cfg = _merge(DEFAULTS, cfg)
    for item in sets or []:
        keys, value = parse_set(item)
        node = cfg
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                raise ConfigError(f"--set {item!r}: unknown section {k!r} (sections: {', '.join(DEFAULTS)})")
            node = node[k]
        node[keys[-1]] = value
    cfg["model"]["kind"] = kind
    if size is not None:
        cfg["model"]["size"] = size
    if seed is not None:
        cfg["runtime"]["seed"] = int(seed)
    validate_train_config(cfg, source + (" with --set overrides" if sets else ""))
    return cfg
