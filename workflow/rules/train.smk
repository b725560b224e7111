# Stage 2: pretraining of the base models (Eq. 3.5), resumable from results/state/.


rule pretrain:
    input:
        unpack(data_files),
    output:
        model="results/models/{dataset}/{model}/pretrain.pt",
        curve="results/curves/{dataset}/{model}/pretrain.csv",
        metrics="results/metrics/{dataset}/{model}/pretrain.json",
    log:
        "logs/pretrain/{dataset}/{model}.log",
    conda:
        ENV
    threads: 1 if USE_GPU else config["threads"]
    resources:
        gpu=1 if USE_GPU else 0,
    params:
        hparams=lambda wildcards: hparams(wildcards, "pretrain"),
        data=lambda wildcards, input: Path(input.sequences).parent,
        state="results/state/{dataset}/{model}/pretrain",
    shell:
        "catrec pretrain --data {params.data} --hparams {params.hparams:q} --dataset {wildcards.dataset}"
        " --model {wildcards.model} --checkpoint {output.model} --curve {output.curve}"
        " --metrics {output.metrics} --state-dir {params.state} > {log} 2>&1"
