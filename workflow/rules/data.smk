"""Data: SynthHier generation, web-dataset download, evaluation sets, ImageNet tree, released checkpoints."""


rule synthhier:
    output:
        directory(f"{DATA}/synthhier"),
    log:
        f"{RESULTS}/logs/data/synthhier.log",
    conda:
        "../../envs/data.yaml"
    params:
        train=SYNTH.get("train_size", 20000),
        test=SYNTH.get("test_size", 2000),
        image=SYNTH.get("image_size", 32),
        seed=SYNTH.get("seed", 0),
        shard=SYNTH.get("shard_size", 5000),
    shell:
        "meru synth --out {output:q} --train-size {params.train:q} --test-size {params.test:q} "
        "--image-size {params.image:q} --seed {params.seed:q} --shard-size {params.shard:q} > {log:q} 2>&1"


rule synthhier_probe:
    """A second, independently seeded SynthHier draw whose labelled test images train the linear probes."""
    output:
        directory(f"{DATA}/synthhier-probe"),
    log:
        f"{RESULTS}/logs/data/synthhier-probe.log",
    conda:
        "../../envs/data.yaml"
    params:
        test=SYNTH.get("probe_train_size", 2000),
        image=SYNTH.get("image_size", 32),
        seed=SYNTH.get("probe_seed", 1000),
        shard=SYNTH.get("shard_size", 5000),
    shell:
        "meru synth --out {output:q} --train-size 1 --test-size {params.test:q} "
        "--image-size {params.image:q} --seed {params.seed:q} --shard-size {params.shard:q} > {log:q} 2>&1"


rule download:
    output:
        directory(f"{DATA}/{{source}}"),
    log:
        f"{RESULTS}/logs/data/download-{{source}}.log",
    wildcard_constraints:
        source="redcaps|cc3m|cc12m",
    conda:
        "../../envs/data.yaml"
    params:
        ann=lambda w: config["data"]["download"]["annotations"],
        extra=lambda w: [
            arg
            for k, v in config["data"]["download"].items()
            if k != "annotations" and v is not None
            for arg in (f"--{k.replace('_', '-')}", str(v))
        ],
    resources:
        mem_mb=res("download", "mem_mb", 16000),
        runtime=res("download", "runtime", 2880),
        **slurm_res("download"),
    threads: res("download", "threads", 2)
    shell:
        "meru download --source {wildcards.source:q} --annotations {params.ann:q} --out {output:q} {params.extra:q} "
        "> {log:q} 2>&1"


rule evalset:
    output:
        directory(f"{EVAL.get('evalsets_root', 'data/evalsets')}/{{dataset}}"),
    log:
        f"{RESULTS}/logs/evalsets/{{dataset}}.log",
    wildcard_constraints:
        dataset=r"[a-z0-9_]+",
    conda:
        "../../envs/data.yaml"
    params:
        extra=lambda w: evalset_prepare_args(w.dataset),
    shell:
        "meru evalsets prepare --dataset {wildcards.dataset:q} --root {output:q} {params.extra:q} > {log:q} 2>&1"


rule imagenet_tree:
    output:
        f"{DATA}/imagenet_tree.txt",
    log:
        f"{RESULTS}/logs/data/imagenet_tree.log",
    conda:
        "../../envs/eval.yaml"
    params:
        wordnet=["--wordnet-dir", EVAL["wordnet_dir"]] if EVAL.get("wordnet_dir") else [],
    shell:
        "meru imagenet-tree --out {output:q} {params.wordnet:q} > {log:q} 2>&1"


rule released_checkpoint:
    """Download a released checkpoint (resumes a cut download; Hugging Face hub files through its cache, HF_TOKEN,
    HF_HUB_OFFLINE); verify the config's sha256, or the one recorded by the first download when none is published."""
    output:
        ckpt=f"{RUNS}/released/{{label}}.pth",
        sha=f"{RUNS}/released/{{label}}.sha256",
    log:
        f"{RESULTS}/logs/released/{{label}}.log",
    conda:
        "../../envs/data.yaml"
    params:
        url=lambda w: released(w.label)["url"],
        sha=lambda w: ["--sha256", released(w.label)["sha256"]] if released(w.label).get("sha256") else [],
        checksums=f"{RUNS}/released/checksums.txt",
        # `pretrained.unavailable: skip`: a failed download writes LABEL.unavailable (common.smk `unavailable`)
        skip=lambda w: ["--unavailable-out", unavailable_marker(w.label)] if PRETRAINED.get("unavailable") == "skip" else [],
    shell:
        "meru fetch-checkpoint --url {params.url:q} --out {output.ckpt:q} --sha256-out {output.sha:q} "
        "--checksums {params.checksums:q} {params.sha:q} {params.skip:q} > {log:q} 2>&1"


rule contact_sheet:
    """A PNG grid of SynthHier samples with captions at three specificities, so a person can see the data."""
    input:
        f"{DATA}/synthhier",
    output:
        report(f"{RESULTS}/data/contact_sheet.png", caption="../report/contact_sheet.rst", category="Data"),
    log:
        f"{RESULTS}/logs/data/contact_sheet.log",
    conda:
        "../../envs/data.yaml"
    shell:
        "meru contact-sheet --data {input:q} --out {output:q} --n 24 > {log:q} 2>&1"
