"""Evaluation: cache embeddings per (checkpoint, eval set), then one metric JSON per (run, evaluation)."""

rule embed:
    input:
        ckpt=lambda w: checkpoint_path(w.label),
        data=lambda w: evalset_source(w.evalset)[0],
    output:
        f"{RESULTS}/embeddings/{{label}}/{{evalset}}.pt",
    log:
        f"{RESULTS}/logs/embed/{{label}}/{{evalset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/embed/{{label}}/{{evalset}}.tsv"
    wildcard_constraints:
        evalset=r"(?!textpool-|synthhier-)[A-Za-z0-9_.-]+(@[a-z]+)?",
    conda:
        "../../envs/eval.yaml"
    threads: res("embed", "threads", 2)
    resources:
        cpu_jobs=1,
        gpu=res("embed", "gpu", 0),
        mem_mb=res("embed", "mem_mb", 4000),
        runtime=res("embed", "runtime", 30),
        **slurm_res("embed"),
    params:
        name=lambda w: split_evalset(w.evalset)[0],
        split=lambda w: split_evalset(w.evalset)[1],
        bs=EVAL.get("batch_size", 256),
        workers=EVAL.get("num_workers", 0),
        prompt_sets=lambda w: "" if w.evalset in zeroshot_datasets() else "--no-prompt-sets",
        entry=lambda w: checkpoint_entry_args(w.label),
    shell:
        # --evalset NAME picks the prompts (MERU's for its datasets); --root is the folder, a clip-benchmark
        # wds-layout copy or what `meru evalsets prepare` downloaded (torchvision layout); --name NAME is the
        # dataset name of the cache and the metric records (the config's name).
        "meru embed --checkpoint {input.ckpt:q} {params.entry:q} --evalset {params.name:q} --name {params.name:q} "
        "--root {input.data:q} --split {params.split:q} "
        "--out {output:q} --batch-size {params.bs:q} --num-workers {params.workers:q} {params.prompt_sets} > {log:q} 2>&1"


rule embed_synthhier:
    """All SynthHier caches of one checkpoint in one process (the sets are small; loading the model
    and importing open_clip cost more than embedding them)."""
    input:
        ckpt=lambda w: checkpoint_path(w.label),
        data=f"{DATA}/synthhier",
        probe=f"{DATA}/synthhier-probe",
    output:
        [f"{RESULTS}/embeddings/{{label}}/{name}.pt" for name in synth_embedding_sets()],
    log:
        f"{RESULTS}/logs/embed/{{label}}/synthhier.log",
    benchmark:
        f"{RESULTS}/benchmarks/embed/{{label}}/synthhier.tsv"
    conda:
        "../../envs/eval.yaml"
    threads: res("embed", "threads", 2)
    resources:
        cpu_jobs=1,
        gpu=res("embed", "gpu", 0),
        mem_mb=res("embed", "mem_mb", 4000),
        runtime=res("embed", "runtime", 30),
        **slurm_res("embed"),
    params:
        sources=lambda w, output: [
            arg
            for name, out in zip(synth_embedding_sets(), output)
            for arg in synth_embedding_flag(name) + ["--out", out]
        ],
        bs=EVAL.get("batch_size", 256),
        workers=EVAL.get("num_workers", 0),
        entry=lambda w: checkpoint_entry_args(w.label),
    shell:
        "meru embed --checkpoint {input.ckpt:q} {params.entry:q} {params.sources:q} "
        "--batch-size {params.bs:q} --num-workers {params.workers:q} > {log:q} 2>&1"


rule evaluate_zeroshot:
    input:
        unpack(zeroshot_inputs),
    output:
        f"{RESULTS}/metrics/{{label}}/zeroshot-{{name}}.json",
    log:
        f"{RESULTS}/logs/evaluate/{{label}}/zeroshot-{{name}}.log",
    conda:
        "../../envs/eval.yaml"
    resources:
        cpu_jobs=1,
    params:
        tree=zeroshot_tree_args,
        seed=lambda w: seed_of(w.label),
        size=lambda w: size_args(w.label),
    shell:
        "meru evaluate --task zeroshot --embeddings {input.emb:q} {params.tree:q} --out {output:q} "
        "--label {wildcards.label:q} {params.size:q} --seed {params.seed:q} > {log:q} 2>&1"


rule evaluate_retrieval:
    input:
        emb=lambda w: emb(w.label, "synthhier-retrieval" if w.name == "synthhier" else w.name),
    output:
        f"{RESULTS}/metrics/{{label}}/retrieval-{{name}}.json",
    log:
        f"{RESULTS}/logs/evaluate/{{label}}/retrieval-{{name}}.log",
    conda:
        "../../envs/eval.yaml"
    resources:
        cpu_jobs=1,
    params:
        seed=lambda w: seed_of(w.label),
        size=lambda w: size_args(w.label),
    shell:
        "meru evaluate --task retrieval --embeddings {input.emb:q} --out {output:q} "
        "--label {wildcards.label:q} {params.size:q} --seed {params.seed:q} > {log:q} 2>&1"


