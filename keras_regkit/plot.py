"""Figures of regularization at work: learning curves, weights, paths.

Each function returns a `matplotlib.figure.Figure` built without `pyplot`:
nothing is shown and no global figure state changes; save it with
`figure.savefig("name.png")`, or show it in a notebook by leaving it as the
cell's value. Needs matplotlib: `pip install "keras-regkit[plot]"`;
`import keras_regkit` does not import it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from numpy.typing import ArrayLike

from keras_regkit import _attach

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from keras_regkit._shrinkage_report import ShrinkageReport

_TRAIN_COLOR, _VALIDATION_COLOR, _MARK_COLOR = "#1f77b4", "#d62728", "#555555"


__all__ = [
    "plot_learning_curves",
    "plot_shrinkage_path",
    "plot_strength_sweep",
    "plot_weight_histograms",
]


def _new_figure(width=6.4, height=4.2, rows=1, columns=1):
    """A `Figure` and its axes, a flat array of `rows * columns`."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "keras_regkit.plot needs matplotlib. Install it with: "
            'pip install "keras-regkit[plot]"'
        ) from error
    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots(rows, columns, squeeze=False).ravel()


def _history_dict(history):
    if isinstance(history, keras.callbacks.History):
        return history.history
    if isinstance(history, dict):
        return history
    raise TypeError(
        "Invalid value received for argument `history`. Expected a "
        "keras.callbacks.History or its `history` dict. Received: "
        f"history={history!r}"
    )


def plot_learning_curves(
    history: keras.callbacks.History | dict[str, Any],
    early_stopping: keras.callbacks.Callback | None = None,
    *,
    metric: str = "loss",
) -> Figure:
    """Training against validation curves, with where overfitting begins.

    Marks the overfitting onset, the epoch with the lowest validation value
    (after it, validation gets worse while training keeps improving), and,
    when an early-stopping callback is given, the epoch it stopped at and
    the best epoch whose weights it kept.

    Args:
        history: the `History` that `fit` returned, or its `history` dict.
        early_stopping: optional `EarlyStopping` (keras_regkit's or Keras's)
            used in that `fit`.
        metric: the logged quantity to draw; its `val_` twin is drawn too
            when present. The onset is the validation minimum for a loss
            and the maximum for an accuracy-like metric (`"acc"` in the
            name).

    Returns:
        A matplotlib `Figure` with one axes: x "epoch", y `metric`.

    Example:

    >>> figure = plot_learning_curves(
    ...     {"loss": [1.0, 0.5, 0.3, 0.2], "val_loss": [1.1, 0.7, 0.8, 0.9]}
    ... )
    >>> axes = figure.axes[0]
    >>> axes.get_xlabel(), axes.get_ylabel()
    ('epoch', 'loss')
    """
    logs = _history_dict(history)
    if metric not in logs:
        raise ValueError(
            f"Invalid value received for argument `metric`: {metric!r} is "
            f"not in the history. Available: {', '.join(logs) or '(none)'}"
        )
    figure, (axes,) = _new_figure()
    train = np.asarray(logs[metric], dtype="float64")
    epochs = np.arange(1, len(train) + 1)
    axes.plot(epochs, train, color=_TRAIN_COLOR, label=f"training {metric}")
    validation = logs.get(f"val_{metric}")
    if validation is not None:
        validation = np.asarray(validation, dtype="float64")
        axes.plot(
            np.arange(1, len(validation) + 1),
            validation,
            color=_VALIDATION_COLOR,
            label=f"validation {metric}",
        )
        finite = np.where(np.isfinite(validation), validation, np.nan)
        if np.any(np.isfinite(finite)):
            maximize = "acc" in metric
            best = np.nanargmax(finite) if maximize else np.nanargmin(finite)
            if best < len(finite) - 1:
                axes.axvline(
                    best + 1,
                    color=_VALIDATION_COLOR,
                    linestyle=":",
                    label=f"overfitting onset (epoch {best + 1})",
                )
    if early_stopping is not None:
        stopped = getattr(early_stopping, "stopped_epoch", 0)
        if stopped:
            axes.axvline(
                stopped + 1,
                color=_MARK_COLOR,
                linestyle="--",
                label=f"early stop (epoch {stopped + 1})",
            )
        best_epoch = getattr(early_stopping, "best_epoch", None)
        if stopped and best_epoch is not None:
            axes.axvline(
                best_epoch + 1,
                color=_MARK_COLOR,
                linestyle="-.",
                label=f"weights kept (epoch {best_epoch + 1})",
            )
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    if "loss" in metric and np.all(train[np.isfinite(train)] > 0):
        axes.set_yscale("log")
    axes.legend()
    axes.set_title(f"Learning curves: {metric}")
    return figure


