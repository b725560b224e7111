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


# train.stack with several seeds: the pretrainings of SEEDS, one job per dataset x model (one computation,
# catrec.models.stack); each run writes exactly the files its own job would.
if PRETRAIN_STACKED:

    ruleorder: pretrain_stack > pretrain

    rule pretrain_stack:
        input:
            unpack(data_files),
        output:
            models=pretrain_stack_files("models"),
            curves=pretrain_stack_files("curves"),
            metrics=pretrain_stack_files("metrics"),
        log:
            f"logs/pretrain/{PRETRAIN_STACK_RUN}.log",
        benchmark:
            f"{paths.BENCHMARKS}/pretrain/{PRETRAIN_STACK_RUN}.tsv"
        conda:
            ENV
        threads: 1 if USE_GPU else config["threads"]
        resources:
            gpu=1 if USE_GPU else 0,
            device=config["device"],
        params:
            runs=pretrain_stack_runs,
            data=lambda wildcards, input: Path(input.sequences).parent,
            max_stack=max_stack_arg,
        shell:
            "python -m catrec pretrain-stack --data {params.data:q} --dataset {wildcards.dataset}"
            " --model {wildcards.model} --runs {params.runs:q} {params.max_stack}"
            " --device {resources.device} --threads {threads} > {log:q} 2>&1"
