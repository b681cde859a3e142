"""Helpers shared by the other .smk files (run labels, evaluation lists, per-family resources)."""

from pathlib import Path

def _compose_bases():
    """`base: FILE` in a --configfile (e.g. configs/ablation.yaml): that file's base chain goes beneath it
    (meru.config.config_bases, as `meru train --config` reads it); the `base` key itself is dropped."""
    import sys

    from meru.config import ConfigError, config_bases, merge_configs

    try:
        bases = {}
        for f in workflow.overwrite_configfiles:
            bases = merge_configs(bases, config_bases(f))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(1)
    composed = merge_configs(merge_configs(config, bases), workflow.config_settings.overwrite_config)
    composed.pop("base", None)
    config.clear()
    config.update(composed)


_compose_bases()

if config.get("sizes_file"):  # extra model sizes (YAML, see meru.models.registry); every `meru` command reads it
    os.environ.update({"MERU_SIZES_FILE": os.path.abspath(config["sizes_file"])})

def _check_config():
    """Every key typed and in range, sizes/datasets known, data paths agree: else one line and exit 1."""
    import sys

    import yaml

    from meru.config import ConfigError, check_workflow_config, load_yaml

    sources = [str(f) for f in workflow.overwrite_configfiles] or ["configs/default.yaml"]
    try:
        given = [load_yaml(f) for f in sources]  # duplicate keys (plain YAML silently keeps the last one)
        if workflow.overwrite_configfiles and not any(isinstance(g, dict) and "name" in g for g in given):
            # merged over configs/default.yaml, the run would silently take the default run's name
            raise ConfigError(f"{' + '.join(sources)}: name: missing (every --configfile run needs its own name: X)")
        with open(os.path.join(workflow.basedir, "configs", "schema.yaml")) as f:
            check_workflow_config(config, yaml.safe_load(f), " + ".join(sources))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(1)


_check_config()

# the workflow config file (the last --configfile); `meru train` / `meru track` read its `tracking:` section
CONFIG_FILE = ([str(f) for f in workflow.overwrite_configfiles] or ["configs/default.yaml"])[-1]
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
# zero-shot attribute tasks (eval/zeroshot_{attr}: colour, count, size, texture); none unless the config asks
SYNTH_ATTRIBUTES = SYNTH.get("attributes", [])


def _check_attribute_sets():
    """An existing {DATA}/synthhier made before the attribute sets cannot serve `data.synthhier.attributes`:
    one line naming the fix and exit 1, so no attribute column is ever silently missing."""
    import sys

    if not (SYNTH_ATTRIBUTES and EVAL.get("synthhier", False) and os.path.isdir(f"{DATA}/synthhier")):
        return
    from meru.data.synthhier import attribute_sets_error

    message = attribute_sets_error(f"{DATA}/synthhier", SYNTH_ATTRIBUTES)
    if message:
        print(f"config error: {message}", file=sys.stderr)
        sys.exit(1)


_check_attribute_sets()


def _validate_train_sections():
    """Validate `train:` merged with each model's `train_overrides` (meru.config, when installed)."""
    try:
        from meru.config import validate_train_config
    except ImportError:
        return
    for name in config["models"]:
        validate_train_config(merged_train_config(name), f"workflow config train + train_overrides.{name}")


def merged_train_config(name):
    """`train:` with `train_overrides[name]` applied and the model's kind, name and display name set (what
    `meru train --model KIND` sees for model `name`: a kind, or a name of `variants:`)."""
    from meru.config import merge_configs, variant_train_section

    merged = merge_configs(config.get("train", {}), (config.get("train_overrides") or {}).get(name, {}))
    return merge_configs(merged, variant_train_section(config, name))


def kind_of(name):
    """The kind of model `name` (a kind, or a name of `variants:`)."""
    from meru.config import model_kind

    return model_kind(config, name)


