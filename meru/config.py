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
import difflib
import math
import os
from typing import Any

import jsonschema
import yaml

from meru.kinds import KINDS, PAPER, trainable_kinds
from meru.kinds.formats import FORMATS, entry_problem, format_of_entry
from meru.io import short_repr

_NUM = {"type": "number"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
#: a model name (a kind or a variant of the workflow config's ``variants:``): lower-case words joined by ``-``
NAME_PATTERN = "^[a-z][a-z0-9]*(-[a-z0-9]+)*$"


def _obj(props: dict, required: tuple = ()) -> dict:
    return {"type": "object", "properties": props, "additionalProperties": False, "required": list(required)}


_KIND_OPTIONS: dict = {key: spec for kind in KINDS.values() for key, spec in kind.options.items()}


TRAIN_SCHEMA: dict = _obj(
    {
        "model": _obj(
            {
                "kind": {"enum": trainable_kinds()},
                # the run's model name (a kind, or a name of the workflow config's `variants:`) and display name
                "name": {"type": "string", "pattern": NAME_PATTERN},
                "display": {"type": "string", "minLength": 1},
                "size": {"type": "string"},
                "entail_weight": {"type": "number", "minimum": 0},
                # each kind's model options (meru.kinds.Kind.options), e.g. MERU's curv_init, learn_curv
                **{key: {k: v for k, v in spec.items() if k != "default"} for key, spec in _KIND_OPTIONS.items()},
            }
        ),
        "data": _obj(
            {
                "train": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]},
                "batch_size": {"type": "integer", "minimum": 1},
                "num_workers": {"type": "integer", "minimum": 0},
                "shuffle_buffer": {"type": "integer", "minimum": 1},
                "augment": _BOOL,
                "sample_captions": _BOOL,
                "subreddit_prefix_prob": {"type": "number", "minimum": 0, "maximum": 1},
                "subreddit_segmenter": {"enum": ["wordlist", "wordsegment"]},  # wordsegment: the official code's
                "scale": {"type": "array", "items": _NUM, "minItems": 2, "maxItems": 2},
                "in_memory": _BOOL,
                "decode_device": {"type": "string", "pattern": "^(auto|worker|cpu|cuda(:[0-9]+)?)$"},
                "max_skipped_fraction": {"type": "number", "minimum": 0, "maximum": 1},
            }
        ),
        "optim": _obj(
            {
                "lr": {"type": "number", "exclusiveMinimum": 0},
                "betas": {
                    "type": "array",
                    "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                    "minItems": 2,
                    "maxItems": 2,
                },
                "weight_decay": {"type": "number", "minimum": 0},
                "decay_gains_biases": _BOOL,
                "eps": {"type": "number", "exclusiveMinimum": 0},
                "warmup_steps": {"type": "integer", "minimum": 0},
                "total_steps": {"type": "integer", "minimum": 1},
                "grad_clip": {"type": ["number", "null"], "exclusiveMinimum": 0},
                "grad_accum": {"type": "integer", "minimum": 1},
            }
        ),
        # fp16 (+ GradScaler) and head: autocast are the official code's (docs/DEVIATIONS.md)
        "precision": _obj({"amp": {"enum": ["auto", "bf16", "fp16", "fp32"]}, "head": {"enum": ["fp32", "autocast"]}}),
        "runtime": _obj(
            {
                "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
                "threads": {"type": ["integer", "null"], "minimum": 1},
                "compile": _BOOL,
                "compact_vocab": _BOOL,
                "grad_checkpointing": _BOOL,
                "checkpoint_every": {"type": "integer", "minimum": 1},
                "log_every": {"type": "integer", "minimum": 1},
                "tensorboard": _BOOL,
                "on_nonfinite": {"enum": ["stop", "skip"]},
                "max_nonfinite_skips": {"type": "integer", "minimum": 0},
                "device": {"type": "string", "pattern": "^(auto|cpu|cuda(:[0-9]+)?)$"},
                "stop_after": {"type": ["integer", "null"], "minimum": 0},
            }
        ),
    }
)

