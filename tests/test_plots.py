"""Figures 3-6 and the perturbation profile render from small synthetic tidy CSVs, labelled, with a legend."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from catrec.errors import CatrecError
from catrec.report.plots import METHOD_COLORS, build_figure, plot_figure, wide_attacks
from catrec.vocabulary import (
    ATTACK_LONG_COLUMNS,
    ATTACK_SUMMARY_COLUMNS,
    CURVE_SUMMARY_COLUMNS,
    EPSILON_METHODS,
    PROFILE_SUMMARY_COLUMNS,
)
from catrec.vocabulary import METHODS as ALL_METHODS

DATASETS = ("video", "beauty")
MODELS = ("sasrec", "gru4rec")
METHODS = ("base", "adv_global", "adv_cas")


def synthetic_curves() -> pd.DataFrame:
    """Pretraining for 50 epochs, then 20 fine-tuning epochs per method (evaluated every 5)."""
    rows = []
    for dataset in DATASETS:
        for model in MODELS:
            runs = [("pretrain", "pretrain", range(5, 51, 5))]
            runs += [(method, "finetune", range(55, 71, 5)) for method in METHODS[1:]]
            for gain, (method, phase, epochs) in enumerate(runs):
                for epoch in epochs:
                    ndcg = 0.05 * (1 - np.exp(-epoch / 15)) + (
                        0.002 * gain * (epoch - 50) / 20 if epoch > 50 else 0
                    )
                    for split in ("valid", "test"):
                        rows.append(
                            {
                                "dataset": dataset,
                                "model": model,
                                "method": method,
                                "epsilon": 10.0 if method in EPSILON_METHODS else None,
                                "seed": 0,
                                "epoch": epoch,
                                "phase": phase,
                                "split": split,
                                "ndcg@10": ndcg,
                                "hit@10": 2 * ndcg,
                                "loss": 1 / epoch,
                                "seconds": epoch,
                            }
                        )
    return pd.DataFrame(rows, columns=CURVE_SUMMARY_COLUMNS)


def synthetic_epsilon() -> pd.DataFrame:
    rows = []
    for dataset in DATASETS:
        for shift, model in enumerate(MODELS):
            for epsilon in (0.1, 1, 5, 10, 20, 30, 50):
                ndcg = 0.05 + 0.01 * np.exp(-((np.log(epsilon) - np.log(15)) ** 2) / 4) - 0.005 * shift
                for split in ("valid", "test"):
                    rows.append(
                        {
                            "dataset": dataset,
                            "model": model,
                            "method": "adv_cas",
                            "epsilon": epsilon,
                            "seed": 0,
                            "split": split,
                            "ndcg@10": ndcg,
                            "hit@10": 2 * ndcg,
                        }
                    )
    return pd.DataFrame(rows)


def synthetic_attacks() -> pd.DataFrame:
    rows = []
    for dataset in DATASETS:
        for model in MODELS:
            for robustness, method in enumerate(METHODS, start=1):
                clean = 0.08 + 0.01 * robustness
                cases = [("first", 1, 0.01), ("middle", 1, 0.02), ("last", 1, 0.25 / robustness)]
                cases += [("last_k", k, k * 0.12 / robustness) for k in range(6)]
                for attack, weaker in (("gradient", 1.0), ("random", 0.4)):
                    for position, k, fraction in cases:
                        drop = fraction * weaker
                        rows.append(
                            {
                                "dataset": dataset,
                                "model": model,
                                "method": method,
                                "epsilon": 10.0 if method in EPSILON_METHODS else None,
                                "seed": 0,
                                "attack": attack,
                                "position": position,
                                "k": k,
                                "ndcg@10": clean / 2 * (1 - drop),
                                "hit@10": clean * (1 - drop),
                                "clean_ndcg@10": clean / 2,
                                "clean_hit@10": clean,
                                "drop_ndcg@10": clean / 2 * drop,
                                "drop_hit@10": clean * drop,
                                "drop_ndcg@10_pct": 100 * drop * 1.05,
                                "drop_hit@10_pct": 100 * drop,
                            }
                        )
    return pd.DataFrame(rows, columns=ATTACK_SUMMARY_COLUMNS)


def long_attacks(wide: pd.DataFrame) -> pd.DataFrame:
    """``wide`` in the long form of the evidence's attacks.csv: a row per setting and metric."""
    frames = [
        wide.assign(
            metric=metric,
            clean=wide[f"clean_{metric}"],
            attacked=wide[metric],
            drop_pct=wide[f"drop_{metric}_pct"],
        )[ATTACK_LONG_COLUMNS]
        for metric in ("ndcg@10", "hit@10")
    ]
    return pd.concat(frames, ignore_index=True)


