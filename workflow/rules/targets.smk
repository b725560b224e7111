# What `all`, the report and the figure targets need: run files by kind, the summaries each table and
# figure reads, the figures with their report places, and the final targets.


def runs(
    kind,
    datasets=DATASETS,
    models=MODELS,
    methods=METHODS,
    seeds=SEEDS,
    epsilon=EPSILON,
):
    """Files of the runs of ``methods`` (at ``epsilon`` where the method takes it), every seed."""
    return [
        paths.run_file(kind, dataset=d, model=m, seed=s, method=method, epsilon=epsilon)
        for d in datasets
        for m in models
        for method in methods
        for s in seeds
    ]


def run_labels(files):
    """Report labels: the datasets, models and methods of the run files a table or figure is made from.

    Methods read "all" where every configured method is among them (curves add pretraining).
    """
    identities = [paths.parse_run(path) for path in files]

    def names(key):
        return list(dict.fromkeys(identity[key] for identity in identities))

    methods = names("method")
    return {
        "datasets": ", ".join(names("dataset")),
        "models": ", ".join(names("model")),
        "methods": "all" if set(METHODS) <= set(methods) else ", ".join(methods),
    }


def curve_files():
    return runs("curves", methods=["pretrain", *METHODS])


def epsilon_files():
    """Metrics of adv_cas at each swept epsilon; the paper's epsilon is the adv_cas run itself."""
    sweep = config["epsilon_sweep"]
    return [
        path
        for eps in sweep["values"]
        for path in runs(
            "metrics", sweep["datasets"], sweep["models"], ["adv_cas"], epsilon=eps
        )
    ]


# The perturbation profile covers the configured methods that perturb the sequence input S.
PROFILE_METHODS = [method for method in METHODS if method in SEQUENCE_METHODS]
# Significance compares adv_cas with every other method of Table 2.
SIGNIFICANCE = (
    [paths.SIGNIFICANCE + ext for ext in (".csv", ".md", ".html")]
    if SIGNIFICANCE_REFERENCE in METHODS and len(METHODS) > 1
    else []
)

FIG5 = config["figures"]["fig5"]
FIG6 = config["figures"]["fig6"]

# Each summary is one tidy CSV: (kind of input, input files). Figures get their own narrow summaries so that
# `snakemake figures/fig6.pdf` trains and attacks only what Figure 6 shows.
SUMMARIES = {
    "metrics": ("metrics", runs("metrics")),
    "curves": ("curves", curve_files()),
    "epsilon": ("metrics", epsilon_files()),
    "attacks": ("attacks", runs("attacks")),
    "fig5_attacks": (
        "attacks",
        runs("attacks", [FIG5["dataset"]], [FIG5["model"]], FIG5["methods"]),
    ),
    "fig6_attacks": (
        "attacks",
        runs("attacks", DATASETS, [FIG6["model"]], FIG6["methods"]),
    ),
    "fig6_gru4rec_attacks": (
        "attacks",
        runs("attacks", DATASETS, [FIG6["supplementary_model"]], FIG6["methods"]),
    ),
    "perturbation_profile": ("profiles", runs("profiles", methods=PROFILE_METHODS)),
}

# figure target -> (summary it reads, plot options); the plot kind is catrec.vocabulary.FIGURE_KINDS.
FIGURES = {
    "fig3": ("curves", []),
    "fig4": ("epsilon", []),
    "fig5": (
        "fig5_attacks",
        [
            f"dataset={FIG5['dataset']}",
            f"model={FIG5['model']}",
            f"methods={','.join(FIG5['methods'])}",
        ],
    ),
    "fig6": (
        "fig6_attacks",
        [f"model={FIG6['model']}", f"methods={','.join(FIG6['methods'])}"],
    ),
    "fig6_gru4rec": (
        "fig6_gru4rec_attacks",
        [
            f"model={FIG6['supplementary_model']}",
            f"methods={','.join(FIG6['methods'])}",
        ],
    ),
    "fig_perturbation": ("perturbation_profile", []),
}
assert set(FIGURES) == set(
    FIGURE_KINDS
), "every figure of catrec.vocabulary has its data here"

