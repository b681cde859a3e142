"""Training: one resolved train config per model kind, then `meru train` per (model, size, seed)."""


localrules:
    train_config,  # writes one small YAML: no cluster job of its own


rule train_config:
    """The validated `train:` section with this model's `train_overrides` applied (and, for a variant, its kind,
    name and display name), as a file for `meru train`."""
    output:
        f"{RUNS}/config/train-{{model}}.yaml",
    log:
        f"{RESULTS}/logs/train/config-{{model}}.log",
    params:
        cfg=lambda w: json.dumps({"train": merged_train_config(w.model), "train_overrides": {}}, sort_keys=True),
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/write_yaml.py"


rule train:
    input:
        config=f"{RUNS}/config/train-{{model}}.yaml",
        data=train_data_input,
    output:
        # RUNDIR/log.jsonl is written by `meru train` but not declared: Snakemake deletes the declared
        # outputs of a failed job, and the log is the history a resumed run continues
        model=f"{RUNS}/{{model}}-{{size}}-s{{seed}}/model.pt",
    log:
        f"{RESULTS}/logs/train/{{model}}-{{size}}-s{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{model}}-{{size}}-s{{seed}}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: res("train", "threads", 2)
    resources:
        cpu_jobs=1,
        gpu=res("train", "gpu", 0),
        mem_mb=res("train", "mem_mb", 4000),
        runtime=res("train", "runtime", 60),
        **slurm_res("train"),
    params:
        rundir=lambda w: f"{RUNS}/{w.model}-{w.size}-s{w.seed}",
        kind=lambda w: kind_of(w.model),  # the model's kind (a variant trains as its kind, with its own config)
        # the workflow config file, for its `tracking:` section (read at run time: changing trackers retrains
        # nothing); only when it has one, so that study configs sharing a runs directory plan identical jobs
        tracking=["--tracking-config", CONFIG_FILE] if config.get("tracking") else [],
        launcher=lambda w, resources: (
            ["torchrun", "--standalone", "--nproc_per_node", str(resources.gpu), "-m", "meru"]
            if int(resources.gpu) > 1
            else ["meru"]
        ),
    shell:
        "{params.launcher:q} train --config {input.config:q} --model {params.kind:q} --size {wildcards.size:q} "
        "--seed {wildcards.seed:q} --out {params.rundir:q} {params.tracking:q} > {log:q} 2>&1"
