# Stage 5: tidy summaries, Table 2 and the figures. Plot rules read only tidy CSV, so restyling a figure never
# retrains a model. The outputs marked report() (here, in data.smk and analysis.smk) make up the HTML report of
# `snakemake --report`, each captioned by its workflow/report/*.rst.


rule collect:
    input:
        PLAN.summary_inputs,
    output:
        paths.SUMMARY,
    log:
        "logs/collect/{summary}.log",
    wildcard_constraints:
        summary="|".join(PLAN.summaries),
    conda:
        ENV
    params:
        kind=PLAN.summary_kind,
    shell:
        "python -m catrec collect {params.kind} {input:q} --output {output:q} > {log:q} 2>&1"


rule table2:
    input:
        metrics="results/summary/metrics.csv",
        paper=PAPER_DIR / "table2.csv",
    output:
        multiext("results/tables/table2", ".csv", ".md", ".tex"),
        multiext("results/tables/table2_vs_paper", ".csv", ".md"),
        html=report(
            "results/tables/table2.html",
            caption="../report/table2.rst",
            category="Tables",
            labels={"table": "Table 2", **PLAN.table2_labels},
        ),
        vs_paper=report(
            "results/tables/table2_vs_paper.html",
            caption="../report/table2_vs_paper.rst",
            category="Tables",
            labels={"table": "Table 2 vs the paper", **PLAN.table2_labels},
        ),
    log:
        "logs/table2.log",
    conda:
        ENV
    shell:
        "python -m catrec table2 --metrics {input.metrics:q} --paper {input.paper:q} --output-prefix results/tables"
        " > {log:q} 2>&1"


rule plot:
    input:
        PLAN.figure_summary,
    output:
        pdf="figures/{figure}.pdf",
        # The PNG, not the PDF: the report shows images inline, a PDF only through the browser's viewer.
        png=report(
            "figures/{figure}.png",
            caption="../report/figures.rst",
            category=PLAN.figure_category,
            labels=PLAN.figure_labels,
        ),
    log:
        "logs/plot/{figure}.log",
    wildcard_constraints:
        figure="|".join(PLAN.figures),
    conda:
        ENV
    params:
        kind=lambda wildcards: FIGURE_KINDS[wildcards.figure],
        options=PLAN.plot_options,
    shell:
        "python -m catrec plot {params.kind} --input {input:q} --output {output.pdf:q} {params.options} > {log:q} 2>&1"


# The cost of every training, fine-tuning, cascade, attack, profile and user-metrics job, from their
# benchmark files. Its inputs are the jobs' outputs, not the benchmark files: a job that ran before benchmarks
# were recorded is not re-run for one (--allow-missing leaves its row without numbers).
rule compute:
    input:
        list(PLAN.compute_jobs.values()),
    output:
        multiext(paths.COMPUTE, ".csv", ".md"),
        html=report(
            f"{paths.COMPUTE}.html",
            caption="../report/compute.rst",
            category="Compute",
            labels={"table": "Compute", "jobs": len(PLAN.compute_jobs)},
        ),
    log:
        "logs/compute.log",
    conda:
        ENV
    params:
        benchmarks=shlex.join(PLAN.compute_jobs),
        prefix=lambda wildcards, output: Path(output[0]).with_suffix(""),
    shell:
        "python -m catrec compute {params.benchmarks} --allow-missing --output-prefix {params.prefix:q}"
        " > {log:q} 2>&1"
