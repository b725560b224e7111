# Stage 4: item-replacement attacks (section 5.6) against every trained model: the mean metrics of each
# attack setting, and each user's (the input of the robustness tests, analysis.smk).


rule attack:
    input:
        unpack(PLAN.data_files),
        model=PLAN.model_file,
    output:
        attacks=paths.epsilon_template("attacks"),
        users=paths.epsilon_template("attack_users"),
    log:
        "logs/attack/{dataset}/{model}/seed{seed}/{method}/eps{epsilon}.log",
    benchmark:
        paths.benchmark_template("attack", "epsilon")
    wildcard_constraints:
        method="|".join(EPSILON_METHODS),
    conda:
        ENV
    threads: PLAN.threads
    resources:
        **PLAN.resources,
    params:
        hparams=PLAN.stage_params("attack"),
        data=PLAN.data_dir,
    shell:
        "python -m catrec attack --data {params.data:q} --hparams {params.hparams:q} --dataset {wildcards.dataset}"
        " --model {wildcards.model} --method {wildcards.method} --device {resources.device} --threads {threads}"
        " --checkpoint {input.model:q} --output {output.attacks:q} --users {output.users:q} > {log:q} 2>&1"


use rule attack as attack_clean with:
    output:
        attacks=paths.clean_template("attacks"),
        users=paths.clean_template("attack_users"),
    log:
        "logs/attack/{dataset}/{model}/seed{seed}/{method}.log",
    benchmark:
        paths.benchmark_template("attack", "clean")
    wildcard_constraints:
        method="|".join(CLEAN_METHODS),
