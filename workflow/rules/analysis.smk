# Stage 6, post hoc (nothing is trained): the perturbation profile of each run of a method that perturbs S
# (issue 10), per-user test metrics of every run of Table 2, and their significance tests; the robustness
# tests of the per-user metrics under attack (written by the attack rules).

# Training batches each profile measures (``catrec profile --batches``).
PROFILE_BATCHES = 20


rule profile:
    input:
        unpack(PLAN.profile_inputs),
    output:
        paths.epsilon_template("profiles"),
    log:
        "logs/profile/{dataset}/{model}/seed{seed}/{method}/eps{epsilon}.log",
    benchmark:
        paths.benchmark_template("profile", "epsilon")
    wildcard_constraints:
        method="|".join(SEQUENCE_METHODS),
    conda:
        ENV
    threads: PLAN.threads
    resources:
        **PLAN.resources,
    params:
        # The run's own fine-tuning settings: the loss is rebuilt exactly as it was trained with.
        hparams=PLAN.stage_params("finetune"),
        data=PLAN.data_dir,
        cascade=PLAN.cascade_arg,
        batches=PROFILE_BATCHES,
    shell:
        "python -m catrec profile --data {params.data:q} --hparams {params.hparams:q} --dataset {wildcards.dataset}"
        " --model {wildcards.model} --method {wildcards.method} --checkpoint {input.model:q}"
        " {params.cascade} --batches {params.batches} --device {resources.device} --threads {threads}"
        " --output {output:q} > {log:q} 2>&1"


rule user_metrics:
    input:
        unpack(PLAN.data_files),
        model=PLAN.model_file,
    output:
        paths.epsilon_template("users"),
    log:
        "logs/user_metrics/{dataset}/{model}/seed{seed}/{method}/eps{epsilon}.log",
    benchmark:
        paths.benchmark_template("user_metrics", "epsilon")
    wildcard_constraints:
        method="|".join(EPSILON_METHODS),
    conda:
        ENV
    threads: PLAN.threads
    resources:
        **PLAN.resources,
    params:
        data=PLAN.data_dir,
        max_len=PLAN.max_len,
    shell:
        "python -m catrec user-metrics --data {params.data:q} --max-len {params.max_len} --model {wildcards.model}"
        " --checkpoint {input.model:q} --device {resources.device} --threads {threads}"
        " --output {output:q} > {log:q} 2>&1"


use rule user_metrics as user_metrics_clean with:
    output:
        paths.clean_template("users"),
    log:
        "logs/user_metrics/{dataset}/{model}/seed{seed}/{method}.log",
    benchmark:
        paths.benchmark_template("user_metrics", "clean")
    wildcard_constraints:
        method="|".join(CLEAN_METHODS),


rule significance:
    input:
        PLAN.runs("users"),
    output:
        multiext(paths.SIGNIFICANCE, ".csv", ".md"),
        html=report(
            f"{paths.SIGNIFICANCE}.html",
            caption="../report/significance.rst",
            category="Tables",
            labels={
                "table": "Table 2 significance",
                **PLAN.run_labels(PLAN.runs("users")),
            },
        ),
    log:
        "logs/significance.log",
    conda:
        ENV
    params:
        prefix=lambda wildcards, output: Path(output[0]).with_suffix(""),
    shell:
        "python -m catrec significance --users {input:q} --output-prefix {params.prefix:q} > {log:q} 2>&1"


rule robustness:
    input:
        PLAN.runs("attack_users"),
    output:
        multiext(paths.ROBUSTNESS, ".csv", ".md"),
    log:
        "logs/robustness.log",
    conda:
        ENV
    params:
        prefix=lambda wildcards, output: Path(output[0]).with_suffix(""),
    shell:
        "python -m catrec robustness --users-attacks {input:q} --output-prefix {params.prefix:q} > {log:q} 2>&1"
