"""Names of what the reporting commands write, in one place for the package and the workflow.

Importing this module is cheap (no pandas, matplotlib or torch), so ``workflow/rules/common.smk`` reads
the lists from here when it plans the targets.
"""

# Run names (every evaluated model is one run, named by its label): built in meru.runs, re-exported for the workflow
from meru.runs import released_run, trained_run  # noqa: F401

# `meru tables` writes T.{csv,md,tex,html} + T_stats.csv for each T (meru.reporting.tables.SPECS, same order)
TABLES = (
    "zeroshot",
    "retrieval",
    "linear_probe",
    "hierarchy",
    "hierarchy_distance",
    "structure",
    "structure_pairs",
    "root_distance",
    "traversal",
)
TABLE_SUFFIXES = (".csv", ".md", ".tex", ".html", "_stats.csv")
# `meru claims` / `meru reproduce` / `meru prompt-sensitivity`: csv + md each
FINAL_TABLES = ("claims", "reproduction")
# `meru plots` figures, each as PDF + PNG; `scaling` only when the run has two or more model sizes
PLOTS = ("zeroshot_bars", "scaling", "root_distance_hist", "depth_vs_distance", "traversal", "training_curves")
FIGURE_FORMATS = ("pdf", "png")
