"""Reporting: tables, figures (both in the HTML report with captions) and the provenance record."""

import shlex


def traversal_images():
    """The SynthHier folder whose leaf-level eval set holds the traversal figure's images (when evaluated)."""
    return [evalset_source(leaf_set())[0]] if "traversal-synthhier" in synth_evals() else []



rule tables:
    input:
        metric_files(),
    output:
        [f"{RESULTS}/tables/{f}" for f in TABLE_FILES],
        [
            report(f"{RESULTS}/tables/{t}.html", caption=f"../report/table_{t}.rst", category="Tables")
            for t in TABLES
        ],
    log:
        f"{RESULTS}/logs/report/tables.log",
    conda:
        "../../envs/report.yaml"
    params:
        metrics=lambda w: f"{RESULTS}/metrics",
        out=lambda w, output: os.path.dirname(output[0]),
    shell:
        "meru tables --metrics {params.metrics:q} --out {params.out:q} > {log:q} 2>&1"


rule prompt_sensitivity:
    input:
        prompt_files(),
    output:
        [f"{RESULTS}/tables/prompt_sensitivity.{ext}" for ext in ("csv", "md")],
    log:
        f"{RESULTS}/logs/report/prompt_sensitivity.log",
    conda:
        "../../envs/report.yaml"
    params:
        metrics=lambda w: f"{RESULTS}/metrics",
        out=lambda w, output: os.path.dirname(output[0]),
    shell:
        "meru prompt-sensitivity --metrics {params.metrics:q} --out {params.out:q} > {log:q} 2>&1"


rule plots:
    input:
        metrics=metric_files(),
        logs=training_logs(),
        images=traversal_images(),
    output:
        [f"{RESULTS}/plots/{p}.pdf" for p in PLOTS],
        [
            report(f"{RESULTS}/plots/{p}.png", caption=f"../report/{p}.rst", category="Figures")
            for p in PLOTS
        ],
    log:
        f"{RESULTS}/logs/report/plots.log",
    conda:
        "../../envs/report.yaml"
    params:
        metrics=lambda w: f"{RESULTS}/metrics",
        runs=lambda w: RUNS,
        figures=",".join(PLOTS),
        images=lambda w, input: f"--images {shlex.quote(evalset_source(leaf_set())[1])}" if input.images else "",
        out=lambda w, output: os.path.dirname(output[0]),
    shell:
        "meru plots --metrics {params.metrics:q} --runs {params.runs:q} --figures {params.figures:q} "
        "{params.images} --out {params.out:q} > {log:q} 2>&1"


rule provenance:
    """Date, git commit + dirty flag, machine, package versions, config and SHA-256 of the inputs."""
    input:
        tables=f"{RESULTS}/tables/zeroshot.csv",
        plots=f"{RESULTS}/plots/{PLOTS[0]}.png",
        data=provenance_data(),
        checkpoints=[checkpoint_path(label) for label in run_labels()],
    output:
        f"{RESULTS}/PROVENANCE.md",
    log:
        f"{RESULTS}/logs/report/provenance.log",
    conda:
        "../../envs/report.yaml"
    params:
        # a function: a plain string param would be formatted with wildcards, and config values may hold braces
        cfg=lambda w: json.dumps(config, sort_keys=True),
        outputs=[RESULTS, RUNS, DATA],
    shell:
        "meru provenance --out {output:q} --config-json {params.cfg:q} --data {input.data:q} "
        "--checkpoint {input.checkpoints:q} --outputs {params.outputs:q} > {log:q} 2>&1"
