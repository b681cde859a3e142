"""meru-bench workflow: data -> train -> embed -> evaluate -> tables -> plots -> report.

Every rule is one `meru ...` command (docs/ARCHITECTURE.md, "Command-line contracts"); see
docs/WORKFLOW.md for the configs (default / paper / pretrained / smoke), SLURM use and the layout.
"""

import json
import os

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "configs/default.yaml"


def _check_config():
    """Every key typed and in range, sizes/datasets known, data paths agree: else one line and exit 1."""
    import sys

    import yaml

    from meru.config import ConfigError, check_workflow_config, load_yaml

    sources = [str(f) for f in workflow.overwrite_configfiles] or ["configs/default.yaml"]
    try:
        for f in sources:
            load_yaml(f)  # duplicate keys (plain YAML silently keeps the last one)
        with open(os.path.join(workflow.basedir, "configs/schema.yaml")) as f:
            check_workflow_config(config, yaml.safe_load(f), " + ".join(sources))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(1)


_check_config()
validate(config, "configs/schema.yaml")

include: "workflow/rules/common.smk"


wildcard_constraints:
    label=r"[a-z]+-[a-z0-9-]+-(s\d+|released)",
    model=r"meru|clip",
    size=r"[a-z0-9-]+",
    seed=r"\d+",
    name=r"[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+)*",


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True