rule evaluate_linear_probe:
    input:
        unpack(probe_inputs),
    output:
        f"{RESULTS}/metrics/{{label}}/linear-probe-{{name}}.json",
    log:
        f"{RESULTS}/logs/evaluate/{{label}}/linear-probe-{{name}}.log",
    conda:
        "../../envs/eval.yaml"
    threads: res("embed", "threads", 2)
    resources:
        cpu_jobs=1,
    params:
        seed=lambda w: seed_of(w.label),
        size=lambda w: size_args(w.label),
        val=lambda w, input: ["--val-embeddings", input.val] if "val" in input.keys() else [],
    shell:
        "meru evaluate --task linear-probe --train-embeddings {input.train:q} --embeddings {input.test:q} "
        "{params.val:q} --out {output:q} --label {wildcards.label:q} {params.size:q} --seed {params.seed:q} > {log:q} 2>&1"


rule evaluate_structure:
    input:
        emb=lambda w: emb(w.label, leaf_set()),
        pool=f"{RESULTS}/embeddings/{{label}}/textpool-synthhier.pt",
    output:
        f"{RESULTS}/metrics/{{label}}/structure-synthhier.json",
    log:
        f"{RESULTS}/logs/evaluate/{{label}}/structure-synthhier.log",
    conda:
        "../../envs/eval.yaml"
    resources:
        cpu_jobs=1,
    params:
        size=lambda w: size_args(w.label),
    shell:
        "meru evaluate --task structure --embeddings {input.emb:q} --text-pool {input.pool:q} --out {output:q} "
        "--label {wildcards.label:q} {params.size:q} > {log:q} 2>&1"


rule evaluate_traversal:
    input:
        emb=lambda w: emb(w.label, leaf_set()),
        pool=f"{RESULTS}/embeddings/{{label}}/textpool-synthhier.pt",
    output:
        f"{RESULTS}/metrics/{{label}}/traversal-synthhier.json",
    log:
        f"{RESULTS}/logs/evaluate/{{label}}/traversal-synthhier.log",
    conda:
        "../../envs/eval.yaml"
    resources:
        cpu_jobs=1,
    params:
        size=lambda w: size_args(w.label),
    shell:
        "meru evaluate --task traversal --embeddings {input.emb:q} --text-pool {input.pool:q} --max-images 64 --out {output:q} "
        "--label {wildcards.label:q} {params.size:q} > {log:q} 2>&1"


rule evaluate_prompts:
    """Zero-shot accuracy under each prompt template set (the eval set's own, single, MERU's, clip-benchmark's)."""
    input:
        emb=lambda w: emb(w.label, w.name),
    output:
        f"{RESULTS}/metrics/{{label}}/prompts-{{name}}.json",
    log:
        f"{RESULTS}/logs/evaluate/{{label}}/prompts-{{name}}.log",
    conda:
        "../../envs/eval.yaml"
    resources:
        cpu_jobs=1,
    params:
        seed=lambda w: seed_of(w.label),
        size=lambda w: size_args(w.label),
    shell:
        "meru evaluate --task prompts --embeddings {input.emb:q} --out {output:q} "
        "--label {wildcards.label:q} {params.size:q} --seed {params.seed:q} > {log:q} 2>&1"


rule evaluate_hierarcaps:
    """HierarCaps (1,000 COCO images, 4-level caption hierarchies): depth correlation, hierarchical
    retrieval, entailment AP/AUROC."""
    input:
        emb=lambda w: emb(w.label, "hierarcaps"),
    output:
        f"{RESULTS}/metrics/{{label}}/hierarcaps-coco.json",
    log:
        f"{RESULTS}/logs/evaluate/{{label}}/hierarcaps-coco.log",
    conda:
        "../../envs/eval.yaml"
    resources:
        cpu_jobs=1,
    params:
        seed=lambda w: seed_of(w.label),
        size=lambda w: size_args(w.label),
    shell:
        "meru evaluate --task hierarcaps --embeddings {input.emb:q} --out {output:q} "
        "--label {wildcards.label:q} {params.size:q} --seed {params.seed:q} > {log:q} 2>&1"


rule evaluate_caption_choice:
    """Caption choice (SugarCrepe subsets, ARO VG-Relation / VG-Attribution): the model's own similarity picks
    the true caption among hard negatives; accuracy per set with bootstrap intervals."""
    input:
        emb=lambda w: emb(w.label, w.name),
    output:
        f"{RESULTS}/metrics/{{label}}/caption-choice-{{name}}.json",
    log:
        f"{RESULTS}/logs/evaluate/{{label}}/caption-choice-{{name}}.log",
    conda:
        "../../envs/eval.yaml"
    resources:
        cpu_jobs=1,
    params:
        seed=lambda w: seed_of(w.label),
        size=lambda w: size_args(w.label),
    shell:
        "meru evaluate --task caption-choice --embeddings {input.emb:q} --out {output:q} "
        "--label {wildcards.label:q} {params.size:q} --seed {params.seed:q} > {log:q} 2>&1"