CASES = {
    "fig3": (synthetic_curves, []),
    "fig4": (synthetic_epsilon, []),
    "fig5": (synthetic_attacks, ["dataset=video", "model=sasrec", "methods=base,adv_global,adv_cas"]),
    "fig6": (synthetic_attacks, ["model=sasrec", "methods=base,adv_global,adv_cas"]),
}


def options_dict(options: list[str]) -> dict[str, str]:
    return dict(option.split("=", 1) for option in options)


@pytest.mark.parametrize("figure", sorted(CASES))
def test_plot_figure_writes_pdf_and_png(tmp_path: Path, figure: str) -> None:
    make, options = CASES[figure]
    source = tmp_path / "summary.csv"
    make().to_csv(source, index=False)
    output = tmp_path / "figures" / f"{figure}.pdf"
    plot_figure(figure, source, output, options)
    png = output.with_suffix(".png")
    assert output.read_bytes().startswith(b"%PDF")
    assert png.read_bytes().startswith(b"\x89PNG")
    assert png.stat().st_size > 20_000, "a PNG this small has nothing drawn"
    assert sorted(path.name for path in output.parent.iterdir()) == [f"{figure}.pdf", f"{figure}.png"]


@pytest.mark.parametrize("figure", sorted(CASES))
def test_figure_axes_are_labelled_with_a_legend(figure: str) -> None:
    make, options = CASES[figure]
    drawn = build_figure(figure, make(), options_dict(options))
    assert isinstance(drawn, Figure)
    axes = [ax for ax in drawn.axes if ax.get_visible() and ax.axison]
    assert axes
    for ax in axes:
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
        assert ax.lines or ax.patches, "empty panel"
    legend_texts = {text.get_text() for legend in drawn.legends for text in legend.get_texts()}
    assert {"adv_cas", "adv_global"} <= legend_texts or {"SASRec", "GRU4Rec"} <= legend_texts


def test_fig3_continues_epochs_and_marks_finetuning() -> None:
    drawn = build_figure("fig3", synthetic_curves(), {"dataset": "video", "model": "sasrec"})
    (ax,) = drawn.axes
    lines = {line.get_label(): line for line in ax.lines}
    assert lines["pretraining"].get_xdata()[-1] == 50
    # Fine-tuning starts from the last pretraining point and continues the epoch count.
    assert list(lines["adv_cas"].get_xdata()) == [50, 55, 60, 65, 70]
    assert list(lines["start of fine-tuning"].get_xdata()) == [50, 50]
    assert lines["start of fine-tuning"].get_linestyle() == "--"


def test_fig3_draws_each_epsilon_of_a_method_as_its_own_line() -> None:
    """Never a mean over epsilon values: a method fine-tuned at two has two labelled lines, each its own."""
    curves = synthetic_curves()
    second = curves[curves["method"] == "adv_cas"].assign(epsilon=5.0)
    second["ndcg@10"] = second["ndcg@10"] + 0.01
    drawn = build_figure("fig3", pd.concat([curves, second]), {"dataset": "video", "model": "sasrec"})
    lines = {line.get_label(): line for line in drawn.axes[0].lines}
    assert "adv_cas" not in lines and "adv_global" in lines
    valid = curves[
        (curves["dataset"] == "video") & (curves["model"] == "sasrec") & (curves["split"] == "valid")
    ]
    at_10 = valid[valid["method"] == "adv_cas"]["ndcg@10"].to_numpy()
    np.testing.assert_allclose(lines["adv_cas, ε = 10"].get_ydata()[1:], at_10)
    np.testing.assert_allclose(lines["adv_cas, ε = 5"].get_ydata()[1:], at_10 + 0.01)
    assert lines["adv_cas, ε = 5"].get_linestyle() != lines["adv_cas, ε = 10"].get_linestyle()


def test_fig4_uses_a_log_epsilon_axis() -> None:
    drawn = build_figure("fig4", synthetic_epsilon(), {})
    assert len(drawn.axes) == len(DATASETS) * 2
    assert all(ax.get_xscale() == "log" for ax in drawn.axes)
    assert {ax.get_ylabel() for ax in drawn.axes} == {"test NDCG@10", "test HT@10"}


