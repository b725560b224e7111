"""Item-replacement attacks (section 5.6): positions, admissible replacements, the nearest-item rule, the
gradient attack against random replacement on a trained toy model, k = 0, the CSV of ``run_attacks`` and its
per-user file."""

from __future__ import annotations

import csv
import gzip
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from catrec.adversarial import CLEAN_LOSS
from catrec.attack import (
    AttackConfig,
    attack_rows,
    attack_users,
    choose_positions,
    drop_percent,
    gradient_replacements,
    nearest_items,
    perturbed_history,
    random_replacements,
    stepped_embeddings,
    target_loss_gradient,
    user_metrics,
)
from catrec.config import read_hparams
from catrec.data.item_sets import ItemSets
from catrec.data.sequences import SequenceData
from catrec.errors import CatrecError
from catrec.models import ModelConfig, SequentialRecommender, build_model, save_model
from catrec.settings import AttackSettings
from catrec.stages.attack import run_attacks
from catrec.trainer import TrainConfig, evaluate, fit
from catrec.vocabulary import ATTACK_COLUMNS, ATTACK_USER_COLUMN, ATTACK_USERS_COLUMNS

MAX_LEN = 20
TOY_HPARAMS = {
    "seed": 0,
    "epochs": 5,
    "eval_every": 100,
    "checkpoint_every": 10,
    "batch_size": 64,
    "lr": 0.005,
    "l2": 1e-5,
    "bucket_by_length": True,
    "layout": "packed",
    "capture": False,
    "precision": "fp32",
}
ATTACK_HPARAMS = {
    "max_len": MAX_LEN,
    "positions": ["first", "middle", "last"],
    "max_k": 2,
    "distance": "cosine",
    "step_size": 1.0,
    "multi": "joint",
    "random_seed": 7,
}


def tiny_model(name: str, num_items: int, hidden: int = 8, seed: int = 0) -> SequentialRecommender:
    torch.manual_seed(seed)
    config = ModelConfig(
        name=name,
        num_items=num_items,
        max_len=MAX_LEN,
        hidden_size=hidden,
        dropout=0.2,
        num_blocks=1,
        num_heads=1,
        layer_norm="pre",
        num_layers=1,
    )
    return build_model(config).eval()


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, toy_data_dir: Path
) -> tuple[SequentialRecommender, Path]:
    """A SASRec trained for a few epochs on the toy data (fixed seed), and its saved weights."""
    work = tmp_path_factory.mktemp("attack_model")
    data = SequenceData.from_dir(toy_data_dir, MAX_LEN)
    torch.manual_seed(0)
    config = ModelConfig(
        name="sasrec",
        num_items=data.num_items,
        max_len=MAX_LEN,
        hidden_size=16,
        dropout=0.1,
        num_blocks=1,
        num_heads=1,
        layer_norm="pre",
    )
    model = build_model(config)
    fit(
        model,
        data,
        CLEAN_LOSS,
        TrainConfig(**TOY_HPARAMS),
        phase="pretrain",
        curve_path=work / "c.csv",
        state_dir=work / "s",
        device=torch.device("cpu"),
    )
    save_model(work / "model.pt", model)
    return model.eval(), work / "model.pt"


def test_choose_positions_on_hand_built_inputs() -> None:
    inputs = torch.tensor([[0, 0, 5, 6, 7, 8], [0, 0, 0, 0, 0, 3], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 0]])

    def columns(position: str, k: int = 1) -> list[list[int]]:
        return [row.nonzero().squeeze(1).tolist() for row in choose_positions(inputs, position, k)]

    assert columns("first") == [[2], [5], [0], []]
    # middle = index (n - 1) // 2 among the n real items: n = 4 -> 1, n = 1 -> 0, n = 6 -> 2.
    assert columns("middle") == [[3], [5], [2], []]
    assert columns("last") == [[5], [5], [5], []]
    assert columns("last_k", 3) == [[3, 4, 5], [5], [3, 4, 5], []]
    assert columns("last_k", 0) == [[], [], [], []]
    with pytest.raises(ValueError, match="k must be >= 0, got -1"):
        choose_positions(inputs, "last_k", -1)
    with pytest.raises(ValueError, match="position 'middle' replaces exactly one item, got k=2"):
        choose_positions(inputs, "middle", 2)
    with pytest.raises(ValueError, match="unknown position 'second'"):
        choose_positions(inputs, "second")