def _named_weights(source, argument):
    """`{name: 1-D numpy array}` from a model, a dict or a list."""
    if isinstance(source, keras.layers.Layer):
        return {
            name: np.ravel(keras.ops.convert_to_numpy(variable))
            for name, variable in _attach.selected_weights(source)
        }
    items: Iterable[tuple[Any, Any]]
    if isinstance(source, dict):
        items = source.items()
    elif isinstance(source, (list, tuple)):
        items = ((f"weights {i}", w) for i, w in enumerate(source))
    else:
        raise TypeError(
            f"Invalid value received for argument `{argument}`. Expected a "
            "keras model, a dict from names to arrays, or a list of arrays. "
            f"Received: {argument}={source!r}"
        )
    return {
        name: np.ravel(np.asarray(keras.ops.convert_to_numpy(w)))
        for name, w in items
    }


def plot_weight_histograms(
    model_or_weights: keras.layers.Layer
    | Mapping[str, ArrayLike]
    | Sequence[ArrayLike],
    before: keras.layers.Layer
    | Mapping[str, ArrayLike]
    | Sequence[ArrayLike]
    | None = None,
    *,
    bins: int = 60,
) -> Figure:
    """Histograms of the kernels' values, optionally before and after.

    Args:
        model_or_weights: a Keras model (its kernels, as `regularize` picks
            them), a dict from names to arrays, or a list of arrays.
        before: optionally the same weights at an earlier point (a model
            copy, dict or list), drawn underneath for comparison.
        bins: number of bins.

    Returns:
        A matplotlib `Figure`, one axes per weight tensor: x "weight value",
        y "count" (log scale), with the fraction of exact zeros in the
        legend.

    Example:

    >>> import numpy as np
    >>> figure = plot_weight_histograms({"dense/kernel": np.ones((4, 4))})
    >>> figure.axes[0].get_xlabel()
    'weight value'
    """
    after = _named_weights(model_or_weights, "model_or_weights")
    earlier = None if before is None else _named_weights(before, "before")
    if not after:
        raise ValueError("There are no weights to draw.")
    columns = min(len(after), 3)
    rows = math.ceil(len(after) / columns)
    figure, grid = _new_figure(4.0 * columns, 3.2 * rows, rows, columns)
    for axes in grid[len(after) :]:
        axes.set_visible(False)
    for axes, (name, values) in zip(grid, after.items(), strict=False):
        finite = values[np.isfinite(values)]
        series = [("after" if earlier else "weights", finite, _TRAIN_COLOR)]
        if earlier is not None and name in earlier:
            old = earlier[name][np.isfinite(earlier[name])]
            series.insert(0, ("before", old, _MARK_COLOR))
        everything = np.concatenate([s for _, s, _ in series])
        low, high = (
            (everything.min(), everything.max()) if everything.size else (0, 1)
        )
        if low == high:
            low, high = low - 0.5, high + 0.5
        edges = np.linspace(low, high, bins + 1)
        for label, data, color in series:
            zeros = np.mean(data == 0.0) if data.size else 0.0
            axes.hist(
                data,
                bins=edges,
                color=color,
                alpha=0.55,
                label=f"{label} ({zeros:.0%} exact zeros)",
            )
        axes.set_yscale("log")
        axes.set_xlabel("weight value")
        axes.set_ylabel("count")
        axes.set_title(name, fontsize="medium")
        axes.legend(fontsize="small")
    return figure


