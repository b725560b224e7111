# Config validation, the settings every rule file reads and the input functions shared by the rules
# (the stacked jobs' in stack.smk, target lists in targets.smk).
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
from catrec.provenance import path_source_digests
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

# The sha256 of each `path` source, a params value of its preprocess job: a file replaced by other content
# that keeps the old mtime (cp -p, rsync -a, tar x) still reruns preprocess, as a changed param does. Cached
# by the file's stat in SOURCE_DIGESTS, so a large file is read once, not at every parse (cluster jobs
# parse too, and must see the same value).
SOURCE_DIGESTS = ".snakemake/catrec/source-digests.json"
try:
    validate_config(config)
    SOURCE_SHA256 = path_source_digests(config["datasets"], SOURCE_DIGESTS)
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


def profile_inputs(wildcards):
    """What the perturbation profile rebuilds the run's loss from: its data, model and cascade."""
    return {
        **data_files(wildcards),
        "model": run_file("models", wildcards),
        **cascade_input(wildcards),
    }


def cascade_arg(wildcards, input):
    return shlex.join(["--cascade", input.cascade]) if "cascade" in input.keys() else ""