def test_nearest_items_cosine_and_l2_disagree_as_documented() -> None:
    # Item 1 points the query's way but lies far out; item 2 is close but at 45 degrees.
    table = torch.tensor([[0.0, 0.0], [10.0, 1.0], [0.5, 0.5], [-1.0, 0.0]])
    query = torch.tensor([[1.0, 0.0]])
    none_banned = torch.tensor([[True, False, False, False]])
    assert nearest_items(query, table, none_banned, "cosine").tolist() == [1]
    assert nearest_items(query, table, none_banned, "l2").tolist() == [2]
    one_banned = torch.tensor([[True, True, False, False]])
    assert nearest_items(query, table, one_banned, "cosine").tolist() == [2]
    with pytest.raises(ValueError, match="unknown distance 'dot'"):
        nearest_items(query, table, none_banned, "dot")


def test_a_user_without_an_admissible_item_is_an_error() -> None:
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    second_user_has_seen_everything = torch.tensor([[True, False, True], [True, True, True]])
    for distance in ("cosine", "l2"):
        with pytest.raises(CatrecError, match="a user's history covers every item"):
            nearest_items(queries, table, second_user_has_seen_everything, distance)


def test_perturbed_history_swaps_one_occurrence() -> None:
    exclude = ItemSets.from_lists([[1, 2, 3], [2, 1, 2, 3]])
    inputs = torch.tensor([[0, 2, 3], [0, 2, 3]])
    perturbed = torch.tensor([[0, 7, 3], [0, 9, 3]])
    # User 2 saw item 2 twice: it stays excluded through its other occurrence.
    assert perturbed_history(exclude, inputs, perturbed).tolist() == [[1, 7, 3], [9, 1, 2, 3]]
    with pytest.raises(ValueError, match="exclude must contain every item of the input window"):
        perturbed_history(ItemSets.from_lists([[1, 3], [2, 3]]), inputs, perturbed)
    nobody = torch.zeros(0, 3, dtype=torch.int64)
    assert perturbed_history(ItemSets.from_lists([]), nobody, nobody).tolist() == []


@pytest.mark.parametrize(
    ("model_name", "attack", "multi", "distance"),
    [
        ("sasrec", "gradient", "joint", "cosine"),
        ("sasrec", "gradient", "greedy", "l2"),
        ("gru4rec", "gradient", "joint", "l2"),
        ("gru4rec", "gradient", "greedy", "cosine"),
        ("sasrec", "random", "joint", "cosine"),
    ],
)
@pytest.mark.parametrize(("position", "k"), [("first", 1), ("middle", 1), ("last", 1), ("last_k", 4)])
def test_only_chosen_positions_change_to_admissible_items(
    toy_sequences: list[list[int]],
    model_name: str,
    attack: str,
    multi: str,
    distance: str,
    position: str,
    k: int,
) -> None:
    # Short users (2 and 3 input items) keep padding in the window; max_len 8 leaves history outside it.
    sequences = [*toy_sequences[:30], [1, 2, 3, 4], [5, 6, 7]]
    num_items = max(max(sequence) for sequence in sequences)
    data = SequenceData.from_sequences(sequences, num_items, max_len=8)
    inputs, targets, exclude = data.eval_inputs("test"), data.eval_targets("test"), data.eval_exclude("test")
    mask = choose_positions(inputs, position, k)
    if attack == "gradient":
        model = tiny_model(model_name, num_items)
        perturbed = gradient_replacements(
            model,
            inputs,
            targets,
            exclude,
            mask,
            step_size=1.0,
            distance=distance,
            multi=multi,
            batch_size=16,
        )
    else:
        generator = torch.Generator().manual_seed(0)
        perturbed = random_replacements(
            inputs, targets, exclude, mask, num_items=num_items, generator=generator, batch_size=16
        )

    assert torch.equal(perturbed != inputs, mask)
    assert torch.equal(perturbed == 0, inputs == 0)
    assert int(mask[-1].sum()) == min(k, 2)  # the last user's input is [5, 6] (valid 6, test 7)
    for row in range(len(inputs)):
        new = perturbed[row][mask[row]].tolist()
        forbidden = set(exclude.tolist()[row]) | set(inputs[row].tolist()) | {int(targets[row]), 0}
        assert not forbidden & set(new)
        assert len(set(new)) == len(new)