def test_fig5_bars_are_the_drops() -> None:
    drawn = build_figure(
        "fig5", synthetic_attacks(), {"dataset": "video", "model": "sasrec", "methods": "base"}
    )
    hit_panel = drawn.axes[0]
    heights = sorted(round(patch.get_height(), 6) for patch in hit_panel.patches if patch.get_height())
    # Base (robustness 1): first 1%, middle 2%, last 25% of HT@10.
    assert heights == [1.0, 2.0, 25.0]
    assert hit_panel.get_ylabel() == "drop of accuracy (%)"


def test_fig6_random_baseline_is_dashed_and_in_legend() -> None:
    drawn = build_figure("fig6", synthetic_attacks(), {"model": "sasrec", "methods": "base,adv_cas"})
    assert len(drawn.axes) == len(DATASETS)
    styles = {line.get_linestyle() for line in drawn.axes[0].lines}
    assert styles == {"-", "--"}
    assert len(drawn.axes[0].lines) == 4
    legend_texts = {text.get_text() for text in drawn.legends[0].get_texts()}
    assert {"base", "adv_cas", "gradient attack", "random replacement"} <= legend_texts


def test_fig6_random_lines_share_the_method_colour_and_carry_a_marker() -> None:
    methods = list(METHODS)
    drawn = build_figure("fig6", synthetic_attacks(), {"model": "sasrec", "methods": ",".join(methods)})
    lines = drawn.axes[0].lines
    gradient = [line for line in lines if line.get_linestyle() == "-"]
    random = [line for line in lines if line.get_linestyle() == "--"]
    assert len(gradient) == len(random) == len(methods)
    for solid, dashed, method in zip(gradient, random, methods, strict=True):
        assert to_rgb(solid.get_color()) == to_rgb(dashed.get_color()) == to_rgb(METHOD_COLORS[method])
        assert dashed.get_marker() not in (None, "None", "", " ")
        assert dashed.get_marker() != solid.get_marker()


def test_the_long_attacks_table_pivots_to_the_wide_one() -> None:
    wide = synthetic_attacks()
    pivoted = wide_attacks(long_attacks(wide), "long.csv")
    keys = ["dataset", "model", "method", "attack", "position", "k"]
    columns = [
        *keys,
        "ndcg@10",
        "hit@10",
        "clean_ndcg@10",
        "clean_hit@10",
        "drop_ndcg@10_pct",
        "drop_hit@10_pct",
    ]
    expected = wide[columns].sort_values(keys, ignore_index=True)
    pd.testing.assert_frame_equal(pivoted[columns].sort_values(keys, ignore_index=True), expected)
    assert wide_attacks(wide, "wide.csv") is wide
    with pytest.raises(CatrecError, match="long.csv: two rows for"):
        wide_attacks(long_attacks(pd.concat([wide, wide.iloc[:1]])), "long.csv")


@pytest.mark.parametrize("figure", ["fig5", "fig6"])
def test_figures_5_and_6_draw_the_long_form_as_the_wide_one(tmp_path: Path, figure: str) -> None:
    _, options = CASES[figure]
    source = tmp_path / "attacks.csv"
    long_attacks(synthetic_attacks()).to_csv(source, index=False)
    plot_figure(figure, source, tmp_path / f"{figure}.pdf", options)
    assert (tmp_path / f"{figure}.png").stat().st_size > 20_000

    def drawn(data: pd.DataFrame) -> list[float]:
        """Every bar's height and every line's y values, panel by panel."""
        axes = build_figure(figure, data, options_dict(options)).axes
        bars = [patch.get_height() for ax in axes for patch in ax.patches]
        return bars + [y for ax in axes for line in ax.lines for y in line.get_ydata()]

    from_wide = drawn(synthetic_attacks())
    assert len(from_wide) > 10 and drawn(pd.read_csv(source)) == pytest.approx(from_wide)