def runs():
    """Every evaluated model by label: `{"kind", "size", "seed", "released"}` (meru.reporting.outputs: trained
    runs `{kind}-{size}-s{seed}`, released checkpoints `{kind}-{size}[-{data}]-released`)."""
    if PRETRAINED:
        out = [released_run(c) for c in PRETRAINED["checkpoints"]]
        out = [r for r in out if not unavailable(r["label"])]
    else:
        out = [trained_run(k, s, n) for s in config["sizes"] for k in config["models"] for n in config["seeds"]]
    return {r["label"]: r for r in out}


def unavailable_marker(label):
    """Written by a download that failed under `pretrained.unavailable: skip` (one line: URL and why)."""
    return f"{RUNS}/released/{label}.unavailable"


def unavailable(label):
    """A released checkpoint left out of the plan: `pretrained.unavailable: skip` and its download failed."""
    return PRETRAINED.get("unavailable") == "skip" and os.path.exists(unavailable_marker(label))


def run_labels():
    return list(runs())


def checkpoint_path(label):
    if label.endswith("-released"):
        return f"{RUNS}/released/{label}.pth"
    return f"{RUNS}/{label}/model.pt"


def synth_evals():
    """(metric name, task) for every SynthHier evaluation."""
    if not EVAL.get("synthhier", False):
        return []
    out = [f"zeroshot-synthhier-{name}" for name in SYNTH_LEVELS + SYNTH_ATTRIBUTES]
    out += ["retrieval-synthhier", "linear-probe-synthhier", "structure-synthhier", "traversal-synthhier"]
    return out


def real_evals():
    out = [f"zeroshot-{_dataset_name(d)}" for d in EVAL.get("zeroshot", [])]
    out += [f"retrieval-{_dataset_name(d)}" for d in EVAL.get("retrieval", [])]
    out += [f"linear-probe-{d}" for d in linear_probe_names()]
    out += [f"caption-choice-{d}" for d in caption_choice_names()]
    return out


def caption_choice_names():
    """Eval-set names of `evaluation.caption_choice` (`sugar_crepe/add_att` -> `sugar_crepe_add_att`: the folder
    under evalsets_root and the records' dataset name; meru.data.caption_choice)."""
    from meru.data.caption_choice import set_name

    return [set_name(entry) for entry in EVAL.get("caption_choice") or []]


def evalset_prepare_args(dataset):
    """`meru evalsets prepare` flags of an eval set beyond --dataset/--root: a caption-choice set's released files
    come from `evaluation.caption_choice_sources.{sugar_crepe,aro}` (`--source DIR`), where they lie as their
    authors release them (meru.data.caption_choice)."""
    from meru.data.caption_choice import is_caption_choice_set, split_set

    if not is_caption_choice_set(dataset):
        return []
    source = (EVAL.get("caption_choice_sources") or {}).get(split_set(dataset)[0])
    return ["--source", source] if source else []


def metric_files():
    return [f"{RESULTS}/metrics/{label}/{name}.json" for label in run_labels() for name in synth_evals() + real_evals()]


def zeroshot_datasets():
    """Zero-shot metric names (`synthhier-{level}`, real dataset names) that get a prompt-sensitivity record
    (not the attribute tasks: their class names are whole phrases, which the other template sets do not fit)."""
    out = [f"synthhier-{lvl}" for lvl in SYNTH_LEVELS] if EVAL.get("synthhier", False) else []
    return out + list(EVAL.get("zeroshot", []))


def prompt_files():
    """`meru evaluate --task prompts` records: one per run and zero-shot dataset."""
    return [f"{RESULTS}/metrics/{label}/prompts-{name}.json" for label in run_labels() for name in zeroshot_datasets()]


def hierarcaps_files():
    """HierarCaps metric records (`evaluation.hierarcaps: true`)."""
    if not EVAL.get("hierarcaps", False):
        return []
    return [f"{RESULTS}/metrics/{label}/hierarcaps-coco.json" for label in run_labels()]


