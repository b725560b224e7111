# Stage 3: cascade matrices (Eq. 4.11) and fine-tuning with each method (Eq. 4.6-4.10). Runs of the methods
# that take epsilon have it in their paths, so the paper's epsilon and the epsilon sweep share one rule.


rule cascade:
    input:
        unpack(data_files),
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
        data=lambda wildcards, input: Path(input.sequences).parent,
        max_len=lambda wildcards: config["datasets"][wildcards.dataset]["max_len"],
        batch_size=config["train"]["batch_size"],
    shell:
        "python -m catrec cascade --data {params.data:q} --max-len {params.max_len} --batch-size {params.batch_size}"
        " --terms {wildcards.terms} --output {output:q} > {log:q} 2>&1"


rule finetune:
    input:
        unpack(finetune_inputs),
    output:
        model=paths.run_template("models", "adv_cas"),
        curve=paths.run_template("curves", "adv_cas"),
        metrics=paths.run_template("metrics", "adv_cas"),
    log:
        "logs/finetune/{dataset}/{model}/seed{seed}/{method}/eps{epsilon}.log",
    benchmark:
        paths.benchmark_template("finetune", "adv_cas")
    wildcard_constraints:
        method="|".join(EPSILON_METHODS),
    conda:
        ENV
    threads: 1 if USE_GPU else config["threads"]
    resources:
        gpu=1 if USE_GPU else 0,
        device=config["device"],
    params:
        hparams=stage_params("finetune"),
        data=lambda wildcards, input: Path(input.sequences).parent,
        cascade=cascade_arg,
        state=state_dir,
    shell:
        "python -m catrec finetune --data {params.data:q} --hparams {params.hparams:q} --dataset {wildcards.dataset}"
        " --model {wildcards.model} --method {wildcards.method} --pretrained {input.pretrained:q}"
        " {params.cascade} --device {resources.device} --threads {threads}"
        " --checkpoint {output.model:q} --curve {output.curve:q} --metrics {output.metrics:q}"
        " --state-dir {params.state:q} > {log:q} 2>&1"


# base (the pretrained model, evaluated) and continued (clean fine-tuning) take no epsilon.
use rule finetune as finetune_clean with:
    output:
        model=paths.run_template("models", "continued"),
        curve=paths.run_template("curves", "continued"),
        metrics=paths.run_template("metrics", "continued"),
    log:
        "logs/finetune/{dataset}/{model}/seed{seed}/{method}.log",
    benchmark:
        paths.benchmark_template("finetune", "continued")
    wildcard_constraints:
        method="|".join(CLEAN_METHODS),


# train.stack: the runs of STACKED at the paper's epsilon, one job per dataset x model x seed (one computation,
# catrec.models.stack); each run writes exactly the files its own job would.
if STACKED:

    ruleorder: finetune_stack > finetune

    rule finetune_stack:
        input:
            unpack(stack_inputs),
        output:
            models=stack_files("models"),
            curves=stack_files("curves"),
            metrics=stack_files("metrics"),
        log:
            f"logs/finetune/{STACK_RUN}.log",
        benchmark:
            f"{paths.BENCHMARKS}/finetune/{STACK_RUN}.tsv"
        conda:
            ENV
        threads: 1 if USE_GPU else config["threads"]
        resources:
            gpu=1 if USE_GPU else 0,
            device=config["device"],
        params:
            runs=stack_runs,
            data=lambda wildcards, input: Path(input.sequences).parent,
            max_stack=max_stack_arg,
        shell:
            "python -m catrec finetune-stack --data {params.data:q} --dataset {wildcards.dataset}"
            " --model {wildcards.model} --pretrained {input.pretrained:q} --runs {params.runs:q}"
            " {params.max_stack} --device {resources.device} --threads {threads} > {log:q} 2>&1"