def test_a_method_at_two_epsilons_is_two_runs_in_figures_5_and_6() -> None:
    """Never a mean over epsilon values: adv_cas at 10 and at 5 are labelled apart, each drawn with its own
    values, in shades of adv_cas's colour; methods=adv_cas selects both."""
    wide = synthetic_attacks()
    at_5 = wide[wide["method"] == "adv_cas"].assign(epsilon=5.0)
    at_5["hit@10"] = at_5["hit@10"] / 2
    at_5["drop_hit@10_pct"] = at_5["drop_hit@10_pct"] + 50
    data = long_attacks(pd.concat([wide, at_5], ignore_index=True))
    runs = ["adv_cas, ε = 5", "adv_cas, ε = 10"]

    fig6 = build_figure("fig6", data, {"model": "sasrec", "methods": "base,adv_cas"})
    legend = [text.get_text() for text in fig6.legends[0].get_texts()]
    assert legend[:3] == ["base", *runs]
    lines = [line for line in fig6.axes[0].lines if line.get_linestyle() == "-"]
    colors = [to_rgb(line.get_color()) for line in lines]
    assert colors[1] == to_rgb(METHOD_COLORS["adv_cas"]) != colors[2]
    # The lighter shade: adv_cas's colour mixed with white.
    assert all(shade >= own for shade, own in zip(colors[2], colors[1], strict=True))
    at_10 = wide[(wide["dataset"] == "video") & (wide["model"] == "sasrec") & (wide["method"] == "adv_cas")]
    gradient = at_10[(at_10["attack"] == "gradient") & (at_10["position"] == "last_k")]
    np.testing.assert_allclose(lines[2].get_ydata(), gradient["hit@10"])
    np.testing.assert_allclose(lines[1].get_ydata(), gradient["hit@10"] / 2)

    fig5 = build_figure("fig5", data, {"dataset": "video", "model": "sasrec", "methods": "adv_cas"})
    assert [text.get_text() for text in fig5.legends[0].get_texts()] == runs
    heights = [patch.get_height() for patch in fig5.axes[0].patches if patch.get_height()]
    single = at_10[(at_10["attack"] == "gradient") & at_10["position"].isin(["first", "middle", "last"])]
    expected = [*(single["drop_hit@10_pct"] + 50), *single["drop_hit@10_pct"]]
    assert heights == pytest.approx(expected)