def res(section, key, default=None):
    """Per-rule-family resource setting from `resources:` in the config."""
    return (config.get("resources", {}).get(section) or {}).get(key, default)


SLURM_KEYS = ("slurm_partition", "slurm_account", "slurm_extra")


def slurm_res(section):
    """SLURM settings of a rule family (`resources.<section>.slurm_partition/slurm_account/slurm_extra`), only
    those the config sets, so that the profile's / command line's `--default-resources` apply otherwise."""
    return {k: res(section, k) for k in SLURM_KEYS if res(section, k)}


def _check_slurm_extra():
    """`slurm_extra` must not repeat what the SLURM plugin sets itself (GPUs come from `gpu: N`, CPUs from
    `threads`, memory from `mem_mb`, time from `runtime`): the pinned plugin rejects such jobs at submission."""
    try:
        from snakemake_executor_plugin_slurm.validation import get_forbidden_slurm_options
    except ImportError:
        return
    import re

    for section, values in (config.get("resources") or {}).items():
        extra = (values or {}).get("slurm_extra") or ""
        for pattern, what in get_forbidden_slurm_options().items():
            if re.search(pattern, extra):
                raise ValueError(
                    f"config resources.{section}.slurm_extra={extra!r} sets the {what}, which the SLURM executor "
                    "sets itself; use resources.{section}.gpu / threads / mem_mb / runtime / slurm_partition / "
                    "slurm_account instead".replace("{section}", section))


_check_slurm_extra()


from meru.reporting.outputs import FINAL_TABLES, PLOTS as ALL_PLOTS, TABLES  # names of the reporting outputs
from meru.reporting.outputs import released_run, trained_run  # run labels
from meru.kinds.formats import ENTRY_KEYS  # what a released checkpoint's entry says about its file
from meru.reporting.outputs import DATASET_CARD, MODEL_CARD, VERDICT_PAGES  # report pages and cards
from meru.reporting.outputs import LEADERBOARD_FILES  # `meru leaderboard` (configs with a `leaderboard:` section)

TABLE_FILES = [f"{t}{s}" for t in TABLES for s in (".csv", ".md", ".tex", "_stats.csv")]


def run_sizes():
    """Model sizes evaluated (pretrained configs count their checkpoints)."""
    return sorted({r["size"] for r in runs().values()})


# `meru plots` figures (PDF + PNG each); `scaling` only with two or more sizes
PLOTS = [p for p in ALL_PLOTS if p != "scaling" or len(run_sizes()) >= 2]


def provenance_data():
    """Data directories whose manifest.json files PROVENANCE.md hashes (training data and SynthHier sets)."""
    out = [f"{DATA}/synthhier", f"{DATA}/synthhier-probe"] if EVAL.get("synthhier", False) else []
    if not PRETRAINED and f"{DATA}/{config['data']['source']}" not in out:
        out.append(f"{DATA}/{config['data']['source']}")
    return out


STUDY = config.get("study") or {}  # a study config's `study: {type, baseline}` (workflow/rules/study.smk)


def study_targets():
    """RESULTS/study/ files of the config's study (none without `study:`)."""
    from meru.reporting.outputs import study_outputs

    return [f"{RESULTS}/study/{f}" for f in study_outputs(STUDY["type"])] if STUDY else []


def all_targets():
    out = [f"{RESULTS}/tables/{f}" for f in TABLE_FILES] + [f"{RESULTS}/tables/{t}.html" for t in TABLES]
    out += [f"{RESULTS}/plots/{p}.{ext}" for p in PLOTS for ext in ("pdf", "png")]
    out += [f"{RESULTS}/tables/{t}.{ext}" for t in FINAL_TABLES for ext in ("csv", "md")]
    out += [f"{RESULTS}/PROVENANCE.md"]
    if prompt_files():
        out += [f"{RESULTS}/tables/prompt_sensitivity.{ext}" for ext in ("csv", "md")]
    out += hierarcaps_files()
    if config["data"]["source"] == "synthhier" and (not PRETRAINED or EVAL.get("synthhier", False)):
        out += [f"{RESULTS}/data/contact_sheet.png"]  # not for an evaluation-only run that needs no SynthHier
    if (config.get("tracking") or {}).get("backends"):
        out += [f"{RESULTS}/tracking.tsv"]
    if "leaderboard" in config:
        out += [f"{RESULTS}/tables/{f}" for f in LEADERBOARD_FILES]
    return out + report_targets() + study_targets()




