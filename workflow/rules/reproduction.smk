"""Reproduction and claims: the run against its reference (a reference run or published values), and the
MERU paper's qualitative claims with computed verdicts (meru/reporting/{reproduction,claims}.py)."""


rule claims:
    """The MERU paper's qualitative claims with computed verdicts, one column per model kind."""
    input:
        metric_files(),
    output:
        csv=f"{RESULTS}/tables/claims.csv",
        md=f"{RESULTS}/tables/claims.md",
    log:
        f"{RESULTS}/logs/report/claims.log",
    conda:
        "../../envs/report.yaml"
    params:
        metrics=lambda w: f"{RESULTS}/metrics",
        out=lambda w, output: os.path.dirname(output.csv),
    shell:
        "meru claims --metrics {params.metrics:q} --out {params.out:q} > {log:q} 2>&1"


rule reproduction:
    """The run's headline metrics against the config's `reference` (a reference run or published values);
    the summary line is printed at the end of the run (Snakefile `onsuccess`)."""
    input:
        metrics=metric_files(),
        reference=reference_inputs(),
    output:
        csv=f"{RESULTS}/tables/reproduction.csv",
        md=f"{RESULTS}/tables/reproduction.md",
    log:
        f"{RESULTS}/logs/report/reproduction.log",
    conda:
        "../../envs/report.yaml"
    params:
        metrics=lambda w: f"{RESULTS}/metrics",
        reference=lambda w: REFERENCE,
        data=lambda w: TRAINING_DATA,
        out=lambda w, output: os.path.dirname(output.csv),
    shell:
        "meru reproduce --metrics {params.metrics:q} --reference {params.reference:q} --training-data {params.data:q} "
        "--out {params.out:q} > {log:q} 2>&1"


rule leaderboard:
    """The family leaderboard (configs with a `leaderboard:` section): one row per checkpoint with every
    evaluation, each published value beside ours; unavailable and pending checkpoints listed, one line each."""
    input:
        metrics=metric_files(),
        prompts=prompt_files(),
        hierarcaps=hierarcaps_files(),
        published="meru/resources/reference_values.csv",
    output:
        [f"{RESULTS}/tables/{f}" for f in LEADERBOARD_FILES if f != "leaderboard.html"],
        report(f"{RESULTS}/tables/leaderboard.html", caption="../report/leaderboard.rst", category="Leaderboard"),
    log:
        f"{RESULTS}/logs/report/leaderboard.log",
    conda:
        "../../envs/report.yaml"
    params:
        metrics=lambda w: f"{RESULTS}/metrics",
        released=lambda w: f"{RUNS}/released",
        cfg=lambda w: json.dumps(config, sort_keys=True),
        out=lambda w, output: os.path.dirname(output[0]),
    shell:
        "meru leaderboard --metrics {params.metrics:q} --published {input.published:q} --released {params.released:q} "
        "--config-json {params.cfg:q} --out {params.out:q} > {log:q} 2>&1"
