# Config validation and the plan every rule file reads (catrec.plan: the runs, stacks, jobs, targets and the
# rules' input and params functions, tested without Snakemake). No config value reaches a shell line
# unquoted: plan functions that build arguments return them shell-quoted and rules quote paths with {...:q}.

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
from catrec.config import plans_gpu, validate_config
from catrec.errors import CatrecError
from catrec.plan import Plan
from catrec.provenance import path_source_digests
from catrec.vocabulary import (
    CASCADE_TERMS,
    CLEAN_METHODS,
    EPSILON_METHODS,
    FIGURE_KINDS,
    MODELS,
    SEQUENCE_METHODS,
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

# Model jobs on a GPU declare gpu=1 (PLAN.resources); profiles/default caps the total at one.
PLAN = Plan(config, gpu=plans_gpu(config["device"]))
ENV = "../../envs/catrec.yaml"
# Repository files read by rules, resolved from the Snakefile so `--directory` elsewhere works.
PAPER_DIR = Path(workflow.basedir) / "config" / "paper"


wildcard_constraints:
    model="|".join(MODELS),
    seed=r"\d+",
    epsilon=paths.EPSILON_PATTERN,
