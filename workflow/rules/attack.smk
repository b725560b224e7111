# Stage 4: item-replacement attacks (section 5.6) against every trained model.


rule attack:
    input:
        unpack(data_files),
        model=lambda wildcards: run_file("models", wildcards),
    output:
        paths.run_template("attacks", "adv_cas"),
    log:
        "logs/attack/{dataset}/{model}/seed{seed}/{method}/eps{epsilon}.log",
    benchmark:
        paths.benchmark_template("attack", "adv_cas")
    wildcard_constraints:
        method="|".join(EPSILON_METHODS),
    conda:
        ENV
    threads: 1 if USE_GPU else config["threads"]
    resources:
        gpu=1 if USE_GPU else 0,
        device=config["device"],
    params:
        hparams=stage_params("attack"),
        data=lambda wildcards, input: Path(input.sequences).parent,
    shell:
        "python -m catrec attack --data {params.data:q} --hparams {params.hparams:q} --dataset {wildcards.dataset}"
        " --model {wildcards.model} --method {wildcards.method} --device {resources.device} --threads {threads}"
        " --checkpoint {input.model:q} --output {output:q} > {log:q} 2>&1"


use rule attack as attack_clean with:
    output:
        paths.run_template("attacks", "continued"),
    log:
        "logs/attack/{dataset}/{model}/seed{seed}/{method}.log",
    benchmark:
        paths.benchmark_template("attack", "continued")
    wildcard_constraints:
        method="|".join(CLEAN_METHODS),
