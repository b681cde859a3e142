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
    "caption_choice",
)
TABLE_SUFFIXES = (".csv", ".md", ".tex", ".html", "_stats.csv")
# `meru claims` / `meru reproduce` / `meru prompt-sensitivity`: csv + md each
FINAL_TABLES = ("claims", "reproduction")
# `meru plots` figures, each as PDF + PNG; `scaling` only when the run has two or more model sizes
PLOTS = ("zeroshot_bars", "scaling", "root_distance_hist", "depth_vs_distance", "traversal", "training_curves")
FIGURE_FORMATS = ("pdf", "png")
# `meru report-pages`: RESULTS/report/workflow.rst (the report's landing page) + one HTML page per verdict file
VERDICT_PAGES = ("claims", "reproduction", "prompt_sensitivity", "provenance")
# `meru card`: RUNS/{label}/MODEL_CARD.md next to each trained model.pt, RESULTS/cards/{name}.DATASET_CARD.md
# for each dataset directory the run uses; each also as .html (RESULTS/cards/) for the report's "Cards"
MODEL_CARD, DATASET_CARD = "MODEL_CARD.md", "DATASET_CARD.md"
# `meru study --type T` (meru.reporting.studies; a config with `study: {type: T}`): RESULTS/study/ holds T.csv,
# T.md, T_stats.csv and the study's figure (PDF + PNG)
STUDY_TYPES = ("sizes", "ablation", "batch")
STUDY_FIGURES = {"sizes": "sizes_gap", "ablation": "ablation_hierarchy", "batch": "batch_gap"}


def study_outputs(study: str) -> list[str]:
    """Every file `meru study --type STUDY` writes, relative to its --out."""
    tables = [f"{study}{suffix}" for suffix in (".csv", ".md", "_stats.csv")]
    return tables + [f"{STUDY_FIGURES[study]}.{ext}" for ext in FIGURE_FORMATS]


# `meru leaderboard` (configs with a `leaderboard:` section): one row per checkpoint (md, csv, sortable html) and
# the long comparison (checkpoint x metric x source: ours, published, difference, protocol note)
LEADERBOARD_FILES = ("leaderboard.md", "leaderboard.csv", "leaderboard.html", "leaderboard_comparison.csv")
