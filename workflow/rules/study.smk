"""A study config's tables, verdicts and figure (`study: {type: sizes | ablation | batch}`): one `meru study`
over the run's metric records and its runs' config.yaml files, written to RESULTS/study/ (meru.reporting.studies)."""

from meru.reporting.outputs import study_outputs

if STUDY:  # common.smk: the config's `study:` section

    rule study:
        input:
            metrics=metric_files(),
            checkpoints=[] if PRETRAINED else [checkpoint_path(label) for label in run_labels()],
        output:
            [f"{RESULTS}/study/{f}" for f in study_outputs(STUDY["type"]) if not f.endswith(".png")],
            [
                report(f"{RESULTS}/study/{f}", caption="../report/study.rst", category="Study")
                for f in study_outputs(STUDY["type"])
                if f.endswith(".png")
            ],
        log:
            f"{RESULTS}/logs/report/study.log",
        conda:
            "../../envs/report.yaml"
        params:
            type=STUDY["type"],
            baseline=lambda w: ["--baseline", STUDY["baseline"]] if STUDY.get("baseline") else [],
            metrics=lambda w: f"{RESULTS}/metrics",
            runs=lambda w: RUNS,
            out=lambda w, output: os.path.dirname(output[0]),
        shell:
            "meru study --type {params.type:q} {params.baseline:q} --metrics {params.metrics:q} "
            "--runs {params.runs:q} --out {params.out:q} > {log:q} 2>&1"
