# catrec: Cascade-guided Adversarial Training (Tan et al.), end to end. From the repository root, after
# `make install` and `source .venv/bin/activate` (the rules call `python -m catrec` on this checkout's src/):
#   snakemake --cores 8 all                                   the paper's experiment (config/config.yaml)
#   snakemake --cores all all --configfile config/smoke.yaml  the toy experiment (what `make demo` runs)
#   snakemake --cores 8 figures/fig6.pdf                      one figure, and only the jobs it needs
#   snakemake -n all                                          the plan of the paper's experiment, nothing run
#   snakemake --report results/report.html                    the HTML report of the results (`make report`)
# A --configfile replaces config/config.yaml instead of being merged into it. Keys: config/README.md.

from snakemake.utils import min_version

min_version("9.0")


if not workflow.config_settings.configfiles:

    configfile: f"{workflow.basedir}/config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/attack.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/report.smk"


# Run where Snakemake runs, never as cluster jobs: downloads need the internet, which compute nodes often lack;
# the others only write or summarise small files.
localrules:
    all,
    download,
    generate_toy,
    extract,
    table1,
    collect,
    table2,
    plot,
    compute,
    significance,
    robustness,


rule all:
    default_target: True
    input:
        PLAN.final_targets(),