@pytest.mark.parametrize("attack", ["gradient", "random"])
def test_a_full_window_is_attacked_whole_whatever_its_item_ids(attack: str) -> None:
    """Windows without padding, each holding item 1: 'first' replaces every user's oldest item (a batch is
    as wide as its longest real window)."""
    num_items, width = 30, 6
    inputs = torch.stack([torch.randperm(num_items, generator=torch.Generator().manual_seed(row))[:width] + 1
                          for row in range(8)])  # fmt: skip
    inputs[:, 3] = 1
    inputs[inputs[:, 0] == 1, 0] = num_items  # the oldest item is another one
    targets = torch.full((len(inputs),), num_items - 1)
    exclude = ItemSets.from_lists(inputs.tolist())
    mask = choose_positions(inputs, "first")
    if attack == "gradient":
        perturbed = gradient_replacements(
            tiny_model("sasrec", num_items), inputs, targets, exclude, mask,
            step_size=1.0, distance="cosine", multi="joint",
        )  # fmt: skip
        with pytest.raises(ValueError, match="unknown multi mode 'both'"):
            gradient_replacements(
                tiny_model("sasrec", num_items), inputs, targets, exclude, mask,
                step_size=1.0, distance="cosine", multi="both",
            )  # fmt: skip
    else:
        perturbed = random_replacements(
            inputs, targets, exclude, mask, num_items=num_items, generator=torch.Generator().manual_seed(0)
        )
    assert torch.equal(perturbed != inputs, mask)


def test_random_replacements_depend_on_their_generator_alone(toy_sequences: list[list[int]]) -> None:
    data = SequenceData.from_sequences(toy_sequences, max(map(max, toy_sequences)), max_len=8)
    inputs, targets, exclude = data.eval_inputs("test"), data.eval_targets("test"), data.eval_exclude("test")
    mask = choose_positions(inputs, "last_k", 2)

    def draw(generator_seed: int, global_seed: int) -> torch.Tensor:
        torch.manual_seed(global_seed)
        generator = torch.Generator().manual_seed(generator_seed)
        return random_replacements(
            inputs, targets, exclude, mask, num_items=data.num_items, generator=generator
        )

    assert torch.equal(draw(5, global_seed=0), draw(5, global_seed=1))
    assert not torch.equal(draw(5, global_seed=0), draw(6, global_seed=0))


