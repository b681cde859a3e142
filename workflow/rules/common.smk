"""Helpers shared by the other .smk files (run labels, evaluation lists, per-family resources)."""

from pathlib import Path

RESULTS = config.get("results_dir", "results")
RUNS = config.get("runs_dir", "runs")
DATA = config.get("data_dir", "data")
EVAL = config.get("evaluation", {})
SYNTH = config.get("data", {}).get("synthhier", {})
PRETRAINED = config.get("pretrained") or {}
# what `meru reproduce` compares the run with: a reference-run directory, "published" or none (docs/WORKFLOW.md)
REFERENCE = config.get("reference") or "none"
# the training data of this run's models ("redcaps" for released checkpoints without a `data:` entry)
TRAINING_DATA = "redcaps" if PRETRAINED else config["data"]["source"]
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
        return [released_label(c) for c in PRETRAINED["checkpoints"]]
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


TABLES = ["zeroshot", "retrieval", "hierarchy", "linear_probe", "structure"]
FINAL_TABLES = ["claims", "reproduction"]  # meru claims / meru reproduce: csv + md
PLOTS = ["zeroshot_bars", "scaling", "root_distance_hist", "depth_vs_distance", "traversal", "training_curves"]


def all_targets():
    out = [f"{RESULTS}/tables/{t}.{ext}" for t in TABLES for ext in ("csv", "md", "tex")]
    out += [f"{RESULTS}/plots/{p}.png" for p in PLOTS]
    out += [f"{RESULTS}/tables/{t}.{ext}" for t in FINAL_TABLES for ext in ("csv", "md")]
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
    """`meru embed` source flag of one SynthHier cache."""
    if name == "textpool-synthhier":
        return f"--text-pool {DATA}/synthhier/eval/captions.jsonl"
    return f"--evalset {evalset_source(name)[1]}"


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
    if w.name == leaf_set():
        return f"--tree {DATA}/synthhier/taxonomy.txt --tree-names {DATA}/synthhier/taxonomy_names.json"
    if "tree" in input.keys():
        return f"--tree {input.tree}"
    return ""


def seed_of(label):
    return label.rsplit("-s", 1)[1] if not label.endswith("-released") else "0"


def training_logs():
    if PRETRAINED:
        return []
    return [f"{RUNS}/{label}/log.jsonl" for label in run_labels()]



def reference_inputs():
    """Files the reproduction table depends on: the reference run's metric JSON or the published-values CSV
    (so refreshing the reference re-runs `reproduction`); nothing when there is no reference or it is missing
    (`meru reproduce` then says so)."""
    if REFERENCE == "none":
        return []
    if REFERENCE == "published":
        return ["meru/resources/reference_values.csv"] if os.path.exists("meru/resources/reference_values.csv") else []
    return sorted(str(p) for p in Path(REFERENCE).glob("metrics/*/*.json"))


def released_label(c):
    """`{kind}-{size}-released` (MERU's RedCaps checkpoints) or `{kind}-{size}-{data}-released` (as
    meru.reporting.reproduction.released_label; records of the latter carry size `{size}-{data}`)."""
    data = c.get("data", "redcaps")
    return f"{c['kind']}-{c['size']}-released" if data == "redcaps" else f"{c['kind']}-{c['size']}-{data}-released"


def released(label):
    for c in PRETRAINED.get("checkpoints", []):
        if released_label(c) == label:
            return c
    raise ValueError(f"no pretrained checkpoint for {label!r} in config 'pretrained.checkpoints'")


_validate_train_sections()