def plot_shrinkage_path(report: ShrinkageReport) -> Figure:
    """The validation metric and sparsity along a `shrink` path.

    Args:
        report: the `ShrinkageReport` that `keras_regkit.shrink` returned.

    Returns:
        A matplotlib `Figure` with two axes sharing x "shrinkage level":
        the validation metric (the original model's as a dashed line, the
        chosen level marked) and the fraction of exact zeros with the
        weights' L2 norm.

    Example:

    >>> from keras_regkit import ShrinkageReport, ShrinkageRow
    >>> report = ShrinkageReport("scale", "loss", "min", "best", 0.0, (
    ...     ShrinkageRow(None, 0.5, 10.0, 0.0, 100, 100),
    ...     ShrinkageRow(0.1, 0.4, 9.0, 0.0, 100, 100),
    ...     ShrinkageRow(1.0, 0.6, 5.0, 0.0, 100, 100)), chosen=1)
    >>> plot_shrinkage_path(report).axes[0].get_ylabel()
    'validation loss'
    """
    rows = [row for row in report.rows if row.level is not None]
    if not rows:
        raise ValueError("The report has no shrinkage level to draw.")
    levels = np.array([row.level for row in rows], dtype="float64")
    figure, (metric_axes, sparsity_axes) = _new_figure(10.0, 4.0, 1, 2)
    metric_axes.plot(
        levels, [row.metric for row in rows], "o-", color=_TRAIN_COLOR
    )
    metric_axes.axhline(
        report.before.metric,
        color=_MARK_COLOR,
        linestyle="--",
        label="before shrinking",
    )
    if report.chosen_level is not None:
        metric_axes.plot(
            [report.after.level],
            [report.after.metric],
            "*",
            markersize=16,
            color=_VALIDATION_COLOR,
            label=f"chosen: {report.after.level:.4g}",
        )
    metric_axes.set_ylabel(f"validation {report.monitor}")
    metric_axes.legend()
    sparsity_axes.plot(
        levels,
        [row.zero_fraction for row in rows],
        "o-",
        color=_VALIDATION_COLOR,
        label="fraction of exact zeros",
    )
    sparsity_axes.set_ylabel("fraction of exact zeros")
    sparsity_axes.set_ylim(-0.02, 1.02)
    norm_axes = sparsity_axes.twinx()
    norm_axes.plot(
        levels, [row.l2_norm for row in rows], "s--", color=_TRAIN_COLOR
    )
    norm_axes.set_ylabel("L2 norm of the shrunk weights")
    logarithmic = report.method != "prune" and np.all(levels > 0)
    for axes in (metric_axes, sparsity_axes):
        axes.set_xlabel("shrinkage level")
        if logarithmic:
            axes.set_xscale("log")
    figure.suptitle(f"shrink(method={report.method!r})")
    return figure


def plot_strength_sweep(
    results: dict[float, Any], *, xlabel: str = "regularization strength"
) -> Figure:
    """Metrics against a penalty's strength, on a log scale.

    Args:
        results: a dict from strength to either a number or a dict of named
            numbers (`{1e-3: {"train accuracy": 1.0, "test accuracy":
            0.93}}`); each name becomes a curve.
        xlabel: the label of the x axis.

    Returns:
        A matplotlib `Figure` with one axes: x `xlabel` (log scale), y
        "metric".

    Example:

    >>> figure = plot_strength_sweep({1e-3: 0.9, 1e-2: 0.93, 1e-1: 0.85})
    >>> figure.axes[0].get_xscale()
    'log'
    """
    if not isinstance(results, dict) or not results:
        raise ValueError(
            "Invalid value received for argument `results`. Expected a "
            "non-empty dict from strengths to metrics. Received: "
            f"results={results!r}"
        )
    strengths = sorted(results)
    if any(not (isinstance(s, (int, float)) and s > 0) for s in strengths):
        raise ValueError(
            "Invalid value received for argument `results`: strengths must "
            f"be positive numbers (log scale). Received: {strengths!r}"
        )
    curves: dict[str, list[tuple[float, float]]] = {}
    for strength in strengths:
        value = results[strength]
        named = value if isinstance(value, dict) else {"metric": value}
        for name, number in named.items():
            curves.setdefault(name, []).append((strength, float(number)))
    figure, (axes,) = _new_figure()
    for name, points in curves.items():
        x, y = zip(*points, strict=True)
        axes.plot(x, y, "o-", label=name)
    axes.set_xscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("metric")
    if len(curves) > 1 or "metric" not in curves:
        axes.legend()
    axes.set_title("Strength sweep")
    return figure