def test_attack_rows_are_the_metrics_of_each_attack_s_replacements(
    trained: tuple[SequentialRecommender, Path], toy_data_dir: Path
) -> None:
    """The gradient row measures the gradient attack, the random row a draw from ``random_seed``'s own
    generator (whatever torch's global seed), each the mean of ``user_metrics`` of its replacements."""
    model, _ = trained
    data = SequenceData.from_dir(toy_data_dir, MAX_LEN)
    inputs, targets, exclude = data.eval_inputs("test"), data.eval_targets("test"), data.eval_exclude("test")
    config = AttackConfig(positions=("last",), max_k=0, distance="cosine", step_size=1.0, multi="joint",
                          random_seed=7)  # fmt: skip
    torch.manual_seed(8)
    results = attack_users(model, inputs, targets, exclude, config)
    rows = {(row["attack"], row["position"]): row for row in attack_rows(results)}
    mask = choose_positions(inputs, "last")
    gradient = gradient_replacements(
        model, inputs, targets, exclude, mask, step_size=1.0, distance="cosine", multi="joint"
    )
    random = random_replacements(
        inputs, targets, exclude, mask, num_items=data.num_items, generator=torch.Generator().manual_seed(7)
    )
    expected = {"gradient": gradient, "random": random}
    for attack, perturbed in expected.items():
        metrics = user_metrics(model, inputs, targets, exclude, perturbed)
        assert torch.equal(results.attacked[attack, "last", 1].ndcg, metrics.ndcg), attack
        assert torch.equal(results.attacked[attack, "last", 1].hit, metrics.hit), attack
        means = metrics.means()
        assert (rows[(attack, "last")]["ndcg@10"], rows[(attack, "last")]["hit@10"]) == (
            means["ndcg@10"],
            means["hit@10"],
        ), attack
    assert rows[("gradient", "last")]["ndcg@10"] != rows[("random", "last")]["ndcg@10"]


def test_drop_percent_of_a_zero_clean_metric_is_nan() -> None:
    assert drop_percent(0.02, 0.08) == pytest.approx(25.0)
    assert math.isnan(drop_percent(0.0, 0.0))


def hand_built_model(distance_case: int) -> SequentialRecommender:
    """SASRec (d = 4, 12 items) whose item embedding table is set by hand."""
    model = tiny_model("sasrec", 12, hidden=4, seed=distance_case)
    table = torch.tensor(
        [[0.0, 0.0, 0.0, 0.0]]
        + [[math.cos(0.5 * j), math.sin(0.5 * j), 0.3 * (j % 3) - 0.3, 0.1 * j] for j in range(1, 13)]
    )
    # Norms spread over 0.5..3 so that cosine and l2 choose differently.
    table = table * torch.linspace(0.5, 3.0, 13).unsqueeze(1)
    with torch.no_grad():
        model.item_emb.weight.copy_(table)
    return model


@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_gradient_attack_picks_nearest_item_to_stepped_embedding(distance: str) -> None:
    inputs = torch.tensor([[0, 0, 1, 2, 3], [0, 4, 5, 6, 7], [8, 9, 10, 11, 2]])
    targets = torch.tensor([4, 8, 12])
    exclude = ItemSets.from_lists([[1, 2, 3], [4, 5, 6, 7], [1, 8, 9, 10, 11]])
    chosen_differently = 0
    for seed in range(4):
        model = hand_built_model(seed)
        table = model.item_emb.weight.detach()
        mask = choose_positions(inputs, "last")
        perturbed = gradient_replacements(
            model, inputs, targets, exclude, mask, step_size=0.8, distance=distance, multi="joint"
        )
        emb, grad = target_loss_gradient(model, inputs, targets)
        for row in range(len(inputs)):
            stepped = emb[row, -1] + 0.8 * emb[row, -1].norm() * grad[row, -1] / grad[row, -1].norm()
            assert torch.allclose(stepped, stepped_embeddings(emb[row, -1], grad[row, -1], 0.8))
            forbidden = set(exclude.tolist()[row]) | set(inputs[row].tolist()) | {int(targets[row]), 0}
            candidates = [j for j in range(13) if j not in forbidden]
            by_cosine = max(candidates, key=lambda j: float(F.cosine_similarity(stepped, table[j], dim=0)))
            by_l2 = min(candidates, key=lambda j: float((stepped - table[j]).norm()))
            chosen_differently += by_cosine != by_l2
            expected = by_cosine if distance == "cosine" else by_l2
            assert int(perturbed[row, -1]) == expected
    # The table is built so that the two rules disagree somewhere: the test tells them apart.
    assert chosen_differently > 0