# figure target -> (report category, name in the report): the paper's figures, and our perturbation profile.
REPORT_FIGURES = {
    "fig3": ("Figures", "Figure 3"),
    "fig4": ("Figures", "Figure 4"),
    "fig5": ("Figures", "Figure 5"),
    "fig6": ("Figures", "Figure 6"),
    "fig6_gru4rec": ("Figures", "Figure 6, supplement"),
    "fig_perturbation": ("Analysis", "Perturbation profile"),
}
assert set(REPORT_FIGURES) == set(FIGURES), "every figure has its place in the report"


def figure_labels(wildcards):
    """Report labels of a figure: its name, and the datasets, models and methods it draws."""
    summary = FIGURES[wildcards.figure][0]
    name = REPORT_FIGURES[wildcards.figure][1]
    return {"figure": name, **run_labels(SUMMARIES[summary][1])}


# The benchmarked stage whose jobs write the run files of each kind (besides pretrain and finetune).
STAGE_OF_KIND = {"attacks": "attack", "profiles": "profile", "users": "user_metrics"}


def compute_jobs():
    """{benchmark file: one output of its job} for every job of BENCHMARK_STAGES that `all` runs.

    Found from the run files the summaries and significance read: each needs its run's pretraining, its
    fine-tuning and (adv_cas*) its cascade, and is itself the output of an attack, profile or user_metrics job.
    """
    jobs = {}
    users = runs("users") if SIGNIFICANCE else []
    for kind, files in [*SUMMARIES.values(), ("users", users)]:
        for path in files:
            run = paths.parse_run(path)
            method = run["method"]
            epsilon = None if math.isnan(run["epsilon"]) else run["epsilon"]
            seed_run = {
                "dataset": run["dataset"],
                "model": run["model"],
                "seed": run["seed"],
            }
            pretrain = paths.run_file("metrics", **seed_run, method="pretrain")
            pretraining = paths.benchmark_file("pretrain", **seed_run)
            if PRETRAIN_STACKED:
                # One stacked job pretrained this seed and the others.
                pretraining = f"{paths.BENCHMARKS}/pretrain/{PRETRAIN_STACK_RUN.format(**seed_run)}.tsv"
            jobs[pretraining] = pretrain
            if method == "pretrain":
                continue
            this_run = {**seed_run, "method": method, "epsilon": epsilon}
            finetune = paths.benchmark_file("finetune", **this_run)
            if method in STACKED and epsilon == float(EPSILON):
                # One stacked job trained this run and the others of its seed.
                finetune = (
                    f"{paths.BENCHMARKS}/finetune/{STACK_RUN.format(**seed_run)}.tsv"
                )
            jobs[finetune] = paths.run_file("metrics", **this_run)
            terms = CASCADE_TERMS_OF.get(method)
            if terms:
                cascade = {"dataset": run["dataset"], "terms": terms}
                jobs[paths.benchmark_file("cascade", **cascade)] = paths.CASCADE.format(
                    **cascade
                )
            if kind in STAGE_OF_KIND:
                jobs[paths.benchmark_file(STAGE_OF_KIND[kind], **this_run)] = path
    return jobs


def plot_options(wildcards):
    return shlex.join(
        arg for option in FIGURES[wildcards.figure][1] for arg in ("--option", option)
    )


def final_targets():
    tables = expand(
        "results/tables/{table}.{ext}",
        table=["table1", "table2"],
        ext=["csv", "md", "tex", "html"],
    )
    tables += expand("results/tables/table2_vs_paper.{ext}", ext=["csv", "md", "html"])
    # Without a method that perturbs S there is no profile to draw.
    drawn = [
        f for f in FIGURES if PROFILE_METHODS or FIGURES[f][0] != "perturbation_profile"
    ]
    figures = expand("figures/{figure}.{ext}", figure=drawn, ext=["pdf", "png"])
    summaries = ["results/summary/attacks.csv"]
    if PROFILE_METHODS:
        summaries.append(paths.SUMMARY.format(summary="perturbation_profile"))
    return tables + SIGNIFICANCE + COMPUTE + figures + summaries
