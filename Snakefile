"""meru-bench workflow: data -> train -> embed -> evaluate -> tables -> plots -> report.

Every rule is one `meru ...` command (docs/ARCHITECTURE.md, "Command-line contracts"); see
docs/WORKFLOW.md for the configs (default / paper / pretrained / smoke), SLURM use and the layout.
"""

import json
import os

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "configs/default.yaml"


validate(config, "configs/schema.yaml")

include: "workflow/rules/common.smk"


wildcard_constraints:
    label=r"[a-z]+-[a-z0-9-]+-(s\d+|released)",
    model=r"meru|clip|euclip",
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
