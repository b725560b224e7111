# Stage 2: pretraining of the base models (Eq. 3.5), one per seed, resumable from results/state/.


rule pretrain:
    input:
        unpack(data_files),
    output:
        model=paths.run_template("models", "pretrain"),
        curve=paths.run_template("curves", "pretrain"),
        metrics=paths.run_template("metrics", "pretrain"),
    log:
        "logs/pretrain/{dataset}/{model}/seed{seed}.log",
    benchmark:
        paths.benchmark_template("pretrain")
    conda:
        ENV
    threads: 1 if USE_GPU else config["threads"]
    resources:
        gpu=1 if USE_GPU else 0,
        device=config["device"],
    params:
        hparams=stage_params("pretrain"),
        data=lambda wildcards, input: Path(input.sequences).parent,
        state=state_dir,
    shell:
        "python -m catrec pretrain --data {params.data:q} --hparams {params.hparams:q} --dataset {wildcards.dataset}"
        " --model {wildcards.model} --device {resources.device} --threads {threads}"
        " --checkpoint {output.model:q} --curve {output.curve:q} --metrics {output.metrics:q}"
        " --state-dir {params.state:q} > {log:q} 2>&1"
