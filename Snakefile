"""meru-bench workflow: data -> train -> embed -> evaluate -> tables -> plots -> report.

Every rule is one `meru ...` command (docs/ARCHITECTURE.md, "Command-line contracts"); see
docs/WORKFLOW.md for the configs (default / paper / pretrained / smoke), SLURM use and the layout.
"""

import json
import os

from snakemake.utils import min_version, validate

from meru.kinds import KINDS

min_version("9.0")


configfile: "configs/default.yaml"


include: "workflow/rules/common.smk"  # first checks the config (one line per problem, exit 1)


validate(config, "configs/schema.yaml")


wildcard_constraints:
    label=r"[a-z]+-[a-z0-9-]+-(s\d+|released)",
    # a model name: a kind or a name of the config's `variants:` (longest first)
    model="|".join(sorted(set(KINDS) | set(config.get("variants") or {}), key=len, reverse=True)),
    size=r"[a-z0-9-]+",
    seed=r"\d+",
    name=r"[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+)*",


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/reproduction.smk"
include: "workflow/rules/study.smk"  # a study config's tables and figure (`study:`)


# the report's landing page: written by `rule report_pages` (what ran, config, time, verdicts); a placeholder
# saying so before the run has produced it
report: f"{RESULTS}/report/workflow.rst" if os.path.exists(f"{RESULTS}/report/workflow.rst") else "workflow/report/workflow.rst"


rule all:
    input:
        all_targets(),
    default_target: True


onsuccess:
    # never silent: the reproduction verdict (and the claims summary) close every successful run
    for _table in ("reproduction", "claims", "leaderboard"):
        _md = os.path.join(RESULTS, "tables", f"{_table}.md")
        if os.path.exists(_md):
            for _line in open(_md).read().splitlines():
                if _line.startswith("Summary: "):
                    print(f"{_md}: {_line[len('Summary: '):]}")
