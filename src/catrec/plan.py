"""What the rules ask that is not a rule: the runs of a config, which of them are trained as stacks, the
jobs `all` runs with each job's benchmark file, the final targets, the summaries and figures with their
inputs, and the input and params functions the rules call.

``Plan(config, gpu=...)`` is a pure function of a validated config and of whether model jobs run on a GPU
(``catrec.config.plans_gpu``, the one question the machine answers), unit-tested without Snakemake
(tests/test_plan.py). Its methods that take ``wildcards`` are the rules' input and params functions: they
read the wildcards by name (a Snakemake ``Wildcards`` or a plain dict), so a rule names them directly.
Nothing here is changed after it is built.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from catrec import paths
from catrec.settings import SETTINGS, FinetuneSettings, PretrainSettings
from catrec.vocabulary import (
    CASCADE_TERMS_OF,
    EPSILON_METHODS,
    FIGURE_KINDS,
    SEQUENCE_METHODS,
    SIGNIFICANCE_REFERENCE,
)

Wildcards = Mapping[str, Any]

# figure target -> (report category, name in the report): the paper's figures, and our perturbation profile.
REPORT_FIGURES = {
    "fig3": ("Figures", "Figure 3"),
    "fig4": ("Figures", "Figure 4"),
    "fig5": ("Figures", "Figure 5"),
    "fig6": ("Figures", "Figure 6"),
    "fig6_gru4rec": ("Figures", "Figure 6, supplement"),
    "fig_perturbation": ("Analysis", "Perturbation profile"),
}
# The benchmarked stage whose jobs write the run files of each kind (besides pretrain and finetune).
STAGE_OF_KIND = {"attacks": "attack", "profiles": "profile", "users": "user_metrics"}
TABLE_EXTENSIONS = ("csv", "md", "tex", "html")


class Plan:
    """The plan of one config; ``gpu``: model jobs run on a GPU (and so ``train.stack: auto`` stacks)."""

    def __init__(self, config: Mapping[str, Any], *, gpu: bool) -> None:
        self.config = config
        self.gpu = gpu
        self.datasets = list(config["datasets"])
        self.models = list(config["models"])
        self.methods = list(config["methods"])
        self.seeds = list(config["seeds"])
        # The paper's epsilon: Table 2 and the figures show the runs at this value.
        self.epsilon = paths.epsilon_label(config["adversarial"]["epsilon"])
        # Every model job: its threads and resources (profiles/default caps the GPUs at one).
        self.threads = 1 if gpu else config["threads"]
        self.resources = {"gpu": 1 if gpu else 0, "device": config["device"]}
        stack = config["train"]["stack"]
        stacking = gpu if stack == "auto" else bool(stack)
        # train.stack: the runs one stacked job trains per dataset x model x seed, at the paper's epsilon (the
        # sweep's other values and continued stay jobs of their own); empty when runs are not stacked.
        self.stacked = [m for m in self.methods if m in EPSILON_METHODS] if stacking else []
        self.stack_run = paths.stack_run(self.stacked, self.epsilon)
        # train.stack with several seeds: the pretrainings of one dataset x model as one stacked job.
        self.pretrain_stacked = len(self.seeds) > 1 and stacking
        self.pretrain_stack_run = paths.seed_stack_run(self.seeds)
        bound = config["train"]["max_stack"]
        self.max_stack_arg = "" if bound is None else f"--max-stack {bound}"
        # The perturbation profile covers the configured methods that perturb the sequence input S.
        self.profile_methods = [m for m in self.methods if m in SEQUENCE_METHODS]
        # Significance compares adv_cas with every other method of Table 2, robustness its attacks with
        # theirs (and each run's attacked positions with one another).
        compared = SIGNIFICANCE_REFERENCE in self.methods and len(self.methods) > 1
        self.significance = [paths.SIGNIFICANCE + ext for ext in (".csv", ".md", ".html")] if compared else []
        self.robustness = [paths.ROBUSTNESS + ext for ext in (".csv", ".md")] if compared else []
        self.compute = [paths.COMPUTE + ext for ext in (".csv", ".md", ".html")]
        self.summaries = self._summaries()
        self.figures = self._figures()
        assert set(self.figures) == set(FIGURE_KINDS) == set(REPORT_FIGURES), (
            "every figure has data and a place"
        )
        # The compute table: one row per job of BENCHMARK_STAGES that `all` runs.
        self.compute_jobs = self._compute_jobs()
        # Table 2 and its comparison with the paper cover the same runs.
        self.table2_labels = self.run_labels(self.summaries["metrics"][1])

    # -- runs and the files they write ------------------------------------------------------------------

    def runs(
        self,
        kind: str,
        datasets: list[str] | None = None,
        models: list[str] | None = None,
        methods: list[str] | None = None,
        seeds: list[int] | None = None,
        epsilon: float | str | None = None,
    ) -> list[str]:
        """Files of the runs of ``methods`` (at ``epsilon``, default the paper's, where a method takes it)."""
        datasets = self.datasets if datasets is None else datasets
        models = self.models if models is None else models
        methods = self.methods if methods is None else methods
        seeds = self.seeds if seeds is None else seeds
        epsilon = self.epsilon if epsilon is None else epsilon
        return [
            paths.run_file(kind, dataset=d, model=m, seed=s, method=method, epsilon=epsilon)
            for d in datasets
            for m in models
            for method in methods
            for s in seeds
        ]

    def run_labels(self, files: list[str]) -> dict[str, str]:
        """Report labels: the datasets, models and methods of the run files a table or figure is made from.

        Methods read "all" where every configured method is among them (curves add pretraining).
        """
        identities = [paths.parse_run(path) for path in files]

        def names(key: str) -> list[Any]:
            return list(dict.fromkeys(identity[key] for identity in identities))

        methods = names("method")
        return {
            "datasets": ", ".join(names("dataset")),
            "models": ", ".join(names("model")),
            "methods": "all" if set(self.methods) <= set(methods) else ", ".join(methods),
        }

    def _summaries(self) -> dict[str, tuple[str, list[str]]]:
        """Each summary is one tidy CSV: (kind of input, input files). Figures get their own narrow summaries
        so that `snakemake figures/fig6.pdf` trains and attacks only what Figure 6 shows."""
        sweep = self.config["epsilon_sweep"]
        fig5, fig6 = self.config["figures"]["fig5"], self.config["figures"]["fig6"]
        # adv_cas at each swept epsilon; the paper's epsilon is the adv_cas run itself.
        epsilon = [
            path
            for eps in sweep["values"]
            for path in self.runs("metrics", sweep["datasets"], sweep["models"], ["adv_cas"], epsilon=eps)
        ]
        return {
            "metrics": ("metrics", self.runs("metrics")),
            "curves": ("curves", self.runs("curves", methods=["pretrain", *self.methods])),
            "epsilon": ("metrics", epsilon),
            "attacks": ("attacks", self.runs("attacks")),
            "fig5_attacks": (
                "attacks",
                self.runs("attacks", [fig5["dataset"]], [fig5["model"]], fig5["methods"]),
            ),
            "fig6_attacks": (
                "attacks",
                self.runs("attacks", models=[fig6["model"]], methods=fig6["methods"]),
            ),
            "fig6_gru4rec_attacks": (
                "attacks",
                self.runs("attacks", models=[fig6["supplementary_model"]], methods=fig6["methods"]),
            ),
            "perturbation_profile": ("profiles", self.runs("profiles", methods=self.profile_methods)),
        }

    def _figures(self) -> dict[str, tuple[str, list[str]]]:
        """figure target -> (summary it reads, plot options); the plot kind: vocabulary.FIGURE_KINDS."""
        fig5, fig6 = self.config["figures"]["fig5"], self.config["figures"]["fig6"]
        methods = f"methods={','.join(fig6['methods'])}"
        return {
            "fig3": ("curves", []),
            "fig4": ("epsilon", []),
            "fig5": (
                "fig5_attacks",
                [
                    f"dataset={fig5['dataset']}",
                    f"model={fig5['model']}",
                    f"methods={','.join(fig5['methods'])}",
                ],
            ),
            "fig6": ("fig6_attacks", [f"model={fig6['model']}", methods]),
            "fig6_gru4rec": ("fig6_gru4rec_attacks", [f"model={fig6['supplementary_model']}", methods]),
            "fig_perturbation": ("perturbation_profile", []),
        }

    # -- jobs and their benchmark files -----------------------------------------------------------------

    def stack_benchmark(self) -> str:
        """The benchmark template of a stacked fine-tuning job (dataset, model, seed left in)."""
        return paths.job_benchmark("finetune", self.stack_run)

    def pretrain_stack_benchmark(self) -> str:
        """The benchmark template of a stacked pretraining job (dataset, model left in)."""
        return paths.job_benchmark("pretrain", self.pretrain_stack_run)

    def pretrain_benchmark(self, dataset: str, model: str, seed: int) -> str:
        """The benchmark file of the job that pretrained this seed: its own, or the seeds' stack."""
        seed_run = {"dataset": dataset, "model": model, "seed": seed}
        if self.pretrain_stacked:
            return self.pretrain_stack_benchmark().format(**seed_run)
        return paths.benchmark_file("pretrain", **seed_run)

    def finetune_benchmark(
        self, dataset: str, model: str, seed: int, method: str, epsilon: float | None
    ) -> str:
        """The benchmark file of the job that fine-tuned this run: its own, or its seed's stack."""
        if method in self.stacked and epsilon == float(self.epsilon):
            return self.stack_benchmark().format(dataset=dataset, model=model, seed=seed)
        return paths.benchmark_file(
            "finetune", dataset=dataset, model=model, seed=seed, method=method, epsilon=epsilon
        )

    def _compute_jobs(self) -> dict[str, str]:
        """{benchmark file: one output of its job} for every job of BENCHMARK_STAGES that `all` runs.

        Found from the run files the summaries and significance read: each needs its run's pretraining, its
        fine-tuning and (adv_cas*) its cascade, and is itself the output of an attack, profile or
        user_metrics job.
        """
        jobs = {}
        users = self.runs("users") if self.significance else []
        for kind, files in [*self.summaries.values(), ("users", users)]:
            for path in files:
                run = paths.parse_run(path)
                method = run["method"]
                epsilon = None if math.isnan(run["epsilon"]) else run["epsilon"]
                seed_run = {"dataset": run["dataset"], "model": run["model"], "seed": run["seed"]}
                jobs[self.pretrain_benchmark(**seed_run)] = paths.run_file(
                    "metrics", **seed_run, method="pretrain"
                )
                if method == "pretrain":
                    continue
                this_run = {**seed_run, "method": method, "epsilon": epsilon}
                jobs[self.finetune_benchmark(**this_run)] = paths.run_file("metrics", **this_run)
                terms = CASCADE_TERMS_OF.get(method)
                if terms:
                    cascade = {"dataset": run["dataset"], "terms": terms}
                    jobs[paths.benchmark_file("cascade", **cascade)] = paths.CASCADE.format(**cascade)
                if kind in STAGE_OF_KIND:
                    jobs[paths.benchmark_file(STAGE_OF_KIND[kind], **this_run)] = path
        return jobs

    def final_targets(self) -> list[str]:
        """What `all` builds: the tables, significance, robustness, the compute table, the figures and two
        summaries."""
        tables = [
            f"{paths.TABLES}/{t}.{e}" for t, e in itertools.product(("table1", "table2"), TABLE_EXTENSIONS)
        ]
        tables += [f"{paths.TABLES}/table2_vs_paper.{ext}" for ext in ("csv", "md", "html")]
        # Without a method that perturbs S there is no profile to draw.
        drawn = [
            f
            for f, (summary, _) in self.figures.items()
            if self.profile_methods or summary != "perturbation_profile"
        ]
        figures = [f"figures/{figure}.{ext}" for figure, ext in itertools.product(drawn, ("pdf", "png"))]
        summaries = [paths.SUMMARY.format(summary="attacks")]
        if self.profile_methods:
            summaries.append(paths.SUMMARY.format(summary="perturbation_profile"))
        return tables + self.significance + self.robustness + self.compute + figures + summaries

    # -- input and params functions of the rules (``wildcards``: a run's or a dataset's) ------------------

    def summary_inputs(self, wildcards: Wildcards) -> list[str]:
        return self.summaries[wildcards["summary"]][1]

    def summary_kind(self, wildcards: Wildcards) -> str:
        return self.summaries[wildcards["summary"]][0]

    def figure_summary(self, wildcards: Wildcards) -> str:
        return paths.SUMMARY.format(summary=self.figures[wildcards["figure"]][0])

    def figure_category(self, wildcards: Wildcards) -> str:
        return REPORT_FIGURES[wildcards["figure"]][0]

    def figure_labels(self, wildcards: Wildcards) -> dict[str, str]:
        """Report labels of a figure: its name, and the datasets, models and methods it draws."""
        summary = self.figures[wildcards["figure"]][0]
        return {
            "figure": REPORT_FIGURES[wildcards["figure"]][1],
            **self.run_labels(self.summaries[summary][1]),
        }

    def plot_options(self, wildcards: Wildcards) -> str:
        return shlex.join(
            arg for option in self.figures[wildcards["figure"]][1] for arg in ("--option", option)
        )

    def sources_with(self, key: str) -> str:
        """A wildcard constraint: the datasets whose source has ``key`` (a regex matching nothing if none)."""
        names = [name for name, spec in self.config["datasets"].items() if key in spec["source"]]
        return "|".join(map(re.escape, names)) or "(?!x)x"

    def dataset(self, wildcards: Wildcards) -> Mapping[str, Any]:
        return self.config["datasets"][wildcards["dataset"]]

    def max_len(self, wildcards: Wildcards) -> int:
        return self.dataset(wildcards)["max_len"]

    def raw_path(self, wildcards: Wildcards) -> str:
        return f"results/raw/{wildcards['dataset']}/{self.dataset(wildcards)['source']['filename']}"

    def preprocess_input(self, wildcards: Wildcards) -> str:
        spec = self.dataset(wildcards)["source"]
        if "path" in spec:
            return spec["path"]
        if "member" in spec:
            return f"results/interim/{wildcards['dataset']}/{Path(spec['member']).name}"
        return self.raw_path(wildcards)

    def download_args(self, wildcards: Wildcards) -> str:
        spec = self.dataset(wildcards)["source"]
        args = [arg for url in spec["urls"] for arg in ("--url", url)]
        checksums = [key for key in ("md5", "sha256") if key in spec]
        for key in checksums:
            args += [f"--{key}", spec[key]]
        if not checksums:
            args += ["--lock-file", f"results/raw/{wildcards['dataset']}/checksums.lock.json"]
        limits = self.config["download"]
        args += ["--max-bytes", str(limits["max_bytes"]), "--deadline", str(limits["deadline_s"])]
        return shlex.join(args)

    def toy_args(self, wildcards: Wildcards) -> str:
        spec = self.dataset(wildcards)["source"]
        options = {"member": spec.get("member", "toy/ratings.dat"), **spec["generate"]}
        # Sorted: the same settings in another order must not look like a change (a params rerun trigger).
        return shlex.join(
            arg
            for key, value in sorted(options.items())
            for arg in (f"--{key.replace('_', '-')}", str(value))
        )

    def data_files(self, wildcards: Wildcards) -> dict[str, str]:
        dataset = wildcards["dataset"]
        return {
            "sequences": paths.SEQUENCES.format(dataset=dataset),
            "stats": paths.STATS.format(dataset=dataset),
        }

    def data_dir(self, wildcards: Wildcards) -> str:
        return paths.DATA_DIR.format(dataset=wildcards["dataset"])

    def stage_params(self, stage: str) -> Callable[[Wildcards], str]:
        """A params function: the JSON settings ``stage`` reads for this job, and nothing else.

        Snakemake re-runs a job when its params change, so a setting re-runs exactly the jobs that read it.
        """

        def hparams(wildcards: Wildcards) -> str:
            return SETTINGS[stage].from_config(self.config, wildcards).to_json()

        return hparams

    def run_file(self, kind: str, wildcards: Wildcards, method: str | None = None) -> str:
        """A file of the run the wildcards name (``method`` overrides theirs, e.g. 'pretrain')."""
        return paths.run_file(
            kind,
            dataset=wildcards["dataset"],
            model=wildcards["model"],
            seed=wildcards["seed"],
            method=method or wildcards["method"],
            epsilon=wildcards.get("epsilon"),
        )

    def model_file(self, wildcards: Wildcards) -> str:
        return self.run_file("models", wildcards)

    def state_dir(self, wildcards: Wildcards) -> str:
        method = wildcards.get("method") or "pretrain"
        return paths.state_dir(method, wildcards.get("epsilon")).format(**dict(wildcards.items()))

    def cascade_input(self, wildcards: Wildcards) -> dict[str, str]:
        """The cascade file the run's method reads (adv_cas*), as a named input; none for the others."""
        terms = CASCADE_TERMS_OF.get(wildcards["method"])
        return {"cascade": paths.CASCADE.format(dataset=wildcards["dataset"], terms=terms)} if terms else {}

    def finetune_inputs(self, wildcards: Wildcards) -> dict[str, str]:
        return {
            **self.data_files(wildcards),
            "pretrained": self.run_file("models", wildcards, "pretrain"),
            **self.cascade_input(wildcards),
        }

    def profile_inputs(self, wildcards: Wildcards) -> dict[str, str]:
        """What the perturbation profile rebuilds the run's loss from: its data, model and cascade."""
        return {
            **self.data_files(wildcards),
            "model": self.run_file("models", wildcards),
            **self.cascade_input(wildcards),
        }

    @staticmethod
    def cascade_arg(wildcards: Wildcards, input: Any) -> str:  # noqa: A002 (Snakemake's name)
        return shlex.join(["--cascade", input.cascade]) if "cascade" in input.keys() else ""  # noqa: SIM118

    # -- stacked jobs (train.stack) -----------------------------------------------------------------------

    def stack_files(self, kind: str) -> list[str]:
        """One kind of file of every run a stacked job trains, the seed's wildcards left in."""
        seed_run = {"dataset": "{dataset}", "model": "{model}", "seed": "{seed}"}
        return [
            paths.epsilon_template(kind).format(**seed_run, method=method, epsilon=self.epsilon)
            for method in self.stacked
        ]

    def stack_inputs(self, wildcards: Wildcards) -> dict[str, str]:
        """What a stacked job reads: the data, the pretrained model, the cascades its adv_cas* runs need."""
        terms = sorted({CASCADE_TERMS_OF[m] for m in self.stacked if m in CASCADE_TERMS_OF})
        return {
            **self.data_files(wildcards),
            "pretrained": self.run_file("models", wildcards, "pretrain"),
            **{f"cascade_{t}": paths.CASCADE.format(dataset=wildcards["dataset"], terms=t) for t in terms},
        }

    @staticmethod
    def _stack_member(run: dict[str, Any], hparams: dict[str, Any]) -> dict[str, Any]:
        """One run of a stacked job's ``--runs``: its settings (as its own job's) and the files it writes."""
        files = {"checkpoint": "models", "curve": "curves", "metrics": "metrics"}
        return {
            "hparams": hparams,
            **{name: paths.run_file(kind, **run) for name, kind in files.items()},
            "state_dir": paths.state_dir(run["method"], run["epsilon"]).format(**run),
        }

    def stack_runs(self, wildcards: Wildcards) -> str:
        """``catrec finetune-stack --runs``: each run's settings, cascade and files.

        A function of the wildcards alone: Snakemake compares such params with the last run's, so a changed
        setting of one method re-runs the stack (whose other runs resume finished).
        """
        seed_run = {
            "dataset": wildcards["dataset"],
            "model": wildcards["model"],
            "seed": int(wildcards["seed"]),
        }
        members = []
        for method in self.stacked:
            terms = CASCADE_TERMS_OF.get(method)
            # epsilon the paper's, as the member's own job takes it from its path: one source
            job = {**seed_run, "method": method, "epsilon": self.epsilon}
            hparams = FinetuneSettings.from_config(self.config, job).hparams()
            cascade = paths.CASCADE.format(dataset=wildcards["dataset"], terms=terms) if terms else None
            run = {**seed_run, "method": method, "epsilon": self.epsilon}
            members.append({"method": method, "cascade": cascade, **self._stack_member(run, hparams)})
        return json.dumps(members, sort_keys=True)

    def pretrain_stack_files(self, kind: str) -> list[str]:
        """One kind of file of every seed's pretraining, the dataset and model wildcards left in."""
        return [
            paths.pretrain_template(kind).format(dataset="{dataset}", model="{model}", seed=s)
            for s in self.seeds
        ]

    def pretrain_stack_runs(self, wildcards: Wildcards) -> str:
        """``catrec pretrain-stack --runs``: each seed's settings and files (as its own pretrain job's)."""
        members = []
        for seed in self.seeds:
            run = {"dataset": wildcards["dataset"], "model": wildcards["model"], "seed": seed}
            hparams = PretrainSettings.from_config(self.config, run).hparams()
            members.append(self._stack_member({**run, "method": "pretrain", "epsilon": None}, hparams))
        return json.dumps(members, sort_keys=True)
