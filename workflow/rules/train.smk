"""Training: one resolved train config per model kind, then `meru train` per (model, size, seed)."""


localrules:
    train_config,  # writes one small YAML: no cluster job of its own


rule train_config:
    """The validated `train:` section with this kind's `train_overrides` applied, as a file for `meru train`."""
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
        model=f"{RUNS}/{{model}}-{{size}}-s{{seed}}/model.pt",
        log=f"{RUNS}/{{model}}-{{size}}-s{{seed}}/log.jsonl",
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
        launcher=lambda w, resources: (
            f"torchrun --standalone --nproc_per_node {resources.gpu} -m meru"
            if int(resources.gpu) > 1
            else "meru"
        ),
    shell:
        "{params.launcher} train --config {input.config} --model {wildcards.model} --size {wildcards.size} "
        "--seed {wildcards.seed} --out {params.rundir} > {log} 2>&1"
