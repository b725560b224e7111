# Config validation, target lists and input functions shared by the rules.
# No config value reaches a shell line unquoted: functions that build arguments return them shell-quoted
# (shlex.join) and rules quote paths with {...:q}.

import json
import math
import shlex
import sys
from pathlib import Path

# The catrec code is reached from the checkout, not from an installed package: envs/catrec.yaml holds only
# published packages (Snakemake copies it to .snakemake/conda/, where a relative `pip install -e ..` would
# find nothing), so neither Snakemake itself nor a conda job could import an installed catrec.
# This process (the imports below) gets src/ on sys.path ...
CATREC_SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, CATREC_SRC)
# ... and every job gets it on PYTHONPATH for `python -m catrec`. Set in the shell command, not in
# os.environ: Snakemake drops PYTHONPATH from the environment of conda jobs, but the prefix runs after the
# environment is activated. Cluster jobs re-parse the Snakefile, so they set it too. Braces are doubled
# because Snakemake formats the prefix; `set -euo pipefail` is Snakemake's default prefix, which this replaces.
_PYTHONPATH = shlex.quote(CATREC_SRC).replace("{", "{{").replace("}", "}}")
shell.prefix(
    f"set -euo pipefail; export PYTHONPATH={_PYTHONPATH}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
)

from catrec import paths
from catrec.config import plans_gpu, plans_stack, stage_hparams, validate_config
from catrec.errors import CatrecError
from catrec.vocabulary import (
    CASCADE_TERMS,
    CASCADE_TERMS_OF,
    CLEAN_METHODS,
    EPSILON_METHODS,
    FIGURE_KINDS,
    MODELS as MODEL_NAMES,
    SEQUENCE_METHODS,
    SIGNIFICANCE_REFERENCE,
)

try:
    validate_config(config)
except CatrecError as error:
    raise WorkflowError(str(error)) from None


ENV = "../../envs/catrec.yaml"
# Repository files read by rules, resolved from the Snakefile so `--directory` elsewhere works.
PAPER_DIR = Path(workflow.basedir) / "config" / "paper"
DATASETS = list(config["datasets"])
MODELS = config["models"]
METHODS = config["methods"]
SEEDS = config["seeds"]
# The paper's epsilon: Table 2 and the figures show the runs at this value.
EPSILON = paths.epsilon_label(config["adversarial"]["epsilon"])
# Model jobs on a GPU declare gpu=1; profiles/default (loaded by Snakemake itself) caps the total at one.
USE_GPU = plans_gpu(config["device"])
# train.stack: the runs one stacked job trains per dataset x model x seed, at the paper's epsilon (the sweep's
# other values and continued stay jobs of their own); empty when runs are not stacked.
STACKED = [
    method
    for method in METHODS
    if method in EPSILON_METHODS
    and plans_stack(config["train"]["stack"], config["device"])
]
STACK_RUN = paths.stack_run(STACKED, EPSILON)
# train.stack with several seeds: the pretrainings of one dataset x model, one per seed, as one stacked job.
PRETRAIN_STACKED = len(SEEDS) > 1 and plans_stack(
    config["train"]["stack"], config["device"]
)
PRETRAIN_STACK_RUN = paths.seed_stack_run(SEEDS)


wildcard_constraints:
    model="|".join(MODEL_NAMES),
    seed=r"\d+",
    epsilon=paths.EPSILON_PATTERN,


def _sources_with(key):
    names = [name for name, spec in config["datasets"].items() if key in spec["source"]]
    # A regex that matches nothing keeps a rule unusable when no dataset needs it.
    return "|".join(map(re.escape, names)) or "(?!x)x"


DOWNLOADED = _sources_with("urls")
GENERATED = _sources_with("generate")


def source(wildcards):
    return config["datasets"][wildcards.dataset]["source"]


def raw_path(dataset):
    return f"results/raw/{dataset}/{config['datasets'][dataset]['source']['filename']}"


def preprocess_input(wildcards):
    spec = source(wildcards)
    if "path" in spec:
        return spec["path"]
    if "member" in spec:
        return f"results/interim/{wildcards.dataset}/{Path(spec['member']).name}"
    return raw_path(wildcards.dataset)


def download_args(wildcards):
    spec = source(wildcards)
    args = [arg for url in spec["urls"] for arg in ("--url", url)]
    checksums = [key for key in ("md5", "sha256") if key in spec]
    for key in checksums:
        args += [f"--{key}", spec[key]]
    if not checksums:
        args += ["--lock-file", f"results/raw/{wildcards.dataset}/checksums.lock.json"]
    limits = config["download"]
    args += ["--max-bytes", str(limits["max_bytes"])]
    args += ["--deadline", str(limits["deadline_s"])]
    return shlex.join(args)


def toy_args(wildcards):
    spec = source(wildcards)
    options = {"member": spec.get("member", "toy/ratings.dat"), **spec["generate"]}
    # Sorted: the same settings in another order must not look like a change (a params rerun trigger).
    return shlex.join(
        arg
        for key, value in sorted(options.items())
        for arg in (f"--{key.replace('_', '-')}", str(value))
    )


def data_files(wildcards):
    return {
        "sequences": paths.SEQUENCES.format(dataset=wildcards.dataset),
        "stats": paths.STATS.format(dataset=wildcards.dataset),
    }


