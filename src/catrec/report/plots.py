"""Figures 3-6 of the paper and the perturbation profile, from the tidy summary CSVs only (never training).

Figures are built on a bare ``matplotlib.figure.Figure`` rather than through ``pyplot``: no GUI backend and
no global figure registry are involved (saving renders with Agg), so this works headless and in tests.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from catrec.commands import Command
from catrec.errors import CatrecError
from catrec.io import atomic_path
from catrec.report.frames import (
    DATASET_ORDER,
    MODEL_ORDER,
    label,
    ordered,
    read_table_csv,
    require_columns,
)
from catrec.vocabulary import ATTACK_LONG_COLUMNS, FIGURE_KINDS, METHODS, METRICS

PNG_DPI = 150
SINGLE_POSITIONS = ("first", "middle", "last")
# One colour per method of catrec.vocabulary.METHODS, the same in every figure, so a method is recognised
# across figures. A qualitative palette picked so that every pair is clearly apart (CIEDE2000 >= 24; seaborn's
# "colorblind" palette gave continued/adv_cas and adv_global/adv_cas_temporal pairs at 12 and 15). Black and
# grey stay free for pretraining, the start of fine-tuning and the legend's line styles.
METHOD_COLORS = {
    "base": "#0072B2",  # blue
    "continued": "#17BECF",  # cyan
    "adv_linear": "#117733",  # green
    "adv_seq": "#BCBD22",  # olive
    "adv_global": "#AA4499",  # purple
    "adv_cas": "#E41A1C",  # red
    "adv_cas_temporal": "#FF7F00",  # orange
    "adv_cas_cross": "#332288",  # indigo
}
assert tuple(METHOD_COLORS) == METHODS, "every method of catrec.vocabulary has its colour"
# Methods outside the vocabulary (a future one, a typo'd CSV) still get a stable colour.
_EXTRA_PALETTE = sns.color_palette("dark", 10)
_STYLE = {"axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9}
# A method drawn at several epsilons: its further epsilons are its colour mixed with up to this much white.
_EPSILON_LIGHTENING = 0.6

RGB = tuple[float, float, float]


def _as_read(data: pd.DataFrame, source: str) -> pd.DataFrame:
    return data


@dataclass(frozen=True)
class _Figure:
    draw: Callable[[pd.DataFrame, Mapping[str, str], str], Figure]
    columns: tuple[str, ...]
    options: frozenset[str]
    required: frozenset[str] = frozenset()
    # Brings another accepted form of the input to the one ``columns`` describe.
    reshape: Callable[[pd.DataFrame, str], pd.DataFrame] = _as_read


def _method_color(method: str) -> RGB:
    if method in METHOD_COLORS:
        return to_rgb(METHOD_COLORS[method])
    return _EXTRA_PALETTE[sum(map(ord, method)) % len(_EXTRA_PALETTE)]


def _epsilon_label(method: str, epsilon: float) -> str:
    """How a method's run at one of several epsilons is named in a legend."""
    return f"{method}, ε = {epsilon:g}"


def _runs_by_epsilon(data: pd.DataFrame, methods: list[str]) -> tuple[pd.DataFrame, dict[str, RGB]]:
    """The rows of ``methods`` with a column ``run`` to draw them by, and each run's colour in drawing order.

    ``run`` is the method, or, for a method present at several epsilons, ``_epsilon_label`` of each: runs at
    different epsilons are never averaged together. They share the method's colour, the larger epsilons
    lighter, so they read as one method yet apart; other differences (seeds) are averaged.
    """
    data = data[data["method"].isin(methods)]
    runs = data["method"].copy()
    colors = {}
    for method in methods:
        rows = data["method"] == method
        epsilons = sorted(data.loc[rows, "epsilon"].dropna().unique()) if "epsilon" in data else []
        if len(epsilons) <= 1:
            colors[method] = _method_color(method)
            continue
        for index, epsilon in enumerate(epsilons):
            run = _epsilon_label(method, epsilon)
            runs[rows & (data["epsilon"] == epsilon)] = run
            white = _EPSILON_LIGHTENING * index / (len(epsilons) - 1)
            colors[run] = tuple(channel + (1 - channel) * white for channel in _method_color(method))
    return data.assign(run=runs), colors


