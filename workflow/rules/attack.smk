# Stage 4: item-replacement attacks (section 5.6) against every trained model.


rule attack:
    input:
        unpack(data_files),
        model="results/models/{dataset}/{model}/{method}.pt",
    output:
        "results/attacks/{dataset}/{model}/{method}.csv",
    log:
        "logs/attack/{dataset}/{model}/{method}.log",
    wildcard_constraints:
        method="|".join(METHODS),
    conda:
        ENV
    threads: 1 if USE_GPU else config["threads"]
    resources:
        gpu=1 if USE_GPU else 0,
    params:
        hparams=lambda wildcards: hparams(wildcards, "attack"),
        data=lambda wildcards, input: Path(input.sequences).parent,
    shell:
        "catrec attack --data {params.data} --hparams {params.hparams:q} --dataset {wildcards.dataset}"
        " --model {wildcards.model} --method {wildcards.method} --checkpoint {input.model}"
        " --output {output} > {log} 2>&1"