def train_data_input(wildcards):
    source = config["data"]["source"]
    return f"{DATA}/{source}"


ER = EVAL.get("evalsets_root", "data/evalsets")


def _dataset_name(entry):
    """Name of an evaluation entry: a dataset name as given, or the folder name of a path entry."""
    return os.path.basename(os.path.normpath(entry)) if "/" in entry else entry


def _collect_dataset_dirs():
    """Dataset name -> folder, for datasets outside `evalsets_root`: `evaluation.datasets` (name -> path)
    and every zeroshot/retrieval/linear-probe entry given as a path (absolute, or relative with a '/')."""
    out = dict(EVAL.get("datasets") or {})
    probes = EVAL.get("linear_probe") or {}
    entries = list(EVAL.get("zeroshot", [])) + list(EVAL.get("retrieval", []))
    entries += list(probes) if isinstance(probes, list) else [
        v for e in probes.values() for v in (e or {}).values()]
    for entry in entries:
        if "/" in entry:
            out.setdefault(_dataset_name(entry), entry)
    for name, path in out.items():
        if not os.path.isdir(path):
            raise ValueError(
                f"config evaluation: dataset {name!r} points at {path}, which is not a directory; give the "
                "folder of a clip-benchmark wds-layout set (test/nshards.txt, classnames.txt, ...)")
    return out


DATASET_DIRS = _collect_dataset_dirs()


def split_evalset(evalset):
    """`NAME@SPLIT` -> (NAME, SPLIT); a bare name is the `test` split."""
    name, _, split = evalset.partition("@")
    return name, split or "test"


def evalset_source(name):
    """(input directory, evaluation-set path for `meru embed --evalset`) of an eval-set name.

    Real sets: the folder is `evaluation.datasets[NAME]` (or the path entry NAME came from), else
    `evalsets_root/NAME`; `NAME@train` is the `train` split of the same folder."""
    if name == "synthhier-retrieval":
        return f"{DATA}/synthhier", f"{DATA}/synthhier/eval/retrieval"
    if name == "synthhier-probe":
        return f"{DATA}/synthhier-probe", f"{DATA}/synthhier-probe/eval/zeroshot_shape"
    if name.startswith("synthhier-"):
        return f"{DATA}/synthhier", f"{DATA}/synthhier/eval/zeroshot_{name[len('synthhier-'):]}"
    base = split_evalset(name)[0]
    folder = DATASET_DIRS.get(base, f"{ER}/{base}")
    return folder, folder


def linear_probe_names():
    probes = EVAL.get("linear_probe") or {}
    return [_dataset_name(p) for p in probes] if isinstance(probes, list) else list(probes)


def probe_sets(name):
    """(train eval set, test eval set) of a linear-probe evaluation. Without `train:` (or for a list
    entry) the probe trains on the `train` split of the test set's own folder (`NAME@train`)."""
    if name == "synthhier":
        return "synthhier-probe", leaf_set()
    probes = EVAL.get("linear_probe") or {}
    if isinstance(probes, list):
        return f"{name}@train", name
    entry = probes[name] or {}
    test = _dataset_name(entry.get("test", name))
    train = _dataset_name(entry["train"]) if entry.get("train") else f"{test}@train"
    return train, test


