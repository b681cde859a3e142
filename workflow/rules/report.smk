"""Reporting: tables, figures (both in the HTML report with captions) and the provenance record."""


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
        out=lambda w, output: os.path.dirname(output[0]),
    shell:
        "meru plots --metrics {params.metrics:q} --runs {params.runs:q} --figures {params.figures:q} "
        "--out {params.out:q} > {log:q} 2>&1"


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


rule track:
    """Evaluation metrics to the experiment trackers of the config's `tracking:` section (one run per label; the
    training rows reach the same runs from `meru train`). Planned only when `tracking.backends` is not empty."""
    input:
        metric_files(),
    output:
        f"{RESULTS}/tracking.tsv",
    log:
        f"{RESULTS}/logs/report/track.log",
    conda:
        "../../envs/report.yaml"
    params:
        config=CONFIG_FILE,
        metrics=lambda w: f"{RESULTS}/metrics",
    shell:
        "meru track --config {params.config:q} --metrics {params.metrics:q} --out {output:q} > {log:q} 2>&1"
