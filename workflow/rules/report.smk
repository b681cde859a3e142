"""Reporting: tables, plots (with report captions) and the provenance record."""


rule tables:
    input:
        metric_files(),
    output:
        [f"{RESULTS}/tables/{t}.{ext}" for t in TABLES for ext in ("csv", "md", "tex")],
    log:
        f"{RESULTS}/logs/report/tables.log",
    conda:
        "../../envs/report.yaml"
    params:
        metrics=lambda w: f"{RESULTS}/metrics",
        out=lambda w, output: os.path.dirname(output[0]),
    shell:
        "meru tables --metrics {params.metrics:q} --out {params.out:q} > {log:q} 2>&1"


rule plots:
    input:
        metrics=metric_files(),
        logs=training_logs(),
    output:
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
        out=lambda w, output: os.path.dirname(output[0]),
    shell:
        "meru plots --metrics {params.metrics:q} --runs {params.runs:q} --out {params.out:q} > {log:q} 2>&1"


rule provenance:
    input:
        f"{RESULTS}/tables/zeroshot.csv",
    output:
        f"{RESULTS}/PROVENANCE.md",
    log:
        f"{RESULTS}/logs/report/provenance.log",
    conda:
        "../../envs/report.yaml"
    params:
        # a function: a plain string param would be formatted with wildcards, and config values may hold braces
        cfg=lambda w: json.dumps(config, sort_keys=True, indent=1),
    shell:
        "(printf '# Provenance\\n\\n- date: %s\\n- git commit: %s\\n- machine: %s (%s, %s CPUs)\\n- python: %s\\n\\n"
        "## Config\\n\\n```json\\n%s\\n```\\n' "
        "\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" \"$(git rev-parse HEAD 2>/dev/null || echo unknown)\" "
        "\"$(hostname)\" \"$(uname -sm)\" \"$(nproc --all)\" \"$(python --version 2>&1)\" {params.cfg:q} "
        "> {output:q}.tmp && mv {output:q}.tmp {output:q}) > {log:q} 2>&1"