def probe_inputs(wildcards):
    """Embedding caches of a linear probe: train and test, and with `evaluation.linear_probe_val: dataset` the
    `val` split of the training set's folder (`NAME@val`; meru.config checks that the split exists)."""
    train, test = probe_sets(wildcards.name)
    out = {"train": emb(wildcards.label, train), "test": emb(wildcards.label, test)}
    if EVAL.get("linear_probe_val", "slice") == "dataset":
        out["val"] = emb(wildcards.label, split_evalset(train)[0] + "@val")
    return out


def synth_embedding_sets():
    """Names of every SynthHier embedding cache of a run (rule embed_synthhier writes them together)."""
    if not EVAL.get("synthhier", False):
        return []
    out = [f"synthhier-{name}" for name in SYNTH_LEVELS + SYNTH_ATTRIBUTES]
    return out + ["synthhier-retrieval", "synthhier-probe", "textpool-synthhier"]


def synth_embedding_flag(name):
    """`meru embed` source and name flags of one SynthHier cache, as an argument list (quoted one by one in
    the shell); the cache (and every metric record made from it) carries `name` as its dataset name."""
    if name == "textpool-synthhier":
        return ["--text-pool", f"{DATA}/synthhier/eval/captions.jsonl", "--name", name]
    return ["--evalset", evalset_source(name)[1], "--name", name]


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
    return runs()[label]["seed"]


def size_args(label):
    """`--size SIZE` for a released checkpoint's records (`{size}`, or `{size}-{data}` for checkpoints trained on
    other data: meru.reporting.outputs.released_run); trained runs take the size from their checkpoint."""
    run = runs()[label]
    return ["--size", run["size"]] if run["released"] else []


def training_logs():
    """What the training-curve plot waits for: each run's model.pt (its log.jsonl is complete then). log.jsonl
    is not a declared output, so Snakemake never deletes the history of a failed or killed run."""
    if PRETRAINED:
        return []
    return [f"{RUNS}/{label}/model.pt" for label in run_labels()]



def reference_inputs():
    """Files the reproduction table depends on: the reference run's metric JSON or the published-values CSV
    (so refreshing the reference re-runs `reproduction`); nothing when there is no reference or it is missing
    (`meru reproduce` then says so)."""
    if REFERENCE == "none":
        return []
    if REFERENCE == "published":
        return ["meru/resources/reference_values.csv"] if os.path.exists("meru/resources/reference_values.csv") else []
    return sorted(str(p) for p in Path(REFERENCE).glob("metrics/*/*.json"))


def checkpoint_entry_args(label):
    """`--checkpoint-entry JSON` for a released checkpoint: the keys of its entry that say how to read the file
    (meru.kinds.formats.ENTRY_KEYS, kind, size; docs/CHECKPOINTS.md) and its model name and display name (on its
    records); nothing for trained runs."""
    if not runs()[label]["released"]:
        return []
    entry = released(label)
    keys = ("kind", "size", *ENTRY_KEYS, "name", "display")
    return ["--checkpoint-entry", json.dumps({k: entry[k] for k in keys if entry.get(k) is not None}, sort_keys=True)]


def released(label):
    for c in PRETRAINED.get("checkpoints", []):
        if released_run(c)["label"] == label:
            return c
    raise ValueError(f"no pretrained checkpoint for {label!r} in config 'pretrained.checkpoints'")


_validate_train_sections()


def traversal_images():
    """The SynthHier folder whose leaf-level eval set holds the traversal figure's images (when evaluated)."""
    return [evalset_source(leaf_set())[0]] if "traversal-synthhier" in synth_evals() else []


def card_targets():
    """Every card of the run: a model card per trained run, a dataset card per dataset directory it uses."""
    out = [] if PRETRAINED else [f"{RUNS}/{label}/{MODEL_CARD}" for label in run_labels()]
    return out + [f"{RESULTS}/cards/{os.path.basename(d)}.{DATASET_CARD}" for d in provenance_data()]


def report_targets():
    """The report's own pages and the cards."""
    return [f"{RESULTS}/report/workflow.rst"] + [f"{RESULTS}/report/{p}.html" for p in VERDICT_PAGES] + card_targets()
