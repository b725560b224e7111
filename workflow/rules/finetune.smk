# Stage 3: cascade matrices (Eq. 4.11) and fine-tuning with each method (Eq. 4.6-4.10). Runs of the methods
# that take epsilon have it in their paths, so the paper's epsilon and the epsilon sweep share one rule.


rule cascade:
    input:
        unpack(PLAN.data_files),
    output:
        paths.CASCADE,
    log:
        "logs/cascade/{dataset}/{terms}.log",
    benchmark:
        paths.benchmark_template("cascade")
    wildcard_constraints:
        terms="|".join(CASCADE_TERMS),
    conda:
        ENV
    params:
        data=PLAN.data_dir,
        max_len=PLAN.max_len,
        batch_size=config["train"]["batch_size"],
    shell:
        "python -m catrec cascade --data {params.data:q} --max-len {params.max_len} --batch-size {params.batch_size}"
        " --terms {wildcards.terms} --output {output:q} > {log:q} 2>&1"


rule finetune:
    input:
        unpack(PLAN.finetune_inputs),
    output:
        model=paths.epsilon_template("models"),
        curve=paths.epsilon_template("curves"),
        metrics=paths.epsilon_template("metrics"),
    log:
        "logs/finetune/{dataset}/{model}/seed{seed}/{method}/eps{epsilon}.log",
    benchmark:
        paths.benchmark_template("finetune", "epsilon")
    wildcard_constraints:
        method="|".join(EPSILON_METHODS),
    conda:
        ENV
    threads: PLAN.threads
    resources:
        **PLAN.resources,
    params:
        hparams=PLAN.stage_params("finetune"),
        data=PLAN.data_dir,
        cascade=PLAN.cascade_arg,
        state=PLAN.state_dir,
    shell:
        "python -m catrec finetune --data {params.data:q} --hparams {params.hparams:q} --dataset {wildcards.dataset}"
        " --model {wildcards.model} --method {wildcards.method} --pretrained {input.pretrained:q}"
        " {params.cascade} --device {resources.device} --threads {threads}"
        " --checkpoint {output.model:q} --curve {output.curve:q} --metrics {output.metrics:q}"
        " --state-dir {params.state:q} > {log:q} 2>&1"


# base (the pretrained model, evaluated) and continued (clean fine-tuning) take no epsilon.
use rule finetune as finetune_clean with:
    output:
        model=paths.clean_template("models"),
        curve=paths.clean_template("curves"),
        metrics=paths.clean_template("metrics"),
    log:
        "logs/finetune/{dataset}/{model}/seed{seed}/{method}.log",
    benchmark:
        paths.benchmark_template("finetune", "clean")
    wildcard_constraints:
        method="|".join(CLEAN_METHODS),


# train.stack: the runs of PLAN.stacked at the paper's epsilon, one job per dataset x model x seed (one job,
# catrec.models.stack); each run writes exactly the files its own job would.
if PLAN.stacked:

    ruleorder: finetune_stack > finetune

    rule finetune_stack:
        input:
            unpack(PLAN.stack_inputs),
        output:
            models=PLAN.stack_files("models"),
            curves=PLAN.stack_files("curves"),
            metrics=PLAN.stack_files("metrics"),
        log:
            f"logs/finetune/{PLAN.stack_run}.log",
        benchmark:
            PLAN.stack_benchmark()
        conda:
            ENV
        threads: PLAN.threads
        resources:
            **PLAN.resources,
        params:
            runs=PLAN.stack_runs,
            data=PLAN.data_dir,
            max_stack=PLAN.max_stack_arg,
        shell:
            "python -m catrec finetune-stack --data {params.data:q} --dataset {wildcards.dataset}"
            " --model {wildcards.model} --pretrained {input.pretrained:q} --runs {params.runs:q}"
            " {params.max_stack} --device {resources.device} --threads {threads} > {log:q} 2>&1"