DEFAULTS: dict = {
    "model": {
        "kind": PAPER,
        "size": "cpu-conv",
        "entail_weight": 0.2,
        **{key: spec["default"] for key, spec in _KIND_OPTIONS.items()},
    },
    "data": {
        "train": "data/synthhier/train",
        "batch_size": 2048,
        "num_workers": 4,
        "shuffle_buffer": 4000,
        "augment": True,
        "sample_captions": True,
        "subreddit_prefix_prob": 0.0,
        "subreddit_segmenter": "wordlist",
        "scale": [0.5, 1.0],
        "in_memory": False,
        "decode_device": "auto",
        "max_skipped_fraction": 0.01,  # corrupt samples a run may skip (meru.training.train.check_skipped)
    },
    "optim": {
        "lr": 5.0e-4,
        "betas": [0.9, 0.98],
        "weight_decay": 0.2,
        # false: no decay on norm gains and biases (what the official config says); true: what the official code
        # does (docs/DEVIATIONS.md)
        "decay_gains_biases": False,
        "eps": 1.0e-8,
        "warmup_steps": 4000,
        "total_steps": 120000,
        "grad_clip": None,
        "grad_accum": 1,
    },
    "precision": {"amp": "auto", "head": "fp32"},
    "runtime": {
        "seed": 0,
        "threads": None,
        "compile": False,
        # train on the token-embedding rows the data uses (meru.training.vocab; in-memory data, no subreddit prefix)
        "compact_vocab": False,
        "grad_checkpointing": False,
        "checkpoint_every": 1000,
        "log_every": 50,
        "tensorboard": True,
        "on_nonfinite": "stop",
        "max_nonfinite_skips": 10,
        "device": "auto",
        "stop_after": None,
    },
}


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file, key and value."""


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate mapping keys (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {seen[key] + 1}); YAML would silently keep "
                    "only the last one: merge the two entries",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML file strictly (no duplicate keys); raise :class:`ConfigError` in one line naming the
    file, line and problem (missing file, unreadable, syntax error, duplicate key)."""
    source = str(path)
    try:
        with open(path) as f:
            return yaml.load(f, Loader=_StrictLoader)  # a SafeLoader subclass
    except FileNotFoundError:
        raise ConfigError(f"{source}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{source}: is a directory, not a config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{source}: cannot read config file ({e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        context = getattr(e, "context", None)
        what = f"{problem} ({context})" if context and context not in problem else problem
        raise ConfigError(f"{source}{where}: not valid YAML: {' '.join(str(what).split())}") from None


def config_bases(path: str | os.PathLike, _seen: tuple = ()) -> dict:
    """What the config file at ``path`` extends: ``base: FILE`` (a path relative to ``path``'s folder) names
    a config whose keys lie beneath this file's; bases may have bases. Returns the merged chain without
    ``path``'s own keys (``{}`` without a ``base:``); one-line :class:`ConfigError` for a bad or missing base or
    a cycle. The workflow (``workflow/rules/common.smk``) puts it beneath each ``--configfile``."""
    raw = load_yaml(path)
    if not isinstance(raw, dict) or "base" not in raw:
        return {}
    base = raw["base"]
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: base = {base!r} must name the config file this one extends, e.g. default.yaml")
    base_path = os.path.join(os.path.dirname(os.path.abspath(path)), base)
    seen = (*_seen, os.path.realpath(path))
    if os.path.realpath(base_path) in seen:
        raise ConfigError(f"{path}: base = {base!r} leads back to {base_path}: the bases form a cycle")
    if not os.path.isfile(base_path):
        raise ConfigError(f"{path}: base = {base!r}: {base_path} not found (a path relative to {path}'s folder)")
    parent = load_config_file(base_path, seen)
    if not isinstance(parent, dict):
        raise ConfigError(f"{base_path}: the base of {path} must be a mapping, got {type(parent).__name__}")
    return parent


def load_config_file(path: str | os.PathLike, _seen: tuple = ()) -> Any:
    """:func:`load_yaml` of ``path`` with its ``base:`` chain resolved (:func:`config_bases`): the base's keys
    merged with this file's (:func:`merge_configs`), without the ``base`` key."""
    raw = load_yaml(path)
    if not isinstance(raw, dict) or "base" not in raw:
        return raw
    own = {k: v for k, v in raw.items() if k != "base"}
    return merge_configs(config_bases(path, _seen), own)


def _nonfinite_numbers(obj, path: str = "") -> list[tuple[str, float]]:
    if isinstance(obj, float) and not math.isfinite(obj):
        return [(path, obj)]
    if isinstance(obj, dict):
        return [x for k, v in obj.items() for x in _nonfinite_numbers(v, f"{path}.{_key(k)}" if path else _key(k))]
    if isinstance(obj, list):
        return [x for i, v in enumerate(obj) for x in _nonfinite_numbers(v, f"{path}[{i}]")]
    return []


def _integral_to_int(obj, schema: dict):
    """Integer-typed keys given as ``5.0`` become ``5`` (jsonschema accepts them as integers)."""
    if isinstance(obj, dict) and "properties" in schema:
        return {k: _integral_to_int(v, schema["properties"].get(k, {})) for k, v in obj.items()}
    t = schema.get("type")
    if isinstance(obj, float) and obj.is_integer() and (t == "integer" or (isinstance(t, list) and "integer" in t)):
        return int(obj)
    return obj


def model_sizes() -> dict:
    """``meru.models.registry.MODEL_SIZES`` without importing ``meru.models`` (whose package imports torch and
    open_clip, seconds that a Snakemake plan or a config check should not pay)."""
    import importlib.util
    import sys

    module = sys.modules.get("meru.models.registry") or sys.modules.get("_meru_registry")
    if module is None:
        path = os.path.join(os.path.dirname(__file__), "models", "registry.py")
        spec = importlib.util.spec_from_file_location("_meru_registry", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["_meru_registry"] = module  # dataclasses looks the module up while building the class
        spec.loader.exec_module(module)
    try:
        module._load_env_sizes()  # $MERU_SIZES_FILE's sizes (the workflow sets it from the config's sizes_file)
    except (OSError, ValueError) as e:
        raise ConfigError(f"${module.SIZES_FILE_ENV}: {e}") from None
    return module.MODEL_SIZES


def _cross_field_errors(cfg: dict) -> list[str]:
    """Constraints between keys of a complete config (after defaults)."""
    out = []
    lo, hi = cfg["data"]["scale"]
    if not 0 < lo <= hi <= 1:
        out.append(f"data.scale = {cfg['data']['scale']!r} must satisfy 0 < lo <= hi <= 1")
    o = cfg["optim"]
    if cfg["data"]["batch_size"] % o["grad_accum"]:
        out.append(
            f"data.batch_size = {cfg['data']['batch_size']} is not divisible by optim.grad_accum = {o['grad_accum']}"
        )
    size = cfg["model"]["size"]
    MODEL_SIZES = model_sizes()
    if size not in MODEL_SIZES:
        out.append(
            f"model.size = {_short(size)} is not a registered size{did_you_mean(size, MODEL_SIZES)} (choose one of: "
            f"{', '.join(MODEL_SIZES)}; a size from a YAML sizes file needs MERU_SIZES_FILE=FILE)"
        )
    if o["warmup_steps"] > o["total_steps"]:
        out.append(
            f"optim.warmup_steps = {o['warmup_steps']} exceeds optim.total_steps = {o['total_steps']} (the learning "
            "rate would never finish warming up): lower warmup_steps"
        )
    stop = cfg["runtime"]["stop_after"]
    if stop is not None and stop > o["total_steps"]:
        out.append(
            f"runtime.stop_after = {stop} exceeds optim.total_steps = {o['total_steps']} (training ends at "
            "total_steps): lower stop_after or raise total_steps"
        )
    if cfg["data"]["batch_size"] // o["grad_accum"] < 2:
        out.append(
            f"data.batch_size = {cfg['data']['batch_size']} / optim.grad_accum = {o['grad_accum']} leaves fewer than 2 "
            "pairs per step: the contrastive loss needs negatives (use a batch of at least 2 per step)"
        )
    return out


def merge_configs(base: dict, over: dict) -> dict:
    """``base`` with ``over`` merged in recursively (dicts merged key by key, anything else replaced); copies.
    The one config merge of the package and the workflow (``train:`` + ``train_overrides[kind]``)."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = merge_configs(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _short(value) -> str:
    """How messages echo a config value: its repr, cut to 80 characters (:func:`meru.io.short_repr`)."""
    return short_repr(value, 80)


def _key(key) -> str:
    """A config key as messages show it: as written when it is a plain word, else its repr (cut to 80)."""
    text = str(key)
    return text[:80] if text and text.isprintable() and not any(c.isspace() for c in text) else _short(text)


def did_you_mean(word, choices) -> str:
    """``" (did you mean 'X'?)"`` for the closest of ``choices`` to ``word`` (difflib ratio >= 0.6), else ``""``."""
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _describe(err: jsonschema.ValidationError) -> str:
    """One clause for one schema error: the key, the value (cut short) and what is wrong, with a did-you-mean."""
    key = ".".join(_key(p) for p in err.absolute_path) or "<top level>"
    prefix = "" if key == "<top level>" else key + "."
    v = err.validator
    if v == "additionalProperties":
        allowed = err.schema.get("properties", {})
        extra = [k for k in err.instance if k not in allowed]
        shown = ", ".join(f"{prefix}{_key(k)} = {_short(err.instance[k])}{did_you_mean(k, allowed)}" for k in extra)
        return f"{shown}: unknown key (allowed under {key}: {', '.join(sorted(allowed))})"
    if v == "required":
        missing = [k for k in err.validator_value if not isinstance(err.instance, dict) or k not in err.instance]
        return f"{', '.join(prefix + k for k in missing)}: missing (required under {key})"
    if v == "propertyNames":
        return f"{key}: key {_short(err.instance)} is not allowed{did_you_mean(err.instance, err.validator_value.get('enum', []))}"
    if v == "type":
        want = err.validator_value if isinstance(err.validator_value, str) else " or ".join(err.validator_value)
        article = "an" if want[0] in "aeiou" else "a"
        return f"{key} = {_short(err.instance)} is not {article} {want}"
    if v == "enum":
        return f"{key} = {_short(err.instance)} is not one of {err.validator_value}{did_you_mean(err.instance, err.validator_value)}"
    message = err.message if len(err.message) <= 160 else err.message[:157] + "..."
    if repr(err.instance) in message:
        message = message.replace(repr(err.instance), _short(err.instance))
    return f"{key} = {_short(err.instance)}: {message}"


def validate_train_config(cfg: dict, source: str = "<config>") -> dict:
    """Validate a full or partial train config against ``TRAIN_SCHEMA``; raise ``ConfigError`` naming every bad key."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"{source}: train = {cfg!r} must be a mapping of sections ({', '.join(DEFAULTS)})")
    errors = sorted(
        jsonschema.Draft202012Validator(TRAIN_SCHEMA).iter_errors(cfg), key=lambda e: [str(p) for p in e.absolute_path]
    )
    messages = [_describe(e) for e in errors]
    messages += [f"{k} = {v!r} is not a finite number" for k, v in _nonfinite_numbers(cfg)]
    if not messages and all(isinstance(cfg.get(k), dict) and set(DEFAULTS[k]) <= set(cfg[k]) for k in DEFAULTS):
        messages = _cross_field_errors(cfg)  # complete config: check keys against each other
    if messages:  # one line, every bad key
        raise ConfigError(f"{source}: " + "; ".join(m if m.startswith("<top") else f"train.{m}" for m in messages))
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
        raise ConfigError(
            f"{source} {item!r}: key must be section.name, e.g. optim.lr (sections: {', '.join(DEFAULTS)})"
        )
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    # YAML reads 5e-4 as a string; accept float notation without a dot.
    if isinstance(parsed, str):
        try:
            parsed = (
                float(parsed) if any(c in parsed.lower() for c in "e.") or parsed.lower() in ("inf", "nan") else parsed
            )
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


def load_train_config(
    path: str | os.PathLike | None,
    kind: str | None = None,
    size: str | None = None,
    seed: int | None = None,
    sets: list[str] | None = None,
) -> dict:
    """Resolved train config: defaults <- file (its ``base:`` chain resolved; ``train:`` + ``train_overrides[kind]``
    or bare) <- CLI; validated."""
    source = str(path) if path else "<defaults>"
    raw: dict = {}
    if path:
        raw = load_config_file(path)
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: top level must be a mapping, got {type(raw).__name__}")
        raw = _fix_floats(raw)
    cfg = raw.get("train", {}) if "train" in raw else raw
    if cfg is None or not isinstance(cfg, dict):
        raise ConfigError(f"{source}: 'train' must be a mapping")
    validate_train_config(cfg, source)
    kind = kind or cfg.get("model", {}).get("kind") or DEFAULTS["model"]["kind"]
    if "train" in raw:
        overrides = raw.get("train_overrides") or {}
        if not isinstance(overrides, dict):
            raise ConfigError(
                f"{source}: train_overrides = {overrides!r} must be a mapping of model kind -> train section"
            )
        kinds = TRAIN_SCHEMA["properties"]["model"]["properties"]["kind"]["enum"]
        unknown = [k for k in overrides if k not in kinds]
        if unknown:
            raise ConfigError(
                f"{source}: train_overrides.{str(unknown[0])[:80]}{did_you_mean(unknown[0], kinds)} is not a model "
                f"kind ({', '.join(kinds)}); its settings would never be used"
            )
        over = overrides.get(kind) or {}
        validate_train_config(over, f"{source} (train_overrides.{kind})")
        cfg = merge_configs(cfg, over)
    cfg = merge_configs(DEFAULTS, cfg)
    for item in sets or []:
        keys, value = parse_set(item)
        node = cfg
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                raise ConfigError(f"--set {item!r}: unknown section {k!r} (sections: {', '.join(DEFAULTS)})")
            node = node[k]
        node[keys[-1]] = value
    cfg["model"]["kind"] = kind
    cfg["model"].setdefault("name", kind)
    cfg["model"].setdefault(
        "display", KINDS[kind].display_name if cfg["model"]["name"] == kind else cfg["model"]["name"]
    )
    if size is not None:
        cfg["model"]["size"] = size
    if seed is not None:
        cfg["runtime"]["seed"] = int(seed)
    cfg = _integral_to_int(cfg, TRAIN_SCHEMA)
    validate_train_config(cfg, source + (" with --set overrides" if sets else ""))
    return cfg


# ------------------------------------------------------------------------------------ workflow config
TRAIN_SOURCES = ("synthhier", "redcaps", "cc3m", "cc12m")


def _dataset_names() -> set[str]:
    """Every MERU or clip-benchmark evaluation-set name, also with ``/`` as ``_`` and by its last part."""
    from meru.data.evalsets import dataset_table

    table = dataset_table()
    names = set(table) | {e["clip_benchmark"] for e in table.values() if e["clip_benchmark"]}
    return names | {n.replace("/", "_") for n in names} | {n.split("/")[-1] for n in names}


def _known_dataset(name: str, evalsets_root: str) -> bool:
    """A MERU or clip-benchmark evaluation-set name (``X_train`` = the train split of X), or a local directory."""
    names = _dataset_names()
    base = name.removesuffix("_train")
    return name in names or base in names or os.path.isdir(os.path.join(evalsets_root, name))


def _same_path(a: str, b: str) -> bool:
    return os.path.normpath(a) == os.path.normpath(b)


def with_kinds(schema: dict, variants: dict | None = None) -> dict:
    """``configs/schema.yaml`` with the model kinds filled in from :data:`meru.kinds.KINDS` (the file leaves them
    open, so it never lists kinds): ``models`` items, ``train_overrides`` keys, released checkpoints' kinds, the
    kind of each ``variants:`` entry. A model name is a kind or a name of the config's ``variants``."""
    schema = copy.deepcopy(schema)
    props = schema["properties"]
    names = trainable_kinds() + [v for v in (variants or {}) if v not in KINDS]
    props["models"]["items"] = {"enum": names}
    props["train_overrides"].update(properties={k: {"type": "object"} for k in names}, additionalProperties=False)
    props["variants"]["additionalProperties"]["properties"]["kind"] = {"enum": trainable_kinds()}
    released = props["pretrained"]["properties"]["checkpoints"]["items"]["properties"]
    released["kind"] = {"enum": list(KINDS)}
    released["format"] = {**released.get("format", {}), "enum": list(FORMATS)}
    return schema


def _variants(config: dict) -> dict:
    """The config's ``variants:`` (model name -> ``{kind, display}``); ``{}`` when absent or malformed (the schema
    then names the fault)."""
    variants = config.get("variants")
    return variants if isinstance(variants, dict) else {}


def model_kind(config: dict, name: str) -> str:
    """The kind of model ``name`` of a workflow config: ``name`` itself, or its ``variants.NAME.kind``."""
    return name if name in KINDS else _variants(config)[name]["kind"]


def variant_train_section(config: dict, name: str) -> dict:
    """``model:`` keys that name a run of model ``name`` in its train config: ``kind``, ``name``, ``display``
    (the variant's, or the kind's display name)."""
    kind = model_kind(config, name)
    display = (_variants(config).get(name) or {}).get("display") or KINDS[kind].display_name
    return {"model": {"kind": kind, "name": name, "display": display}}


def _schema_messages(config: dict, schema: dict) -> list[str]:
    """Types and ranges (``configs/schema.yaml``) and finite numbers."""
    errors = sorted(
        jsonschema.Draft202012Validator(with_kinds(schema, _variants(config))).iter_errors(config),
        key=lambda e: [str(p) for p in e.absolute_path],
    )
    return [_describe(e) for e in errors] + [
        f"{k} = {_short(v)} is not a finite number" for k, v in _nonfinite_numbers(config)
    ]


def _size_messages(config: dict, pretrained: list) -> list[str]:
    """Sizes registered (built-in or ``sizes_file``), models listed once, the run lists given."""
    if config.get("sizes_file") and not os.path.isfile(config["sizes_file"]):
        return [f"sizes_file = {_short(config['sizes_file'])}: no such file (a YAML file of extra model sizes)"]
    try:
        sizes_ok = model_sizes()
    except ConfigError as e:
        return [f"sizes_file: {e}"]
    sizes, models = list(config.get("sizes") or []), list(config.get("models") or [])
    out = [
        f"sizes = {s!r} is not a registered size{did_you_mean(s, sizes_ok)} (choose from: {', '.join(sizes_ok)}"
        f"{'' if config.get('sizes_file') else '; or define it in a YAML file named by sizes_file'})"
        for s in sizes
        if s not in sizes_ok
    ]
    out += [
        f"pretrained.checkpoints[{i}].size = {c['size']!r} is not a registered size{did_you_mean(c['size'], sizes_ok)} "
        f"(choose from: {', '.join(sizes_ok)})"
        for i, c in enumerate(pretrained)
        if c["size"] not in sizes_ok and not _names_its_arch(c)
    ]
    out += [
        f"models: {m!r} is listed twice (list each model kind once)" for m in sorted(set(models)) if models.count(m) > 1
    ]
    out += [
        f"variants.{v} is a model kind's name (give the variant its own name)" for v in _variants(config) if v in KINDS
    ]
    out += [
        f"train_overrides.{k} is set but {k!r} is not in models = {models} (train it, or remove its overrides)"
        for k, v in (config.get("train_overrides") or {}).items()
        if v and k not in models and not pretrained
    ]
    if not pretrained and not sizes:
        out.append("sizes: missing or empty (list the model sizes to train, e.g. [small-cpu])")
    if not pretrained and not config.get("seeds"):
        out.append("seeds: missing or empty (list the training seeds, e.g. [0])")
    return out


def _names_its_arch(entry: dict) -> bool:
    """A released checkpoint whose format names its architecture (``arch:``, open_clip training checkpoints): its
    ``size`` is a label (e.g. ``vit-b32``), not a registered size."""
    fmt = FORMATS.get(format_of_entry(entry))
    return bool(fmt and fmt.needs_arch)


def _dataset_messages(ev: dict) -> list[str]:
    """Evaluation-set names known (MERU / clip-benchmark, under ``evalsets_root`` or in ``evaluation.datasets``);
    entries given as paths (with a ``/``) and ``evaluation.datasets`` folders must be existing directories."""
    root = ev.get("evalsets_root", "data/evalsets")
    own = ev.get("datasets") or {}  # name -> folder of a dataset outside evalsets_root
    out = [
        f"evaluation.datasets.{name} = {_short(path)} is not a directory (give the folder of a clip-benchmark "
        "wds-layout set: test/nshards.txt, classnames.txt, ...)"
        for name, path in own.items()
        if not os.path.isdir(path)
    ]

    def problem(key: str, name: str) -> str | None:
        if "/" in name or os.sep in name:  # a folder given by path
            return None if os.path.isdir(name) else f"{key} = {_short(name)} is not a directory (a dataset folder)"
        if name in own or name.removesuffix("_train") in own or _known_dataset(name, root):
            return None
        return (
            f"{key} = {_short(name)} is not a known evaluation set{did_you_mean(name, _dataset_names())} (MERU / "
            f"clip-benchmark name, a directory under evaluation.evalsets_root = {root!r}, or a name in "
            "evaluation.datasets)"
        )

    found = [problem(f"evaluation.{key}", n) for key in ("zeroshot", "retrieval") for n in ev.get(key) or []]
    probes = ev.get("linear_probe") or {}
    if isinstance(probes, list):  # names: each probe trains on the `train` split of its own folder
        probes = {name: {"test": name} for name in probes}
    for probe, entry in probes.items():
        entry = entry or {"test": probe}
        found += [
            problem(f"evaluation.linear_probe.{probe}.{part}", entry[part])
            for part in ("train", "test")
            if part in entry
        ]
    return out + [m for m in found if m] + _probe_val_messages(ev)


def _probe_val_messages(ev: dict) -> list[str]:
    """``evaluation.linear_probe_val: dataset``: every linear probe's training folder has a ``val`` split in wds
    layout (``FOLDER/val/nshards.txt``), and no SynthHier probe runs (its probe set has no val split)."""
    if ev.get("linear_probe_val", "slice") != "dataset":
        return []
    out = []
    if ev.get("synthhier"):
        out.append(
            "evaluation.linear_probe_val = dataset, but the SynthHier linear probe has no val split: use "
            "linear_probe_val: slice, or evaluation.synthhier: false"
        )
    root, own = ev.get("evalsets_root", "data/evalsets"), ev.get("datasets") or {}
    probes = ev.get("linear_probe") or {}
    entries = {p: p for p in probes} if isinstance(probes, list) else {}
    if isinstance(probes, dict):
        entries = {p: (e or {}).get("train") or (e or {}).get("test") or p for p, e in probes.items()}
    for probe, train in entries.items():
        folder = train if ("/" in train or os.sep in train) else own.get(train, os.path.join(root, train))
        if not os.path.isfile(os.path.join(folder, "val", "nshards.txt")):
            out.append(
                f"evaluation.linear_probe_val = dataset, but linear probe {_short(probe)} has no val split: "
                f"{os.path.join(folder, 'val', 'nshards.txt')} not found (add the folder's val split in wds layout, "
                "or use linear_probe_val: slice)"
            )
    return out


def _path_values(config: dict) -> dict[str, str]:
    """Config keys that name files or folders (they become Snakemake input/output paths), key -> value."""
    ev, data = config.get("evaluation") or {}, config.get("data") or {}
    out = {k: config[k] for k in ("results_dir", "runs_dir", "data_dir", "sizes_file", "reference") if config.get(k)}
    out.update({f"evaluation.{k}": ev[k] for k in ("evalsets_root", "wordnet_dir") if ev.get(k)})
    out.update({f"evaluation.datasets.{k}": v for k, v in (ev.get("datasets") or {}).items()})
    for key in ("zeroshot", "retrieval"):
        out.update({f"evaluation.{key}[{i}]": v for i, v in enumerate(ev.get(key) or [])})
    if (data.get("download") or {}).get("annotations"):
        out["data.download.annotations"] = data["download"]["annotations"]
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    train = train.get("data") if isinstance(train.get("data"), dict) else {}
    if train.get("train"):
        out["train.data.train"] = train["train"]
    return {k: v for k, v in out.items() if isinstance(v, str)}


def _plan_messages(config: dict, pretrained: list) -> list[str]:
    """What Snakemake would plan wrongly: paths with wildcard braces, a missing reference directory, an odd SynthHier image size, a batch that does not split over the GPUs."""
    out = [
        f"{key} = {_short(v)} contains '{{' or '}}', which Snakemake reads as a wildcard: rename the path"
        for key, v in _path_values(config).items()
        if "{" in v or "}" in v
    ]
    ref = config.get("reference")
    if ref not in (None, "none", "published") and not os.path.isdir(ref):
        out.append(
            f"reference = {_short(ref)} is not a directory (a reference run such as results/reference/default, "
            "made by `meru reference refresh`; or 'published' / 'none')"
        )
    image_size = ((config.get("data") or {}).get("synthhier") or {}).get("image_size")
    if isinstance(image_size, int) and image_size % 2:
        out.append(f"data.synthhier.image_size = {image_size} must be even (the renderer draws on a 2x2 grid)")
    gpus = ((config.get("resources") or {}).get("train") or {}).get("gpu") or 0
    if gpus > 1 and not pretrained:
        for kind in dict.fromkeys(config.get("models") or []):
            merged = merge_configs(DEFAULTS, _kind_train(config, kind))
            if not isinstance(merged["data"], dict) or not isinstance(merged["optim"], dict):
                continue  # a malformed section: _train_messages names it
            batch, accum = merged["data"].get("batch_size"), merged["optim"].get("grad_accum")
            if isinstance(batch, int) and isinstance(accum, int) and batch % (gpus * accum):
                out.append(
                    f"train.data.batch_size = {batch} is not divisible by resources.train.gpu = {gpus} "
                    f"x optim.grad_accum = {accum} (each GPU takes an equal share)"
                )
    return out


def _kind_train(config: dict, kind: str) -> dict:
    """``train:`` with ``train_overrides[kind]`` merged in."""
    return merge_configs(config.get("train") or {}, (config.get("train_overrides") or {}).get(kind) or {})


def _train_messages(config: dict, sizes: list) -> list[str]:
    """``train:`` valid (checked once), each kind's merged section valid and complete for every size, and
    ``train.data.train`` the dataset the workflow builds, ``{data_dir}/{data.source}[/train]``."""
    src, data_dir = (config.get("data") or {}).get("source"), config.get("data_dir", "data")
    try:
        validate_train_config(config.get("train") or {}, "train")
    except ConfigError as e:
        return [str(e)]
    out = []
    for kind in dict.fromkeys(config["models"]):
        merged = _kind_train(config, kind)
        # a kind without overrides is checked as `train` (one message for all such kinds, not one per kind)
        where = f"train + train_overrides.{kind}" if (config.get("train_overrides") or {}).get(kind) else "train"
        try:
            validate_train_config(merged, where)
            for size in sizes:
                full = merge_configs(DEFAULTS, merged)
                full["model"]["kind"], full["model"]["size"] = model_kind(config, kind), size
                validate_train_config(_integral_to_int(full, TRAIN_SCHEMA), where)
        except ConfigError as e:
            out.append(str(e))
            continue
        path = (merged.get("data") or {}).get("train", DEFAULTS["data"]["train"])
        paths, wanted = (path if isinstance(path, list) else [path]), os.path.join(data_dir, src)
        if not all(_same_path(p, wanted) or _same_path(p, os.path.join(wanted, "train")) for p in paths):
            out.append(
                f"{where}: train.data.train = {_short(path)} is not the dataset this workflow builds "
                f"(data_dir = {data_dir!r}, data.source = {src!r}): set it to {wanted}"
                f"{'/train' if src == 'synthhier' else ''}"
            )
    return out


def check_workflow_config(config: dict, schema: dict, source: str = "workflow config") -> None:
    """Plan-time check of a whole workflow config; raise :class:`ConfigError` in one line naming every bad key.

    Types and ranges come from ``schema`` (``configs/schema.yaml``); on top: sizes registered, evaluation sets
    known, paths Snakemake can plan (:func:`_plan_messages`), the ``train:`` section valid and complete for every
    model kind and size, and ``train.data.train`` the dataset the workflow builds.
    """
    messages = _schema_messages(config, schema)
    if not messages:
        pretrained = (config.get("pretrained") or {}).get("checkpoints") or []
        data = config.get("data") or {}
        messages = _size_messages(config, pretrained) + _dataset_messages(config.get("evaluation") or {})
        messages += _plan_messages(config, pretrained)
        messages += [
            f"pretrained.checkpoints[{i}]: {entry_problem(c)}" for i, c in enumerate(pretrained) if entry_problem(c)
        ]
        if data.get("source") in ("redcaps", "cc3m", "cc12m") and not pretrained and "download" not in data:
            messages.append(
                f"data.source = {data['source']!r} needs data.download.annotations (where the annotation files are)"
            )
        if not pretrained and not messages:
            messages = _train_messages(config, list(config.get("sizes") or []))
    if messages:
        raise ConfigError(f"{source}: " + "; ".join(dict.fromkeys(messages)))


# ------------------------------------------------------------------------------------ tracking section
TRACKING_SCHEMA: dict = _obj(
    {
        "backends": {"type": "array", "items": {"enum": ["tensorboard", "wandb", "mlflow"]}, "uniqueItems": True},
        "dir": {"type": "string", "minLength": 1},
        "project": {"type": "string", "minLength": 1},
    }
)


def load_tracking_config(path: str | os.PathLike | None) -> dict | None:
    """The workflow config's ``tracking:`` section (``meru.training.tracking``), validated, with ``dir``
    defaulting to ``{runs_dir}/tracking`` and ``project`` to ``meru-bench``; None when absent or no path."""
    raw = load_yaml(path) if path else None
    section = raw.get("tracking") if isinstance(raw, dict) else None
    if not section:
        return None
    errors = list(jsonschema.Draft202012Validator(TRACKING_SCHEMA).iter_errors(section))
    if errors:
        raise ConfigError(f"{path}: tracking: {'; '.join(_describe(e) for e in errors)}")
    runs_dir = raw.get("runs_dir") or "runs"
    return {"backends": [], "dir": f"{runs_dir}/tracking", "project": "meru-bench", **section}
