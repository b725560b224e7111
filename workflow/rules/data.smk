# Stage 1: raw data -> results/data/{dataset}/sequences.txt, and Table 1.


rule download:
    output:
        "results/raw/{dataset}/{filename}",
    log:
        "logs/download/{dataset}/{filename}.log",
    wildcard_constraints:
        dataset=PLAN.sources_with("urls"),
    conda:
        ENV
    params:
        args=PLAN.download_args,
    shell:
        "python -m catrec download {params.args} --output {output:q} > {log:q} 2>&1"


rule generate_toy:
    output:
        "results/raw/{dataset}/{filename}",
    log:
        "logs/generate_toy/{dataset}/{filename}.log",
    wildcard_constraints:
        dataset=PLAN.sources_with("generate"),
    conda:
        ENV
    params:
        args=PLAN.toy_args,
    shell:
        "python -m catrec toy {params.args} --output {output:q} > {log:q} 2>&1"


rule extract:
    input:
        PLAN.raw_path,
    output:
        "results/interim/{dataset}/{member}",
    log:
        "logs/extract/{dataset}/{member}.log",
    conda:
        ENV
    params:
        member=lambda wildcards: PLAN.dataset(wildcards)["source"]["member"],
    shell:
        "python -m catrec extract --archive {input:q} --member {params.member:q} --output {output:q} > {log:q} 2>&1"


rule preprocess:
    input:
        PLAN.preprocess_input,
    output:
        sequences="results/data/{dataset}/sequences.txt",
        stats="results/data/{dataset}/stats.json",
        user_map="results/data/{dataset}/user_map.tsv",
        item_map="results/data/{dataset}/item_map.tsv",
    log:
        "logs/preprocess/{dataset}.log",
    conda:
        ENV
    params:
        format=lambda wildcards: config["datasets"][wildcards.dataset]["format"],
        min_count=lambda wildcards: config["datasets"][wildcards.dataset].get(
            "min_count", 5
        ),
        output_dir=lambda wildcards, output: Path(output.sequences).parent,
        content=lambda wildcards: SOURCE_SHA256.get(wildcards.dataset, ""),
    shell:
        "python -m catrec preprocess --format {params.format:q} --input {input:q} --output-dir {params.output_dir:q}"
        " --min-count {params.min_count:q} > {log:q} 2>&1"


rule table1:
    input:
        stats=expand("results/data/{dataset}/stats.json", dataset=PLAN.datasets),
        paper=PAPER_DIR / "table1.csv",
    output:
        multiext("results/tables/table1", ".csv", ".md", ".tex"),
        html=report(
            "results/tables/table1.html",
            caption="../report/table1.rst",
            category="Tables",
            labels={"table": "Table 1", "datasets": ", ".join(PLAN.datasets)},
        ),
    log:
        "logs/table1.log",
    conda:
        ENV
    params:
        stats=shlex.join(
            arg
            for d in PLAN.datasets
            for arg in ("--stats", f"{d}=results/data/{d}/stats.json")
        ),
    shell:
        "python -m catrec table1 {params.stats} --paper {input.paper:q}"
        " --output-prefix results/tables/table1 > {log:q} 2>&1"