def wide_attacks(data: pd.DataFrame, source: str) -> pd.DataFrame:
    """The attacks table in the wide form Figures 5 and 6 read (``ATTACK_SUMMARY_COLUMNS``: each metric's
    columns side by side), from the long form (``ATTACK_LONG_COLUMNS``: one row per setting and metric, as in
    docs/evidence); a table without a ``metric`` column is taken to be wide and returned as it is."""
    if "metric" not in data.columns:
        return data
    require_columns(data, ATTACK_LONG_COLUMNS, source)
    keys = ATTACK_LONG_COLUMNS[: ATTACK_LONG_COLUMNS.index("metric") + 1]
    repeated = data.duplicated(keys)
    if repeated.any():
        row = data[repeated].iloc[0]
        raise CatrecError(f"{source}: two rows for {dict(row[keys])}")
    values = {"clean": "clean_{}", "attacked": "{}", "drop_pct": "drop_{}_pct"}
    wide = data.set_index(keys)[list(values)].unstack("metric")
    wide.columns = [values[value].format(metric) for value, metric in wide.columns]
    return wide.reset_index()


def _select(data: pd.DataFrame, options: Mapping[str, str], key: str, column: str, source: str) -> list[str]:
    """The values of ``column`` to draw, in display order: the option's comma list, or all present ones.

    Every value the option names must have rows, so a typo fails loudly instead of silently dropping a line.
    """
    if key not in options:
        preferred = {"dataset": DATASET_ORDER, "model": MODEL_ORDER, "method": METHODS}[column]
        return ordered(data[column], preferred)
    wanted = [value.strip() for value in options[key].split(",") if value.strip()]
    missing = [value for value in wanted if value not in set(data[column])]
    if not wanted or missing:
        raise CatrecError(
            f"{source}: option {key}={options[key]} selects nothing: no rows with {column} "
            f"{', '.join(missing) or '(empty)'}"
        )
    return wanted


def _nonempty(data: pd.DataFrame, source: str, what: str) -> pd.DataFrame:
    if data.empty:
        raise CatrecError(f"{source}: no rows with {what}")
    return data


def _single(values: list[str], key: str, source: str) -> str:
    if len(values) != 1:
        raise CatrecError(f"{source}: option {key}= must name exactly one value, got {','.join(values)}")
    return values[0]


def _new_figure(rows: int, columns: int, width: float, height: float) -> tuple[Figure, np.ndarray]:
    with sns.axes_style("whitegrid", _STYLE):
        figure = Figure(figsize=(width * columns + 1.8, height * rows), layout="constrained")
        axes = figure.subplots(rows, columns, squeeze=False)
    return figure, axes


