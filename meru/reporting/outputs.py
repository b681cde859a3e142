"""Names of what the reporting commands write, in one place for the package and the workflow.

Importing this module is cheap (no pandas, matplotlib or torch), so ``workflow/rules/common.smk`` reads
the lists from here when it plans the targets.
"""

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
# `meru report-pages`: RESULTS/report/workflow.rst (the report's landing page) + one HTML page per verdict file
VERDICT_PAGES = ("claims", "reproduction", "prompt_sensitivity", "provenance")
# `meru card`: RUNS/{label}/MODEL_CARD.md next to each trained model.pt, RESULTS/cards/{name}.DATASET_CARD.md
# for each dataset directory the run uses; each also as .html (RESULTS/cards/) for the report's "Cards"
MODEL_CARD, DATASET_CARD = "MODEL_CARD.md", "DATASET_CARD.md"


# Run names: every evaluated model is one run, named by its label (the metric records' `label` field).
def trained_run(kind: str, size: str, seed: int) -> dict:
    """A trained run: ``{"label": "{kind}-{size}-s{seed}", "kind", "size", "seed"}``."""
    return {"label": f"{kind}-{size}-s{seed}", "kind": kind, "size": size, "seed": int(seed), "released": False}


def released_run(entry: dict) -> dict:
    """A released checkpoint of ``pretrained.checkpoints`` (``kind``, ``size``, ``data``: default ``redcaps``,
    MERU's own training data): label ``{kind}-{size}-released``, or ``{kind}-{size}-{data}-released`` with
    record size ``{size}-{data}`` for checkpoints trained on other data (e.g. HyCoCLIP's GRIT ones); seed 0."""
    data = entry.get("data", "redcaps")
    size = entry["size"] if data == "redcaps" else f"{entry['size']}-{data}"
    return {
        "label": f"{entry['kind']}-{size}-released",
        "kind": entry["kind"],
        "size": size,
        "seed": 0,
        "released": True,
    }
