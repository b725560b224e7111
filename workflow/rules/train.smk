# Stage 2: pretraining of the base models (Eq. 3.5), one per seed, resumable from results/state/.


rule pretrain:
    input:
        unpack(PLAN.data_files),
    output:
        model=paths.pretrain_template("models"),
        curve=paths.pretrain_template("curves"),
        metrics=paths.pretrain_template("metrics"),
    log:
        "logs/pretrain/{dataset}/{model}/seed{seed}.log",
    benchmark:
        paths.benchmark_template("pretrain")
    conda:
        ENV
    threads: PLAN.threads
    resources:
        **PLAN.resources,
    params:
        hparams=PLAN.stage_params("pretrain"),
        data=PLAN.data_dir,
        state=PLAN.state_dir,
    shell:
        "python -m catrec pretrain --data {params.data:q} --hparams {params.hparams:q} --dataset {wildcards.dataset}"
        " --model {wildcards.model} --device {resources.device} --threads {threads}"
        " --checkpoint {output.model:q} --curve {output.curve:q} --metrics {output.metrics:q}"
        " --state-dir {params.state:q} > {log:q} 2>&1"


# train.stack with several seeds: the pretrainings of every seed, one job per dataset x model (one computation,
# catrec.models.stack); each run writes exactly the files its own job would.
if PLAN.pretrain_stacked:

    ruleorder: pretrain_stack > pretrain

    rule pretrain_stack:
        input:
            unpack(PLAN.data_files),
        output:
            models=PLAN.pretrain_stack_files("models"),
            curves=PLAN.pretrain_stack_files("curves"),
            metrics=PLAN.pretrain_stack_files("metrics"),
        log:
            f"logs/pretrain/{PLAN.pretrain_stack_run}.log",
        benchmark:
            PLAN.pretrain_stack_benchmark()
        conda:
            ENV
        threads: PLAN.threads
        resources:
            **PLAN.resources,
        params:
            runs=PLAN.pretrain_stack_runs,
            data=PLAN.data_dir,
            max_stack=PLAN.max_stack_arg,
        shell:
            "python -m catrec pretrain-stack --data {params.data:q} --dataset {wildcards.dataset}"
            " --model {wildcards.model} --runs {params.runs:q} {params.max_stack}"
            " --device {resources.device} --threads {threads} > {log:q} 2>&1"
