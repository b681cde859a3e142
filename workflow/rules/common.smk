"""Helpers shared by the other .smk files (run labels, evaluation lists, per-family resources)."""


def _check_config():
    """Every key typed and in range, sizes/datasets known, data paths agree: else one line and exit 1."""
    import sys

    import yaml

    from meru.config import ConfigError, check_workflow_config, load_yaml

    sources = [str(f) for f in workflow.overwrite_configfiles] or ["configs/default.yaml"]
    try:
        for f in sources:
            load_yaml(f)  # duplicate keys (plain YAML silently keeps the last one)
        with open(os.path.join(workflow.basedir, "configs", "schema.yaml")) as f:
            check_workflow_config(config, yaml.safe_load(f), " + ".join(sources))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(1)


_check_config()

RESULTS = config.get("results_dir", "results")
RUNS = config.get("runs_dir", "runs")
DATA = config.get("data_dir", "data")
EVAL = config.get("evaluation", {})
SYNTH = config.get("data", {}).get("synthhier", {})
PRETRAINED = config.get("pretrained") or {}
SYNTH_LEVELS = SYNTH.get("levels", ["category", "family", "shape"])  # zero-shot levels, coarse to leaf


def _validate_train_sections():
    """Validate `train:` merged with each model's `train_overrides` (meru.config, when installed)."""
    try:
        from meru.config import validate_train_config
    except ImportError:
        return
    for kind in config["models"]:
        validate_train_config(merged_train_config(kind), f"workflow config train + train_overrides.{kind}")


def _deep_merge(base, over):
    out = dict(base)
    for key, value in (over or {}).items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def merged_train_config(kind):
    """`train:` with `train_overrides[kind]` applied (what `meru train --model kind` sees)."""
    return _deep_merge(config.get("train", {}), (config.get("train_overrides") or {}).get(kind, {}))


def run_labels():
    """Every evaluated model: `{kind}-{size}-s{seed}` (trained) or `{kind}-{size}-released` (pretrained)."""
    if PRETRAINED:
        return [f"{c['kind']}-{c['size']}-released" for c in PRETRAINED["checkpoints"]]
    return [f"{k}-{s}-s{n}" for s in config["sizes"] for k in config["models"] for n in config["seeds"]]


def checkpoint_path(label):
    if label.endswith("-released"):
        return f"{RUNS}/released/{label}.pth"
    return f"{RUNS}/{label}/model.pt"


def synth_evals():
    """(metric name, task) for every SynthHier evaluation."""
    if not EVAL.get("synthhier", False):
        return []
    out = [f"zeroshot-synthhier-{lvl}" for lvl in SYNTH_LEVELS]
    out += ["retrieval-synthhier", "linear-probe-synthhier", "structure-synthhier", "traversal-synthhier"]
    return out


def real_evals():
    out = [f"zeroshot-{d}" for d in EVAL.get("zeroshot", [])]
    out += [f"retrieval-{d}" for d in EVAL.get("retrieval", [])]
    out += [f"linear-probe-{d}" for d in EVAL.get("linear_probe", [])]
    return out


def metric_files():
    return [f"{RESULTS}/metrics/{label}/{name}.json" for label in run_labels() for name in synth_evals() + real_evals()]


def res(section, key, default=None):
    """Per-rule-family resource setting from `resources:` in the config."""
    return (config.get("resources", {}).get(section) or {}).get(key, default)


TABLES = ["zeroshot", "retrieval", "hierarchy", "linear_probe", "structure", "reference"]
PLOTS = ["zeroshot_bars", "scaling", "root_distance_hist", "depth_vs_distance", "traversal", "training_curves"]


def all_targets():
    out = [f"{RESULTS}/tables/{t}.{ext}" for t in TABLES for ext in ("csv", "md", "tex")]
    out += [f"{RESULTS}/plots/{p}.png" for p in PLOTS]
    out += [f"{RESULTS}/PROVENANCE.md"]
    if config["data"]["source"] == "synthhier":
        out += [f"{RESULTS}/data/contact_sheet.png"]
    return out




def train_data_input(wildcards):
    source = config["data"]["source"]
    return f"{DATA}/{source}"


ER = EVAL.get("evalsets_root", "data/evalsets")


def evalset_source(name):
    """(input directory, evaluation-set path for `meru embed --evalset`) of an eval-set name."""
    if name == "synthhier-retrieval":
        return f"{DATA}/synthhier", f"{DATA}/synthhier/eval/retrieval"
    if name == "synthhier-probe":
        return f"{DATA}/synthhier-probe", f"{DATA}/synthhier-probe/eval/zeroshot_shape"
    if name.startswith("synthhier-"):
        return f"{DATA}/synthhier", f"{DATA}/synthhier/eval/zeroshot_{name[len('synthhier-'):]}"
    return f"{ER}/{name}", f"{ER}/{name}"


def probe_sets(name):
    """(train eval set, test eval set) of a linear-probe evaluation."""
    if name == "synthhier":
        return "synthhier-probe", leaf_set()
    entry = EVAL["linear_probe"][name]
    return entry["train"], entry["test"]


def synth_embedding_sets():
    """Names of every SynthHier embedding cache of a run (rule embed_synthhier writes them together)."""
    if not EVAL.get("synthhier", False):
        return []
    return [f"synthhier-{lvl}" for lvl in SYNTH_LEVELS] + ["synthhier-retrieval", "synthhier-probe", "textpool-synthhier"]


def synth_embedding_flag(name):
    """`meru embed` source flag of one SynthHier cache, as an argument list (quoted one by one in the shell)."""
    if name == "textpool-synthhier":
        return ["--text-pool", f"{DATA}/synthhier/eval/captions.jsonl"]
    return ["--evalset", evalset_source(name)[1]]


def leaf_set():
    return f"synthhier-{SYNTH_LEVELS[-1]}"


def emb(label, name):
    return f"{RESULTS}/embeddings/{label}/{name}.pt"


def zeroshot_inputs(w):
    out = {"emb": emb(w.label, w.name)}
    if w.name == leaf_set():
        out["data"] = f"{DATA}/synthhier"
    elif w.name == "imagenet" and EVAL.get("imagenet_hierarchy", False):
        out["tree"] = f"{DATA}/imagenet_tree.txt"
    return out


def zeroshot_tree_args(w, input):
    """`--tree ...` arguments as a list (quoted one by one in the shell)."""
    if w.name == leaf_set():
        return ["--tree", f"{DATA}/synthhier/taxonomy.txt", "--tree-names", f"{DATA}/synthhier/taxonomy_names.json"]
    if "tree" in input.keys():
        return ["--tree", input.tree]
    return []


def seed_of(label):
    return label.rsplit("-s", 1)[1] if not label.endswith("-released") else "0"


def training_logs():
    """What the training-curve plot waits for: each run's model.pt (its log.jsonl is complete then). log.jsonl
    is not a declared output, so Snakemake never deletes the history of a failed or killed run."""
    if PRETRAINED:
        return []
    return [f"{RUNS}/{label}/model.pt" for label in run_labels()]



def released(label):
    for c in PRETRAINED.get("checkpoints", []):
        if f"{c['kind']}-{c['size']}-released" == label:
            return c
    raise ValueError(f"no pretrained checkpoint for {label!r} in config 'pretrained.checkpoints'")


_validate_train_sections()
