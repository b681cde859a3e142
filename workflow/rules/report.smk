"""Reporting: tables, figures (both in the HTML report with captions) and the provenance record."""

import shlex


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


rule report_pages:
    """The report's landing page (RESULTS/report/workflow.rst: what ran, config, time, verdict sentences) and
    the Verdicts category: claims, reproduction, prompt sensitivity and provenance as HTML tables."""
    input:
        final=[f"{RESULTS}/tables/{t}.md" for t in FINAL_TABLES],
        prompts=[f"{RESULTS}/tables/prompt_sensitivity.csv"] if prompt_files() else [],
        provenance=f"{RESULTS}/PROVENANCE.md",
    output:
        rst=f"{RESULTS}/report/workflow.rst",
        pages=[
            report(f"{RESULTS}/report/{p}.html", caption=f"../report/verdict_{p}.rst", category="Verdicts")
            for p in VERDICT_PAGES
        ],
    log:
        f"{RESULTS}/logs/report/report_pages.log",
    conda:
        "../../envs/report.yaml"
    params:
        results=lambda w, input: os.path.dirname(input.provenance),
        cfg=lambda w: json.dumps(config, sort_keys=True),
        files=lambda w: " ".join(f"--config-file {shlex.quote(os.path.relpath(f))}" for f in workflow.overwrite_configfiles),
        out=lambda w, output: os.path.dirname(output.rst),
    shell:
        "meru report-pages --results {params.results:q} --out {params.out:q} --config-json {params.cfg:q} {params.files} "
        "> {log:q} 2>&1"


rule model_card:
    """MODEL_CARD.md next to a trained model.pt (recipe, data, steps, headline metrics with intervals,
    provenance), written after its evaluations; its HTML copy is shown in the report's Cards."""
    input:
        ckpt=f"{RUNS}/{{label}}/model.pt",
        metrics=lambda w: [m for m in metric_files() if m.startswith(f"{RESULTS}/metrics/{w.label}/")],
    output:
        card=f"{RUNS}/{{label}}/{MODEL_CARD}",
        html=report(f"{RESULTS}/cards/{{label}}.MODEL_CARD.html", caption="../report/model_card.rst", category="Cards"),
    log:
        f"{RESULTS}/logs/report/model_card-{{label}}.log",
    conda:
        "../../envs/report.yaml"
    params:
        run=lambda w, input: os.path.dirname(input.ckpt),
        metrics=lambda w: f"{RESULTS}/metrics",
    shell:
        "meru card --model {params.run:q} --label {wildcards.label:q} --metrics {params.metrics:q} "
        "--out {output.card:q} --html {output.html:q} > {log:q} 2>&1"


rule dataset_card:
    """DATASET_CARD.md of a dataset directory of the run (SynthHier: generator, taxonomy, attributes, caption
    rules, shortcuts, licence; other shard sets: from their manifest), with its HTML copy for the report."""
    input:
        f"{DATA}/{{dataset}}",
    output:
        card=f"{RESULTS}/cards/{{dataset}}.{DATASET_CARD}",
        html=report(f"{RESULTS}/cards/{{dataset}}.DATASET_CARD.html", caption="../report/dataset_card.rst", category="Cards"),
    log:
        f"{RESULTS}/logs/report/dataset_card-{{dataset}}.log",
    wildcard_constraints:
        dataset=r"[A-Za-z0-9_.-]+",
    conda:
        "../../envs/report.yaml"
    shell:
        "meru card --dataset {input:q} --out {output.card:q} --html {output.html:q} > {log:q} 2>&1"


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
