# Config validation, target lists and input functions shared by the rules.
# No config value reaches a shell line unquoted: functions that build arguments return them shell-quoted
# (shlex.join) and rules quote paths with {...:q}.

import json
import shlex
from pathlib import Path

from catrec.config import validate_config
from catrec.errors import CatrecError

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
TRAINED_METHODS = [method for method in METHODS if method != "base"]
CASCADE_TERMS = {
    "adv_cas": "both",
    "adv_cas_temporal": "temporal",
    "adv_cas_cross": "cross",
}
USE_GPU = config["device"] == "cuda"


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
    return shlex.join(
        arg
        for key, value in options.items()
        for arg in (f"--{key.replace('_', '-')}", str(value))
    )


def data_files(wildcards):
    return {
        "sequences": f"results/data/{wildcards.dataset}/sequences.txt",
        "stats": f"results/data/{wildcards.dataset}/stats.json",
    }


def hparams(wildcards, stage, epsilon=None):
    """The JSON hyper-parameters of one run: everything a `catrec` training/attack command needs."""
    dataset = config["datasets"][wildcards.dataset]
    model = config["model"]
    train = config["train"]
    values = {
        "seed": config["seed"],
        "device": config["device"],
        "threads": config["threads"],
        "max_len": dataset["max_len"],
        "model": wildcards.model,
        "hidden_size": model["hidden_size"],
        "dropout": model["dropout"],
        **model["sasrec"],
        **model["gru4rec"],
        "batch_size": train["batch_size"],
        "lr": train["lr"],
        "l2": train["l2"],
        "epochs": train["pretrain_epochs"],
        "eval_every": train["eval_every"],
        "checkpoint_every": train["checkpoint_every"],
        "bucket_by_length": train["bucket_by_length"],
    }
    if stage in ("finetune", "attack"):
        values.update(config["adversarial"])
        values["epochs"] = train["finetune_epochs"]
        values["epoch_offset"] = train["pretrain_epochs"]
    if epsilon is not None:
        values["epsilon"] = float(epsilon)
    if stage == "attack":
        values.update(config["attack"])
    return json.dumps(values, sort_keys=True)


def finetune_inputs(wildcards):
    inputs = {
        **data_files(wildcards),
        "pretrained": f"results/models/{wildcards.dataset}/{wildcards.model}/pretrain.pt",
    }
    terms = CASCADE_TERMS.get(wildcards.method)
    if terms:
        inputs["cascade"] = f"results/cascade/{wildcards.dataset}/{terms}.pt"
    return inputs


def cascade_arg(wildcards, input):
    return shlex.join(["--cascade", input.cascade]) if "cascade" in input.keys() else ""


def metrics_files(datasets=DATASETS, models=MODELS, methods=METHODS):
    return expand(
        "results/metrics/{dataset}/{model}/{method}.json",
        dataset=datasets,
        model=models,
        method=methods,
    )


def curve_files():
    return expand(
        "results/curves/{dataset}/{model}/{run}.csv",
        dataset=DATASETS,
        model=MODELS,
        run=["pretrain", *METHODS],
    )


def epsilon_value(value):
    return f"{float(value):g}"


def epsilon_files():
    """Metrics of adv_cas for each swept epsilon; the configured epsilon reuses the adv_cas run itself."""
    sweep = config["epsilon_sweep"]
    reuse = "adv_cas" in METHODS
    return [
        (
            f"results/metrics/{dataset}/{model}/adv_cas.json"
            if reuse and float(eps) == float(config["adversarial"]["epsilon"])
            else f"results/sweeps/epsilon/{dataset}/{model}/eps{epsilon_value(eps)}.json"
        )
        for dataset in sweep["datasets"]
        for model in sweep["models"]
        for eps in sweep["values"]
    ]


def attack_files(datasets=DATASETS, models=MODELS, methods=METHODS):
    return expand(
        "results/attacks/{dataset}/{model}/{method}.csv",
        dataset=datasets,
        model=models,
        method=methods,
    )


FIG5 = config["figures"]["fig5"]
FIG6 = config["figures"]["fig6"]

# Each summary is one tidy CSV: (kind of input, input files). Figures get their own narrow summaries so that
# `snakemake figures/fig6.pdf` trains and attacks only what Figure 6 shows.
SUMMARIES = {
    "metrics": ("metrics", metrics_files()),
    "curves": ("curves", curve_files()),
    "epsilon": ("metrics", epsilon_files()),
    "attacks": ("attacks", attack_files()),
    "fig5_attacks": (
        "attacks",
        attack_files([FIG5["dataset"]], [FIG5["model"]], FIG5["methods"]),
    ),
    "fig6_attacks": (
        "attacks",
        attack_files(DATASETS, [FIG6["model"]], FIG6["methods"]),
    ),
    "fig6_gru4rec_attacks": (
        "attacks",
        attack_files(DATASETS, [FIG6["supplementary_model"]], FIG6["methods"]),
    ),
}

# figure target -> (plot kind, summary it reads, plot options)
FIGURES = {
    "fig3": ("fig3", "curves", []),
    "fig4": ("fig4", "epsilon", []),
    "fig5": (
        "fig5",
        "fig5_attacks",
        [
            f"dataset={FIG5['dataset']}",
            f"model={FIG5['model']}",
            f"methods={','.join(FIG5['methods'])}",
        ],
    ),
    "fig6": (
        "fig6",
        "fig6_attacks",
        [f"model={FIG6['model']}", f"methods={','.join(FIG6['methods'])}"],
    ),
    "fig6_gru4rec": (
        "fig6",
        "fig6_gru4rec_attacks",
        [
            f"model={FIG6['supplementary_model']}",
            f"methods={','.join(FIG6['methods'])}",
        ],
    ),
}


def plot_options(wildcards):
    return shlex.join(
        arg for option in FIGURES[wildcards.figure][2] for arg in ("--option", option)
    )


def final_targets():
    tables = expand(
        "results/tables/{table}.{ext}",
        table=["table1", "table2"],
        ext=["csv", "md", "tex"],
    )
    tables += expand("results/tables/table2_vs_paper.{ext}", ext=["csv", "md"])
    figures = expand("figures/{figure}.{ext}", figure=list(FIGURES), ext=["pdf", "png"])
    return tables + figures + ["results/summary/attacks.csv"]