def test_joint_collision_goes_to_next_nearest_for_the_older_position() -> None:
    # Items 5 and 6 are the only admissible ones; 5 is nearest to both attacked items (2 and 3).
    table = torch.tensor(
        [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.1], [0.0, -1.0], [1.0, 0.05], [-3.0, -3.0]]
    )
    model = tiny_model("sasrec", 6, hidden=2)
    with torch.no_grad():
        model.item_emb.weight.copy_(table)
    inputs, targets, exclude = (
        torch.tensor([[0, 1, 2, 3]]),
        torch.tensor([4]),
        ItemSets.from_lists([[1, 2, 3]]),
    )
    mask = choose_positions(inputs, "last_k", 2)
    for distance in ("cosine", "l2"):
        perturbed = gradient_replacements(
            model, inputs, targets, exclude, mask, step_size=1e-4, distance=distance, multi="joint"
        )
        assert perturbed.tolist() == [[0, 1, 6, 5]]


def test_greedy_is_one_position_at_a_time_most_recent_first(toy_sequences: list[list[int]]) -> None:
    data = SequenceData.from_sequences(toy_sequences[:40], max(map(max, toy_sequences)), max_len=10)
    inputs, targets, exclude = data.eval_inputs("test"), data.eval_targets("test"), data.eval_exclude("test")
    model = tiny_model("sasrec", data.num_items)
    options = {"step_size": 1.0, "distance": "cosine"}
    greedy = gradient_replacements(
        model, inputs, targets, exclude, choose_positions(inputs, "last_k", 2), multi="greedy", **options
    )
    joint = gradient_replacements(
        model, inputs, targets, exclude, choose_positions(inputs, "last_k", 2), multi="joint", **options
    )
    last = choose_positions(inputs, "last")
    once = gradient_replacements(model, inputs, targets, exclude, last, multi="joint", **options)
    second_last = choose_positions(inputs, "last_k", 2) & ~last
    twice = gradient_replacements(model, once, targets, exclude, second_last, multi="joint", **options)
    assert torch.equal(greedy, twice)
    assert torch.equal(joint[:, -1], greedy[:, -1])
    # The recomputed gradient matters: greedy and joint differ for some user at the second last item.
    assert not torch.equal(joint[:, -2], greedy[:, -2])


def test_gradient_attack_lowers_target_score_more_than_random(
    trained: tuple[SequentialRecommender, Path], toy_data_dir: Path
) -> None:
    model, _ = trained
    data = SequenceData.from_dir(toy_data_dir, MAX_LEN)
    inputs, targets, exclude = data.eval_inputs("test"), data.eval_targets("test"), data.eval_exclude("test")
    mask = choose_positions(inputs, "last")

    @torch.no_grad()
    def target_scores(seqs: torch.Tensor) -> torch.Tensor:
        return model.score(model(seqs)[:, -1], targets)

    clean = target_scores(inputs)
    gradient = gradient_replacements(
        model, inputs, targets, exclude, mask, step_size=1.0, distance="cosine", multi="joint"
    )
    random_perturbed = random_replacements(
        inputs, targets, exclude, mask, num_items=data.num_items, generator=torch.Generator().manual_seed(7)
    )
    gradient_drop = clean - target_scores(gradient)
    random_drop = clean - target_scores(random_perturbed)
    difference = gradient_drop - random_drop
    standard_error = difference.std() / math.sqrt(len(difference))
    assert difference.mean() > 4 * standard_error
    assert (difference > 0).float().mean() > 0.6
    # The ranking metrics agree with the scores.
    gradient_ndcg = user_metrics(model, inputs, targets, exclude, gradient).means()["ndcg@10"]
    random_ndcg = user_metrics(model, inputs, targets, exclude, random_perturbed).means()["ndcg@10"]
    assert gradient_ndcg < random_ndcg


