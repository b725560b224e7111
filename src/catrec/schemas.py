"""The vocabulary and file schemas shared by the stages: method names and the tidy CSV columns.

Writers (train, adversarial, attack) and readers (tables, plots) import these, so a column can only be renamed
in one place. See docs/architecture.md for what each file holds.
"""

from __future__ import annotations

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
METRICS = ("ndcg@10", "hit@10")
# Lists, not tuples: pandas reads a tuple passed to groupby / set_index as one key.
RUN_KEYS = ["dataset", "model", "method"]

CURVE_COLUMNS = ["epoch", "phase", "split", *METRICS, "loss", "seconds"]
METRICS_COLUMNS = [*RUN_KEYS, "epsilon", "seed", "split", *METRICS]
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
