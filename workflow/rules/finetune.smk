# Stage 3: cascade matrices (Eq. 4.11) and fine-tuning with each method (Eq. 4.6-4.10), the epsilon sweep.


rule cascade:
    input:
        unpack(data_files),
    output:
        "results/cascade/{dataset}/{terms}.pt",
    log:
        "logs/cascade/{dataset}/{terms}.log",
    wildcard_constraints:
        terms="both|temporal|cross",
    conda:
        ENV
    params:
        data=lambda wildcards, input: Path(input.sequences).parent,
        max_len=lambda wildcards: config["datasets"][wildcards.dataset]["max_len"],
        batch_size=config["train"]["batch_size"],
    shell:
        "catrec cascade --data {params.data} --max-len {params.max_len} --batch-size {params.batch_size}"
        " --terms {wildcards.terms} --output {output} > {log} 2>&1"


rule finetune:
    input:
        unpack(finetune_inputs),
    output:
        model="results/models/{dataset}/{model}/{method}.pt",
        curve="results/curves/{dataset}/{model}/{method}.csv",
        metrics="results/metrics/{dataset}/{model}/{method}.json",
    log:
        "logs/finetune/{dataset}/{model}/{method}.log",
    wildcard_constraints:
        method="|".join(METHODS),
    conda:
        ENV
    threads: 1 if USE_GPU else config["threads"]
    resources:
        gpu=1 if USE_GPU else 0,
    params:
        hparams=lambda wildcards: hparams(wildcards, "finetune"),
        method="{method}",
        data=lambda wildcards, input: Path(input.sequences).parent,
        cascade=cascade_arg,
        state="results/state/{dataset}/{model}/{method}",
    shell:
        "catrec finetune --data {params.data} --hparams {params.hparams:q} --dataset {wildcards.dataset}"
        " --model {wildcards.model} --method {params.method} --pretrained {input.pretrained} {params.cascade}"
        " --checkpoint {output.model} --curve {output.curve} --metrics {output.metrics}"
        " --state-dir {params.state} > {log} 2>&1"


use rule finetune as epsilon_sweep with:
    input:
        unpack(data_files),
        pretrained="results/models/{dataset}/{model}/pretrain.pt",
        cascade="results/cascade/{dataset}/both.pt",
    output:
        model="results/sweeps/epsilon/{dataset}/{model}/eps{eps}.pt",
        curve="results/sweeps/epsilon/{dataset}/{model}/eps{eps}.csv",
        metrics="results/sweeps/epsilon/{dataset}/{model}/eps{eps}.json",
    log:
        "logs/epsilon_sweep/{dataset}/{model}/eps{eps}.log",
    wildcard_constraints:
        eps="[0-9.e+-]+",
    params:
        hparams=lambda wildcards: hparams(wildcards, "finetune", epsilon=wildcards.eps),
        method="adv_cas",
        data=lambda wildcards, input: Path(input.sequences).parent,
        cascade=cascade_arg,
        state="results/state/{dataset}/{model}/epsilon-{eps}",