def test_k_zero_reproduces_clean_metrics(
    trained: tuple[SequentialRecommender, Path], toy_data_dir: Path
) -> None:
    model, _ = trained
    data = SequenceData.from_dir(toy_data_dir, MAX_LEN)
    inputs, targets, exclude = data.eval_inputs("test"), data.eval_targets("test"), data.eval_exclude("test")
    config = AttackConfig(positions=(), max_k=0, distance="l2", step_size=1.0, multi="greedy", random_seed=3)
    rows = attack_rows(attack_users(model, inputs, targets, exclude, config))
    clean = evaluate(model, data, "test")
    assert [(row["attack"], row["position"], row["k"]) for row in rows] == [
        ("gradient", "last_k", 0),
        ("random", "last_k", 0),
    ]
    for row in rows:
        assert (row["ndcg@10"], row["hit@10"]) == (clean["ndcg@10"], clean["hit@10"])
        assert (row["drop_ndcg@10"], row["drop_hit@10"]) == (0.0, 0.0)


def attack_toy_base(checkpoint: Path, data_dir: Path, output: Path, users: Path | None = None) -> None:
    """``run_attacks`` of the toy SASRec as method base, with the test hparams, on the CPU."""
    run_attacks(
        data_dir=data_dir,
        hparams=ATTACK_HPARAMS,
        dataset="toy",
        model_name="sasrec",
        method="base",
        checkpoint=checkpoint,
        output=output,
        users=users,
        device="cpu",
        threads=torch.get_num_threads(),
    )


def test_run_attacks_writes_documented_csv(
    trained: tuple[SequentialRecommender, Path], toy_data_dir: Path, tmp_path: Path
) -> None:
    model, checkpoint = trained
    output = tmp_path / "attacks" / "base.csv"
    attack_toy_base(checkpoint, toy_data_dir, output)
    with open(output, newline="") as stream:
        reader = csv.DictReader(stream)
        rows = list(reader)
    assert reader.fieldnames == ATTACK_COLUMNS
    assert sorted(output.parent.iterdir()) == [output]  # no temporary file left behind
    settings = [(row["attack"], row["position"], int(row["k"])) for row in rows]
    expected = [("first", 1), ("middle", 1), ("last", 1), ("last_k", 0), ("last_k", 1), ("last_k", 2)]
    assert settings == [(attack, *setting) for attack in ("gradient", "random") for setting in expected]
    clean = evaluate(model, SequenceData.from_dir(toy_data_dir, MAX_LEN), "test")
    for row in rows:
        assert (row["dataset"], row["model"], row["method"]) == ("toy", "sasrec", "base")
        assert float(row["clean_ndcg@10"]) == clean["ndcg@10"]
        assert float(row["clean_hit@10"]) == clean["hit@10"]
        for metric in ("ndcg@10", "hit@10"):
            drop = float(row[f"clean_{metric}"]) - float(row[metric])
            assert float(row[f"drop_{metric}"]) == pytest.approx(drop)
            assert float(row[f"drop_{metric}_pct"]) == pytest.approx(
                100 * drop / float(row[f"clean_{metric}"])
            )
        if row["k"] == "0":
            assert float(row["ndcg@10"]) == clean["ndcg@10"]
            assert float(row["hit@10"]) == clean["hit@10"]
    by_setting = {(row["attack"], row["position"], row["k"]): float(row["ndcg@10"]) for row in rows}
    # Replacing the last item hurts more than replacing the first (the effect section 5.6 reports).
    assert by_setting[("gradient", "last", "1")] < by_setting[("gradient", "first", "1")]