def _figure_legend(figure: Figure, axes: Iterable[Axes], title: str | None = None) -> None:
    """One legend for all panels, outside on the right, with each label once."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(text, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    figure.legend(entries.values(), entries.keys(), loc="outside right center", title=title)


# One method's fine-tuning at several epsilon values in one panel: one line each, told apart by the dash.
_EPSILON_LINESTYLES = ("-", "--", ":", "-.")


def _epsilon_curves(method: str, rows: pd.DataFrame) -> list[tuple[str, pd.Series]]:
    """(label, mean validation NDCG@10 per epoch) of ``method``'s fine-tuning rows, one per epsilon.

    The mean is over seeds only: runs at different epsilon values are different curves, labelled with their
    epsilon where there are several (the pipeline's Figure 3 has one epsilon per method).
    """
    if "epsilon" not in rows or rows["epsilon"].nunique() <= 1:
        curve = rows.groupby("epoch")["ndcg@10"].mean()
        return [] if curve.empty else [(method, curve)]
    return [
        (_epsilon_label(method, epsilon), group.groupby("epoch")["ndcg@10"].mean())
        for epsilon, group in rows.groupby("epsilon")
    ]


def _fig3(data: pd.DataFrame, options: Mapping[str, str], source: str) -> Figure:
    """Validation NDCG@10 per epoch: the pretraining curve, then each method's fine-tuning curve."""
    valid = _nonempty(data[data["split"] == "valid"], source, "'valid' in column 'split'")
    datasets = _select(valid, options, "dataset", "dataset", source)
    models = _select(valid, options, "model", "model", source)
    finetuned = valid[valid["phase"] == "finetune"]
    methods = _select(finetuned, options, "methods", "method", source) if not finetuned.empty else []
    figure, axes = _new_figure(len(datasets), len(models), 4.6, 3.2)
    for row, dataset in enumerate(datasets):
        for column, model in enumerate(models):
            ax = axes[row, column]
            runs = valid[(valid["dataset"] == dataset) & (valid["model"] == model)]
            if runs.empty:
                ax.set_axis_off()
                continue
            # Finetune files may repeat the pretraining rows; the mean over identical values is the value.
            pretrain = runs[runs["phase"] == "pretrain"].groupby("epoch")["ndcg@10"].mean()
            if not pretrain.empty:
                ax.plot(pretrain.index, pretrain.to_numpy(), color="black", label="pretraining")
            for method in methods:
                finetune = runs[(runs["phase"] == "finetune") & (runs["method"] == method)]
                for line, (name, curve) in enumerate(_epsilon_curves(method, finetune)):
                    if not pretrain.empty:
                        # Start each fine-tuning line at the pretrained model it starts from: no visual gap.
                        curve = pd.concat([pretrain.iloc[-1:], curve])
                    style = _EPSILON_LINESTYLES[line % len(_EPSILON_LINESTYLES)]
                    ax.plot(
                        curve.index,
                        curve.to_numpy(),
                        color=_method_color(method),
                        linestyle=style,
                        label=name,
                    )
            start = pretrain.index.max() if not pretrain.empty else runs["epoch"].min()
            ax.axvline(start, color="grey", linestyle="--", linewidth=1, label="start of fine-tuning")
            ax.set(title=f"{label(model)} on {label(dataset)}", xlabel="epoch", ylabel="validation NDCG@10")
    _figure_legend(figure, axes.flat)
    figure.suptitle("Figure 3: NDCG@10 vs. training epochs (pretraining, then fine-tuning)")
    return figure


def _fig4(data: pd.DataFrame, options: Mapping[str, str], source: str) -> Figure:
    """Test accuracy of adv_cas against the perturbation magnitude epsilon."""
    sweep = data[(data["split"] == "test") & (data["method"] == "adv_cas") & data["epsilon"].notna()]
    sweep = _nonempty(sweep, source, "split 'test', method 'adv_cas' and an epsilon")
    datasets = _select(sweep, options, "dataset", "dataset", source)
    models = _select(sweep, options, "model", "model", source)
    figure, axes = _new_figure(len(datasets), len(METRICS), 4.4, 3.2)
    for row, dataset in enumerate(datasets):
        for column, metric in enumerate(METRICS):
            ax = axes[row, column]
            for model in models:
                runs = sweep[(sweep["dataset"] == dataset) & (sweep["model"] == model)]
                # Several seeds per epsilon are averaged.
                line = runs.groupby("epsilon")[metric].mean()
                ax.plot(line.index, line.to_numpy(), marker="o", label=label(model))
            ax.set_xscale("log")
            # Label the swept values themselves: log-scale decades alone hide which epsilons were run.
            ax.set_xticks(sorted(sweep["epsilon"].unique()))
            # Plain "0.1 1 5 10 20", as the values were configured: "20.0" and "30.0" collide on a log axis.
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set(
                title=f"{label(metric)} on {label(dataset)}",
                xlabel="ε (perturbation magnitude)",
                ylabel=f"test {label(metric)}",
            )
    _figure_legend(figure, axes.flat, title="model")
    figure.suptitle("Figure 4: influence of ε (adv_cas)")
    return figure


def _fig5(data: pd.DataFrame, options: Mapping[str, str], source: str) -> Figure:
    """Drop of accuracy when the first, middle or last item is replaced by the gradient attack."""
    attacked = data[(data["attack"] == "gradient") & data["position"].isin(SINGLE_POSITIONS)]
    attacked = _nonempty(attacked, source, "attack 'gradient' at position first, middle or last")
    dataset = _single(_select(attacked, options, "dataset", "dataset", source), "dataset", source)
    attacked = attacked[attacked["dataset"] == dataset]
    model = _single(_select(attacked, options, "model", "model", source), "model", source)
    attacked = attacked[attacked["model"] == model]
    methods = _select(attacked, options, "methods", "method", source)
    attacked, colors = _runs_by_epsilon(attacked, methods)
    figure, axes = _new_figure(1, 2, 4.6, 3.6)
    positions = [position for position in SINGLE_POSITIONS if position in set(attacked["position"])]
    for ax, metric, letter in zip(axes.flat, ("hit@10", "ndcg@10"), "ab", strict=True):
        sns.barplot(
            data=attacked,
            x="position",
            y=f"drop_{metric}_pct",
            hue="run",
            order=positions,
            hue_order=list(colors),
            palette=colors,
            errorbar=None,
            ax=ax,
        )
        for bars in ax.containers:
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set(
            title=f"({letter}) {label(metric)}: {label(model)} on {label(dataset)}",
            xlabel="replaced item",
            ylabel="drop of accuracy (%)",
        )
    _figure_legend(figure, axes.flat, title="method")
    figure.suptitle("Figure 5: drop of accuracy when one item is replaced (gradient attack; higher = worse)")
    return figure


def _fig6(data: pd.DataFrame, options: Mapping[str, str], source: str) -> Figure:
    """HT@10 when the last K items are replaced; the random replacement is the dashed baseline."""
    attacked = _nonempty(data[data["position"] == "last_k"], source, "position 'last_k'")
    model = _single(_select(attacked, options, "model", "model", source), "model", source)
    attacked = attacked[attacked["model"] == model]
    datasets = _select(attacked, options, "dataset", "dataset", source)
    methods = _select(attacked, options, "methods", "method", source)
    attacked, colors = _runs_by_epsilon(attacked, methods)
    figure, axes = _new_figure(1, len(datasets), 3.6, 3.4)
    # Random replacement: dashed, in the method's colour, with its own marker, so each method's pair of lines
    # reads as one.
    styles = {
        "gradient": {"linestyle": "-", "marker": "o", "markersize": 5},
        "random": {"linestyle": "--", "marker": "x", "markersize": 6, "alpha": 0.85},
    }
    style_labels = {"gradient": "gradient attack", "random": "random replacement"}
    for ax, dataset in zip(axes.flat, datasets, strict=True):
        runs = attacked[attacked["dataset"] == dataset]
        for attack, style in styles.items():
            for run, color in colors.items():
                line = runs[(runs["attack"] == attack) & (runs["run"] == run)].groupby("k")["hit@10"].mean()
                ax.plot(line.index, line.to_numpy(), color=color, **style)
        ax.set_xticks(sorted(runs["k"].unique()))
        ax.set(title=label(dataset), xlabel="K (replaced items at the end)", ylabel="HT@10")
    # Colours name the methods, line styles the attack: two legend sections, built by hand.
    handles = [Line2D([], [], color=color, label=run) for run, color in colors.items()]
    handles += [
        Line2D([], [], color="black", label=style_labels[attack], **style)
        for attack, style in styles.items()
        if attack in set(attacked["attack"])
    ]
    figure.legend(handles=handles, loc="outside right center", title="method / attack")
    figure.suptitle(f"Figure 6: HT@10 when replacing the last K items ({label(model)})")
    return figure


def _perturbation(data: pd.DataFrame, options: Mapping[str, str], source: str) -> Figure:
    """Mean norm of the perturbation of S by position from the end, one line per method (beyond the paper)."""
    data = _nonempty(data, source, "a perturbation profile")
    datasets = _select(data, options, "dataset", "dataset", source)
    models = _select(data, options, "model", "model", source)
    methods = _select(data, options, "methods", "method", source)
    limit = options.get("max_position")
    if limit is not None:
        if not limit.isdigit() or int(limit) < 1:
            raise CatrecError(f"{source}: option max_position={limit} must be a positive integer")
        data = data[data["position_from_end"] <= int(limit)]
    figure, axes = _new_figure(len(datasets), len(models), 4.4, 4.2)
    for row, dataset in enumerate(datasets):
        for column, model in enumerate(models):
            ax = axes[row, column]
            runs = data[(data["dataset"] == dataset) & (data["model"] == model)]
            if runs.empty:
                ax.set_axis_off()
                continue
            positive = []
            for method in methods:
                run = runs[runs["method"] == method]
                if run.empty:
                    continue
                # Seeds (and several epsilons, if given) are averaged.
                line = run.groupby("position_from_end")["mean_norm"].mean()
                total = run.groupby("seed")["total_norm"].first().mean()
                ax.plot(
                    line.index,
                    line.to_numpy(),
                    color=_method_color(method),
                    marker="o" if len(line) <= 20 else None,
                    markersize=3,
                    label=f"{method} (total {total:.3g})",
                )
                positive += [value for value in line.to_numpy() if value > 0]
            # Log scale when the norms span more than a decade: the last positions next to the first ones.
            if positive and max(positive) > 10 * min(positive):
                ax.set_yscale("log", nonpositive="mask")
            ax.set(
                title=f"{label(model)} on {label(dataset)}",
                xlabel="position from the end (1 = last item)",
                ylabel="mean ‖δ‖ at the position",
            )
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            # Below the panel: the lines start at the last item, where a legend inside would hide them.
            ax.legend(
                loc="upper center",
                bbox_to_anchor=(0.5, -0.25),
                ncol=2,
                fontsize=7,
                title="method (total: mean ‖δ‖ of a batch)",
                title_fontsize=7,
            )
    epsilons = sorted(data["epsilon"].dropna().unique())
    at = f" at ε = {', '.join(f'{value:g}' for value in epsilons)}" if epsilons else ""
    # Two lines: one panel is narrower than the whole sentence.
    figure.suptitle(f"Perturbation of the network's input S by position\n{at.strip()} (training batches)")
    return figure


_FIGURES = {
    "fig3": _Figure(
        _fig3,
        ("dataset", "model", "method", "epoch", "phase", "split", "ndcg@10"),
        frozenset({"dataset", "model", "methods"}),
    ),
    "fig4": _Figure(
        _fig4, ("dataset", "model", "method", "epsilon", "split", *METRICS), frozenset({"dataset", "model"})
    ),
    "fig5": _Figure(
        _fig5,
        ("dataset", "model", "method", "attack", "position", "drop_ndcg@10_pct", "drop_hit@10_pct"),
        frozenset({"dataset", "model", "methods"}),
        required=frozenset({"dataset", "model"}),
        reshape=wide_attacks,
    ),
    "fig6": _Figure(
        _fig6,
        ("dataset", "model", "method", "attack", "position", "k", "hit@10"),
        frozenset({"dataset", "model", "methods"}),
        required=frozenset({"model"}),
        reshape=wide_attacks,
    ),
    "perturbation": _Figure(
        _perturbation,
        ("dataset", "model", "method", "epsilon", "seed", "position_from_end", "mean_norm", "total_norm"),
        frozenset({"dataset", "model", "methods", "max_position"}),
    ),
}


def parse_options(options: Sequence[str]) -> dict[str, str]:
    """``["model=sasrec", "methods=base,adv_cas"]`` -> ``{"model": "sasrec", "methods": "base,adv_cas"}``."""
    parsed: dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip():
            raise CatrecError(f"option '{option}': expected KEY=VALUE")
        parsed[key.strip()] = value.strip()
    return parsed


def build_figure(figure: str, data: pd.DataFrame, options: Mapping[str, str], source: str = "data") -> Figure:
    """Draw ``figure`` (fig3..fig6) from a tidy frame; ``source`` names the data in error messages."""
    if figure not in _FIGURES:
        raise CatrecError(f"unknown figure '{figure}' (expected one of {', '.join(_FIGURES)})")
    spec = _FIGURES[figure]
    unknown = sorted(set(options) - spec.options)
    if unknown:
        raise CatrecError(
            f"{figure}: unknown option {unknown[0]}= (accepted: {', '.join(sorted(spec.options))})"
        )
    absent = sorted(spec.required - set(options))
    if absent:
        raise CatrecError(f"{figure}: option {absent[0]}= is required")
    data = spec.reshape(data, source)
    require_columns(data, spec.columns, source)
    return spec.draw(data, options, source)


def plot_figure(figure: str, input_csv: Path, output_pdf: Path, options: Sequence[str]) -> None:
    """Render ``figure`` from ``input_csv`` to ``output_pdf`` and a PNG of the same stem beside it."""
    drawn = build_figure(figure, read_table_csv(input_csv), parse_options(options), source=str(input_csv))
    for path, file_format in ((output_pdf, "pdf"), (output_pdf.with_suffix(".png"), "png")):
        with atomic_path(path) as temp:
            drawn.savefig(temp, format=file_format, dpi=PNG_DPI)


def _declare_plot(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("figure", choices=sorted(set(FIGURE_KINDS.values())))
    parser.add_argument(
        "--input", dest="input_csv", metavar="INPUT", type=Path, required=True, help="tidy CSV"
    )
    parser.add_argument(
        "--output",
        dest="output_pdf",
        metavar="OUTPUT",
        type=Path,
        required=True,
        help="PDF path; a PNG is written beside it",
    )
    parser.add_argument(
        "--option", dest="options", action="append", default=[], metavar="KEY=VALUE", help="e.g. model=sasrec"
    )


COMMANDS = (
    Command(
        "plot", "Render a figure from tidy CSV (never trains).", _declare_plot, Command.calling(plot_figure)
    ),
)