def stage_params(stage):
    """A params function: the JSON settings ``stage`` reads for this job, and nothing else.

    Snakemake re-runs a job when its params change, so a setting re-runs exactly the jobs that read it.
    """

    def hparams(wildcards):
        seed = wildcards.get("seed")
        values = stage_hparams(
            config,
            stage,
            dataset=wildcards.dataset,
            model=wildcards.model,
            seed=None if seed is None else int(seed),
            method=wildcards.get("method"),
            epsilon=wildcards.get("epsilon"),
        )
        return json.dumps(values, sort_keys=True)

    return hparams


def run_file(kind, wildcards, method=None):
    """A file of the run the wildcards name (``method`` overrides theirs, e.g. 'pretrain')."""
    return paths.run_file(
        kind,
        dataset=wildcards.dataset,
        model=wildcards.model,
        seed=wildcards.seed,
        method=method or wildcards.method,
        epsilon=wildcards.get("epsilon"),
    )


def state_dir(wildcards):
    return paths.state_dir(
        wildcards.get("method", "pretrain"), wildcards.get("epsilon")
    ).format(**wildcards)


def cascade_input(wildcards):
    """The cascade file the run's method reads (adv_cas*), as a named input; none for the others."""
    terms = CASCADE_TERMS_OF.get(wildcards.method)
    if not terms:
        return {}
    return {"cascade": paths.CASCADE.format(dataset=wildcards.dataset, terms=terms)}


def finetune_inputs(wildcards):
    return {
        **data_files(wildcards),
        "pretrained": run_file("models", wildcards, "pretrain"),
        **cascade_input(wildcards),
    }


def stack_files(kind):
    """One kind of file of every run a stacked job trains, the seed's wildcards left in."""
    seed_run = {"dataset": "{dataset}", "model": "{model}", "seed": "{seed}"}
    return [
        paths.run_template(kind, method, EPSILON).format(
            **seed_run, method=method, epsilon=EPSILON
        )
        for method in STACKED
    ]


def stack_inputs(wildcards):
    """What a stacked job reads: the data, the pretrained model, the cascades its adv_cas* runs need."""
    terms = sorted({CASCADE_TERMS_OF[m] for m in STACKED if m in CASCADE_TERMS_OF})
    cascades = {
        f"cascade_{term}": paths.CASCADE.format(dataset=wildcards.dataset, terms=term)
        for term in terms
    }
    return {
        **data_files(wildcards),
        "pretrained": run_file("models", wildcards, "pretrain"),
        **cascades,
    }


def stack_member(run, hparams):
    """One run of a stacked job's ``--runs``: its settings (as its own job's) and the files it writes."""
    if hparams["engine"] == "auto":
        hparams = {
            **hparams,
            "engine": "static",
        }  # a stack trains on the static engine, wherever it runs
    return {
        "hparams": hparams,
        **{
            name: paths.run_file(kind, **run)
            for name, kind in (
                ("checkpoint", "models"),
                ("curve", "curves"),
                ("metrics", "metrics"),
            )
        },
        "state_dir": paths.state_dir(run["method"], run["epsilon"]).format(**run),
    }


def stack_runs(wildcards):
    """``catrec finetune-stack --runs``: each run's settings, cascade and files.

    A function of the wildcards alone: Snakemake compares such params with the last run's, so a changed
    setting of one method re-runs the stack (whose other runs resume finished).
    """
    seed_run = {
        "dataset": wildcards.dataset,
        "model": wildcards.model,
        "seed": int(wildcards.seed),
    }
    members = []
    for method in STACKED:
        terms = CASCADE_TERMS_OF.get(method)
        hparams = stage_hparams(config, "finetune", **seed_run, method=method)
        members.append(
            {
                "method": method,
                "cascade": (
                    paths.CASCADE.format(dataset=wildcards.dataset, terms=terms)
                    if terms
                    else None
                ),
                **stack_member(
                    {**seed_run, "method": method, "epsilon": EPSILON}, hparams
                ),
            }
        )
    return json.dumps(members, sort_keys=True)


def pretrain_stack_files(kind):
    """One kind of file of every seed's pretraining, the dataset and model wildcards left in."""
    return [
        paths.run_template(kind, "pretrain").format(
            dataset="{dataset}", model="{model}", seed=seed
        )
        for seed in SEEDS
    ]


def pretrain_stack_runs(wildcards):
    """``catrec pretrain-stack --runs``: each seed's settings and files (as its own pretrain job's)."""
    members = []
    for seed in SEEDS:
        run = {"dataset": wildcards.dataset, "model": wildcards.model, "seed": seed}
        hparams = stage_hparams(config, "pretrain", **run)
        members.append(
            stack_member({**run, "method": "pretrain", "epsilon": None}, hparams)
        )
    return json.dumps(members, sort_keys=True)


def max_stack_arg(wildcards):
    """``--max-stack`` of a stacked job (train.max_stack), or nothing where stacks are not bounded."""
    bound = config["train"]["max_stack"]
    return "" if bound is None else f"--max-stack {bound}"


def profile_inputs(wildcards):
    """What the perturbation profile rebuilds the run's loss from: its data, model and cascade."""
    return {
        **data_files(wildcards),
        "model": run_file("models", wildcards),
        **cascade_input(wildcards),
    }


def cascade_arg(wildcards, input):
    return shlex.join(["--cascade", input.cascade]) if "cascade" in input.keys() else ""


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
# Training batches each profile measures (``catrec profile --batches``).
PROFILE_BATCHES = 20
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


COMPUTE_JOBS = compute_jobs()
COMPUTE = [paths.COMPUTE + ext for ext in (".csv", ".md", ".html")]


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
