"""The vocabulary of the experiment: methods and what each reads, cascade terms, figures, tidy CSV columns.

The Snakemake rules (workflow/rules/common.smk), the stages, the tables and the plots import these, so a
method, a figure or a column exists in one place only. See docs/architecture.md for what each file holds.
"""

from __future__ import annotations

from dataclasses import dataclass

# Training methods in the order of Table 2; `base` is the pretrained model itself (not trained further).
METHODS = (
    "base",
    "continued",
    "adv_linear",
    "adv_seq",
    "adv_global",
    "adv_cas",
    "adv_cas_temporal",
    "adv_cas_cross",
)
# The `adversarial:` keys each term reads (a method reads those of its terms, in this order):
# 'bce' perturbs S along dL_B/dS and adds L_B(S + step) (adv_seq); 'representation' is level 1 (Eq. 4.6-4.7);
# 'linear' level 2 (Eq. 4.8-4.9).
TERM_KEYS: dict[str, tuple[str, ...]] = {
    "bce": ("epsilon", "grad_norm_scope", "perturb_space"),
    "representation": ("epsilon", "lambda1", "grad_norm_scope", "init_noise", "perturb_space"),
    "linear": ("epsilon", "lambda2", "grad_norm_scope"),
}


@dataclass(frozen=True)
class MethodSpec:
    """What a trained method computes: its terms of Eq. 4.10 beside L_B, and the cascade file its level-1
    factors 1/C come from (``catrec cascade --terms``; None: uniform factors)."""

    terms: tuple[str, ...]
    cascade: str | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        """The `adversarial:` keys it reads: a run depends on these and on nothing else of that section, so
        changing one re-runs only the methods that read it."""
        return tuple(dict.fromkeys(key for term in self.terms for key in TERM_KEYS[term]))

    @property
    def perturbs_s(self) -> bool:
        """Whether it perturbs the sequence input S (level 1 or adv_seq)."""
        return "bce" in self.terms or "representation" in self.terms


# Every trained method, in the order of Table 2 (`base`, the pretrained model itself, trains nothing).
METHOD_SPECS: dict[str, MethodSpec] = {
    "continued": MethodSpec(()),
    "adv_linear": MethodSpec(("linear",)),
    "adv_seq": MethodSpec(("bce",)),
    "adv_global": MethodSpec(("representation", "linear")),
    "adv_cas": MethodSpec(("representation", "linear"), cascade="both"),
    "adv_cas_temporal": MethodSpec(("representation", "linear"), cascade="temporal"),
    "adv_cas_cross": MethodSpec(("representation", "linear"), cascade="cross"),
}
# Which cascade file each cascade-guided method needs.
CASCADE_TERMS_OF = {m: spec.cascade for m, spec in METHOD_SPECS.items() if spec.cascade is not None}
CASCADE_TERMS = ("both", "temporal", "cross")
ADVERSARIAL_KEYS_OF = {method: spec.keys for method, spec in METHOD_SPECS.items()}
# Methods that perturb the sequence input S (level 1 or adv_seq): the perturbation profile covers these.
SEQUENCE_METHODS = tuple(method for method, spec in METHOD_SPECS.items() if spec.perturbs_s)
# Methods whose run takes epsilon: epsilon is part of their result paths, and they are swept in Figure 4.
EPSILON_METHODS = tuple(method for method, keys in ADVERSARIAL_KEYS_OF.items() if "epsilon" in keys)
CLEAN_METHODS = tuple(method for method in METHODS if method not in EPSILON_METHODS)

# Raw formats `catrec preprocess --format` reads (the config's `datasets.*.format`), and those
# `catrec export --format` writes.
DATA_FORMATS = ("ml-1m", "amazon-json", "amazon-csv", "sequences", "pairs", "recbole")
EXPORT_FORMATS = ("recbole",)

# The keys of each `model:` section that a model reads, besides `hidden_size` and `dropout`.
MODEL_KEYS_OF = {"sasrec": ("num_blocks", "num_heads", "layer_norm"), "gru4rec": ("num_layers",)}
MODELS = tuple(MODEL_KEYS_OF)
DEVICES = ("auto", "cpu", "cuda")

# figure target -> the plot kind that draws it (``catrec plot``); catrec.plan adds each one's data.
FIGURE_KINDS = {
    "fig3": "fig3",
    "fig4": "fig4",
    "fig5": "fig5",
    "fig6": "fig6",
    "fig6_gru4rec": "fig6",
    "fig_perturbation": "perturbation",
}

# The stages whose jobs write a Snakemake `benchmark:` file (benchmarks/{stage}/...; the rule of each, its
# `*_clean` variant included), and the columns of results/tables/compute.csv gathered from them: `seconds`
# is the job's wall-clock time, `max_rss_mb` its peak resident memory in MiB (Snakemake's `s`, `max_rss`).
BENCHMARK_STAGES = ("pretrain", "cascade", "finetune", "attack", "profile", "user_metrics")
# epsilon tells apart the runs of one method at several ε (empty for runs without one).
COMPUTE_COLUMNS = ["stage", "dataset", "model", "method", "epsilon", "seed", "seconds", "max_rss_mb"]