def _lab(color: str) -> tuple[float, float, float]:
    """sRGB (D65) to CIELAB."""

    def linear(channel: float) -> float:
        return channel / 12.92 if channel <= 0.04045 else ((channel + 0.055) / 1.055) ** 2.4

    r, g, b = map(linear, to_rgb(color))
    xyz = (
        (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047,
        0.2126 * r + 0.7152 * g + 0.0722 * b,
        (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883,
    )
    fx, fy, fz = (t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29 for t in xyz)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def _ciede2000(lab1: tuple[float, float, float], lab2: tuple[float, float, float]) -> float:
    """The CIEDE2000 colour difference (Sharma, Wu and Dalal 2005); about 2.3 is just noticeable."""
    (l1, a1, b1), (l2, a2, b2) = lab1, lab2
    c_mean = (math.hypot(a1, b1) + math.hypot(a2, b2)) / 2
    g = 0.5 * (1 - math.sqrt(c_mean**7 / (c_mean**7 + 25**7)))
    a1, a2 = (1 + g) * a1, (1 + g) * a2
    c1, c2 = math.hypot(a1, b1), math.hypot(a2, b2)
    h1, h2 = (math.degrees(math.atan2(b, a)) % 360 for a, b in ((a1, b1), (a2, b2)))
    if c1 * c2 == 0:
        dh, h_mean = 0.0, h1 + h2
    else:
        dh = h2 - h1 - 360 * round((h2 - h1) / 360)
        h_mean = ((h1 + h2) / 2 + (180 if abs(h1 - h2) > 180 else 0)) % 360
    d_hue = 2 * math.sqrt(c1 * c2) * math.sin(math.radians(dh / 2))
    l_mean, c_mean = (l1 + l2) / 2, (c1 + c2) / 2
    t = (
        1
        - 0.17 * math.cos(math.radians(h_mean - 30))
        + 0.24 * math.cos(math.radians(2 * h_mean))
        + 0.32 * math.cos(math.radians(3 * h_mean + 6))
        - 0.20 * math.cos(math.radians(4 * h_mean - 63))
    )
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / math.sqrt(20 + (l_mean - 50) ** 2)
    s_c, s_h = 1 + 0.045 * c_mean, 1 + 0.015 * c_mean * t
    r_c = 2 * math.sqrt(c_mean**7 / (c_mean**7 + 25**7))
    r_t = -math.sin(math.radians(60 * math.exp(-(((h_mean - 275) / 25) ** 2)))) * r_c
    terms = ((l2 - l1) / s_l, (c2 - c1) / s_c, d_hue / s_h)
    return math.sqrt(sum(term**2 for term in terms) + r_t * terms[1] * terms[2])


@pytest.mark.parametrize(
    ("lab1", "lab2", "expected"),
    # Sharma, Wu and Dalal's test data, pairs 1, 7, 17 and 25.
    [
        ((50, 2.6772, -79.7751), (50, 0, -82.7485), 2.0425),
        ((50, 0, 0), (50, -1, 2), 2.3669),
        ((50, 2.5, 0), (56, -27, -3), 31.9030),
        ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ],
)
def test_ciede2000_reproduces_the_reference_data(lab1: tuple, lab2: tuple, expected: float) -> None:
    assert _ciede2000(lab1, lab2) == pytest.approx(expected, abs=1e-4)


def test_method_colours_are_pairwise_clearly_distinct() -> None:
    assert list(METHOD_COLORS) == list(ALL_METHODS)
    # Far above the just-noticeable difference: the old pairs (continued / adv_cas, adv_global /
    # adv_cas_temporal in seaborn's colorblind palette) were at 12 and 15.
    for first, second in itertools.combinations(ALL_METHODS, 2):
        difference = _ciede2000(_lab(METHOD_COLORS[first]), _lab(METHOD_COLORS[second]))
        assert difference >= 20, f"{first} and {second} look alike (CIEDE2000 {difference:.1f})"
    # Nor like the black and grey lines of pretraining, the start of fine-tuning and the legend's styles.
    for method, color in METHOD_COLORS.items():
        for neutral in ("black", "grey"):
            assert _ciede2000(_lab(color), _lab(neutral)) >= 20, f"{method} looks like {neutral}"


@pytest.mark.parametrize(
    ("figure", "options", "message"),
    [
        ("fig7", {}, "unknown figure 'fig7'"),
        ("fig5", {"dataset": "video"}, "option model= is required"),
        ("fig5", {"dataset": "movies", "model": "sasrec"}, "option dataset=movies selects nothing"),
        ("fig6", {"model": "sasrec", "methods": "base,adv_typo"}, "option methods=base,adv_typo.*adv_typo"),
        ("fig6", {"model": "sasrec", "colour": "red"}, "unknown option colour="),
    ],
)
def test_bad_figure_or_selection_names_the_option(figure: str, options: dict[str, str], message: str) -> None:
    with pytest.raises(CatrecError, match=message):
        build_figure(figure, synthetic_attacks(), options)


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    source = tmp_path / "attacks.csv"
    synthetic_attacks().drop(columns=["k"]).to_csv(source, index=False)
    with pytest.raises(CatrecError, match=r"attacks\.csv.*'k'"):
        plot_figure("fig6", source, tmp_path / "fig6.pdf", ["model=sasrec"])


def synthetic_profile() -> pd.DataFrame:
    """adv_global spreads epsilon evenly over 20 positions; adv_cas puts most of it on the last ones."""
    rows = []
    for dataset in DATASETS:
        for model in MODELS:
            for method in ("adv_global", "adv_cas"):
                for seed in (1, 2):
                    for position in range(1, 21):
                        norm = 10 / np.sqrt(20) if method == "adv_global" else 8.0 * 0.5 ** (position - 1)
                        rows.append(
                            {
                                "dataset": dataset,
                                "model": model,
                                "method": method,
                                "epsilon": 10.0,
                                "seed": seed,
                                "position_from_end": position,
                                "mean_norm": norm,
                                "total_norm": 10.0 + seed,
                            }
                        )
    return pd.DataFrame(rows, columns=PROFILE_SUMMARY_COLUMNS)


def test_perturbation_profile_figure(tmp_path: Path) -> None:
    source = tmp_path / "perturbation_profile.csv"
    synthetic_profile().to_csv(source, index=False)
    output = tmp_path / "fig_perturbation.pdf"
    plot_figure("perturbation", source, output, [])
    assert output.read_bytes().startswith(b"%PDF")
    assert output.with_suffix(".png").stat().st_size > 20_000
    drawn = build_figure("perturbation", synthetic_profile(), {"model": "sasrec", "max_position": "10"})
    assert len(drawn.axes) == len(DATASETS)
    for ax in drawn.axes:
        assert (
            ax.get_xlabel() == "position from the end (1 = last item)" and ax.get_ylabel() and ax.get_title()
        )
        # The norms span decades: a log axis; the legend names each method with its mean total norm.
        assert ax.get_yscale() == "log"
        lines = {line.get_label(): line for line in ax.lines}
        assert set(lines) == {"adv_global (total 11.5)", "adv_cas (total 11.5)"}
        assert list(lines["adv_cas (total 11.5)"].get_xdata()) == list(range(1, 11))
        assert lines["adv_cas (total 11.5)"].get_ydata()[0] == pytest.approx(8.0)
        assert {text.get_text() for text in ax.get_legend().get_texts()} == set(lines)
    assert "ε = 10" in drawn.get_suptitle()
    with pytest.raises(CatrecError, match="max_position=0"):
        build_figure("perturbation", synthetic_profile(), {"max_position": "0"})