def test_run_attacks_writes_per_user_metrics_whose_means_are_the_attack_rows(
    trained: tuple[SequentialRecommender, Path], toy_data_dir: Path, tmp_path: Path
) -> None:
    """``--users``: a row per user, the clean columns, then a column per setting and metric (k = 0 left
    out); each column's mean in float64 is exactly the attacks CSV's value. Gzip bytes are reproducible."""
    _, checkpoint = trained
    outputs = {}
    for name in ("a.csv.gz", "b.csv.gz", "plain.csv"):
        outputs[name] = (tmp_path / name / "attacks.csv", tmp_path / name / "users" / name)
        attack_toy_base(checkpoint, toy_data_dir, *outputs[name])
    attacks_csv, users_gz = outputs["a.csv.gz"]
    # The same bytes from two runs, gzip of the plain file's bytes (catrec.io.open_text_atomically).
    compressed = users_gz.read_bytes()
    assert compressed == outputs["b.csv.gz"][1].read_bytes()
    assert gzip.decompress(compressed) == outputs["plain.csv"][1].read_bytes()
    assert sorted(users_gz.parent.iterdir()) == [users_gz]  # no temporary file left behind

    users = pd.read_csv(users_gz)
    settings = [("first", 1), ("middle", 1), ("last", 1), ("last_k", 1), ("last_k", 2)]
    expected = [
        ATTACK_USER_COLUMN.format(attack=attack, position=position, k=k, metric=metric)
        for attack in ("gradient", "random")
        for position, k in settings
        for metric in ("ndcg@10", "hit@10")
    ]
    assert list(users.columns) == [*ATTACK_USERS_COLUMNS, *expected]
    assert expected[:2] == ["gradient_first_k1_ndcg@10", "gradient_first_k1_hit@10"]
    assert "random_last_k_k2_hit@10" in expected
    num_users = SequenceData.from_dir(toy_data_dir, MAX_LEN).num_users
    assert users["user"].tolist() == list(range(1, num_users + 1))

    def mean(column: str) -> float:
        # The reduction of UserMetrics.means: torch's float64 mean of the float32 values.
        return torch.tensor(users[column].to_numpy(), dtype=torch.float64).mean().item()

    rows = pd.read_csv(attacks_csv, dtype={"k": int})
    for _, row in rows.iterrows():
        for metric in ("ndcg@10", "hit@10"):
            assert mean(f"clean_{metric}") == row[f"clean_{metric}"]
            if row["k"] == 0:
                continue
            column = ATTACK_USER_COLUMN.format(
                attack=row["attack"], position=row["position"], k=row["k"], metric=metric
            )
            assert mean(column) == row[metric], column
    # Real per-user values: the last item's replacement moves some users, not all alike.
    drop = users["clean_ndcg@10"] - users["gradient_last_k1_ndcg@10"]
    assert (drop > 0).any() and drop.nunique() > 2


def test_attack_hparams_are_validated() -> None:
    good = {**ATTACK_HPARAMS, "positions": ["last"], "max_k": 1, "distance": "l2"}
    config = AttackSettings.from_json(good, model="sasrec").attack_config()
    assert config.settings() == [("last", 1), ("last_k", 0), ("last_k", 1)]
    for key, value in [("distance", "dot"), ("multi", "both"), ("positions", ["end"]), ("step_size", 0.0)]:
        with pytest.raises(CatrecError, match=key):
            read_hparams({**good, key: value}, "attack", model="sasrec")
    with pytest.raises(CatrecError, match="'random_seed': required by attack of sasrec"):
        read_hparams(
            {key: value for key, value in good.items() if key != "random_seed"}, "attack", model="sasrec"
        )
    with pytest.raises(CatrecError, match="'seed': not read by attack of sasrec"):
        read_hparams({**good, "seed": 0}, "attack", model="sasrec")


def test_run_attacks_refuses_bad_hparams_before_writing(
    trained: tuple[SequentialRecommender, Path], toy_data_dir: Path, tmp_path: Path
) -> None:
    _, checkpoint = trained
    output = tmp_path / "attacks.csv"
    with pytest.raises(CatrecError, match="distance"):
        run_attacks(
            data_dir=toy_data_dir,
            hparams={**ATTACK_HPARAMS, "distance": "dot"},
            dataset="toy",
            model_name="sasrec",
            method="base",
            checkpoint=checkpoint,
            output=output,
            device="cpu",
        )
    assert not output.exists()