METRICS = ("ndcg@10", "hit@10")
# The evaluation splits of every curve and metrics file (the leave-one-out split's last two items).
SPLITS = ("valid", "test")
# Lists, not tuples: pandas reads a tuple passed to groupby / set_index as one key.
RUN_KEYS = ["dataset", "model", "method"]

CURVE_COLUMNS = ["epoch", "phase", "split", *METRICS, "loss", "seconds"]
# `code_digest`: the catrec code that computed the run (catrec.provenance; blank where its JSON has none).
METRICS_COLUMNS = [*RUN_KEYS, "epsilon", "seed", "split", *METRICS, "code_digest"]
METRICS_LONG_COLUMNS = [*RUN_KEYS, "epsilon", "seed", "split", "metric", "value", "code_digest"]
ATTACK_COLUMNS = [
    *RUN_KEYS,
    "attack",
    "position",
    "k",
    *METRICS,
    "clean_ndcg@10",
    "clean_hit@10",
    "drop_ndcg@10",
    "drop_hit@10",
    "drop_ndcg@10_pct",
    "drop_hit@10_pct",
]
# The tidy long form of a collected attacks summary (the evidence's attacks.csv): one row per setting and
# metric, `clean` and `attacked` its means, `drop_pct` = 100 * (clean - attacked) / clean.
ATTACK_LONG_COLUMNS = [
    *RUN_KEYS,
    "epsilon",
    "seed",
    "attack",
    "position",
    "k",
    "metric",
    "clean",
    "attacked",
    "drop_pct",
]
# Per-user metrics under attack (`catrec attack --users`): one row per user (`user` = 1..m, sequences.txt
# order, as USER_METRICS_COLUMNS), the clean metrics, then one column per row of the attacks CSV and metric,
# named ATTACK_USER_COLUMN, in the rows' order; last_k with k = 0 replaces nothing (its columns would be the
# clean ones) and is left out. The mean of a column is the attacks CSV's mean of that setting and metric.
ATTACK_USERS_COLUMNS = ["user", "clean_ndcg@10", "clean_hit@10"]
ATTACK_USER_COLUMN = "{attack}_{position}_k{k}_{metric}"
# Collected summaries: a run's rows with its full identity (epsilon and seed come from the file's path).
CURVE_SUMMARY_COLUMNS = [*RUN_KEYS, "epsilon", "seed", *CURVE_COLUMNS]
ATTACK_SUMMARY_COLUMNS = [*RUN_KEYS, "epsilon", "seed", *ATTACK_COLUMNS[len(RUN_KEYS) :]]

# Perturbation profile (per run of a SEQUENCE_METHODS method): the mean norm of the level-1 / adv_seq
# perturbation of S in the network's input space by position from the end (1 = last item), and the mean total
# norm of a batch's perturbation (the same on every row of a run).
PROFILE_COLUMNS = [*RUN_KEYS, "position_from_end", "mean_norm", "total_norm"]
PROFILE_SUMMARY_COLUMNS = [*RUN_KEYS, "epsilon", "seed", *PROFILE_COLUMNS[len(RUN_KEYS) :]]
# Per-user test metrics of one run; `user` is the user's id in sequences.txt.
USER_METRICS_COLUMNS = ["user", *METRICS]
# Significance of adv_cas (method_a) against every other method: a Wilcoxon signed-rank test over users per
# seed, and a paired t-test over seeds of the mean (`seed` empty); `n` counts the pairs.
SIGNIFICANCE_REFERENCE = "adv_cas"
SIGNIFICANCE_COLUMNS = [
    "dataset",
    "model",
    "method_a",
    "method_b",
    "epsilon",
    "seed",
    "metric",
    "test",
    "statistic",
    "p_value",
    "n",
    "mean_a",
    "mean_b",
]
# Significance of named pairs of runs, each at its own epsilon (`catrec significance --pair`): the same tests.
SIGNIFICANCE_PAIR_COLUMNS = [
    *SIGNIFICANCE_COLUMNS[:3],
    "epsilon_a",
    "method_b",
    "epsilon_b",
    *SIGNIFICANCE_COLUMNS[5:],
]
# Robustness (catrec.report.robustness): a Wilcoxon signed-rank test over users per row, of values `a` of the
# run (dataset .. seed) against `b` (the `question` says which; `against` names the other position or run).
ROBUSTNESS_COLUMNS = [
    "dataset",
    "model",
    "method",
    "epsilon",
    "seed",
    "question",
    "attack",
    "k",
    "metric",
    "against",
    "n",
    "mean_a",
    "mean_b",
    "statistic",
    "p_value",
]
