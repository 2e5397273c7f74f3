"""Post-hoc weight shrinkage: make a trained model's weights smaller, safely.

`shrink` walks a path of shrinkage levels on a trained model, measures each
point on validation data and keeps the best one. The model that comes back
is never worse on that data than the one that went in.
"""

import math
from collections.abc import Callable, Iterable
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_regkit import (
    _attach,
    _masks,
    _metrics,
    _penalty_state,
    _proximal,
    _weights,
)
from keras_regkit._shrink_options import ShrinkOptions, data_arguments
from keras_regkit._shrinkage_report import ShrinkageReport, ShrinkageRow
from keras_regkit.selectors import LayerSelector

# The defaults of `shrink`'s options, written once, in `ShrinkOptions`.
_DEFAULT = ShrinkOptions


_DEFAULT_LEVELS = {
    "scale": tuple(float(f"{x:.3g}") for x in np.geomspace(1e-3, 1.0, 10)),
    "prune": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
    "penalty": tuple(float(f"{x:.3g}") for x in np.geomspace(1e-6, 1e-2, 9)),
}
_SOFT_THRESHOLD_QUANTILES = (0.05, 0.95)
_SOFT_THRESHOLD_LEVELS = 10


def shrink(
    model: keras.Model,
    validation_data: Any,
    *,
    method: str,
    levels: Iterable[float] | None = _DEFAULT.levels,
    layers: LayerSelector | None = _DEFAULT.layers,
    bias: bool = _DEFAULT.bias,
    monitor: str = _DEFAULT.monitor,
    mode: str = _DEFAULT.mode,
    select: str = _DEFAULT.select,
    tolerance: float = _DEFAULT.tolerance,
    prune_scope: str = _DEFAULT.prune_scope,
    structure: _masks.Structure = _DEFAULT.structure,
    finetune_data: Any = _DEFAULT.finetune_data,
    finetune_epochs: int = _DEFAULT.finetune_epochs,
    regularizer: str
    | Callable[[float], keras.regularizers.Regularizer] = _DEFAULT.regularizer,
    proximal: bool = _DEFAULT.proximal,
    batch_size: int | None = _DEFAULT.batch_size,
    verbose: int = _DEFAULT.verbose,
) -> ShrinkageReport:
    """Shrinks a trained model's weights as far as the validation data allows.

    Tries each level of a shrinkage path, measures the model on
    `validation_data` at each, and leaves the model at the chosen point:

    - `method="scale"`: the weights times `1 / (1 + level)`, the proximal
      step of an L2 penalty (`L2(l2).prox(w, step)` with
      `level = 2 * step * l2`);
    - `method="soft_threshold"`: `sign(w) * max(|w| - level, 0)`, the
      proximal step of an L1 penalty: exact zeros;
    - `method="prune"`: the fraction `level` of smallest-magnitude entries
      of each weight tensor set to 0 (of all of them together with
      `prune_scope="global"`); with `structure="units"`, whole output units
      (Dense columns, convolution filters, with their biases) by the RMS of
      their weights, the fraction `level` of units, which
      `keras_regkit.compact` then removes from the model; with
      `structure=(rows, cols)`, blocks of each kernel by their mean `|w|`;
    - `method="penalty"`: fine-tunes on `finetune_data` with the penalty
      `regularizer` at each strength in `levels`, in increasing order, each
      from the previous point, as glmnet walks its lambda path. With
      `proximal=True` and a penalty that has a proximal operator (all of
      keras_regkit's), fine-tuning takes proximal steps (`ProximalStep`), so
      L1-type penalties give exact zeros.

    The first three start each level from the original weights; with
    `finetune_data` they then fine-tune `finetune_epochs` epochs at each
    level, holding the zeros of that level at exactly 0.

    Selection. Only points no worse than the original model on
    `validation_data` are candidates (the original itself always is).
    `select="best"` keeps the candidate with the best metric (the sparsest
    on ties); `select="sparsest_within"` keeps the simplest candidate (most
    exact zeros, then smallest norm) whose metric is within `tolerance`
    (relative) of the best: a one-standard-error-style rule.

    Guarantees. The model comes back never worse on `validation_data` than
    it went in: if no level is at least as good, the original weights are
    put back bit for bit. If anything raises midway (a keyboard interrupt
    included, or the data raising), every variable the model holds (its
    weights, non-trainable state, `SeedGenerator` states, its metrics' and,
    when fine-tuning ran, the optimizer's variables), penalties and
    constraints are restored before the error propagates, on every
    backend. The optimizer's state is untouched unless
    fine-tuning ran; the weights' penalties and constraints are as before.

    Cost. Without fine-tuning, each level costs one `evaluate` plus one pass
    over the selected weights: nothing is retraced or recompiled. Memory:
    one copy of the model's variables (its weights, seed states and
    metrics' variables, on their device), to restore them; with
    fine-tuning, also one of the optimizer's state, and one more copy of
    the weights per candidate level, to return to the chosen one.

    Args:
        model: a compiled, trained `keras.Model`; changed in place.
        validation_data: `(x, y)`, `(x, y, sample_weight)` or a dataset (as
            for `evaluate`), the data each level is judged on.
        method: `"scale"`, `"soft_threshold"`, `"prune"` or `"penalty"`.
        levels: the levels to try (sorted, duplicates removed). Defaults:
            `scale` 10 log-spaced factors from 1e-3 to 1; `soft_threshold`
            10 log-spaced thresholds between the 5% and 95% quantiles of the
            weights' magnitudes; `prune` fractions 0.1, 0.2, ..., 0.9, 0.95;
            `penalty` 9 log-spaced strengths from 1e-6 to 1e-2.
        layers: which layers' weights to shrink, a selector as in
            `regularize` (see `keras_regkit.selectors`); `None` means all.
        bias: whether biases are shrunk too (kernels of every kind are).
        monitor: a loss or metric the compiled model reports (`"loss"`,
            `"accuracy"`, ...; a `val_` prefix is accepted). `"loss"` is the
            data loss: the weight penalties that Keras adds to it are taken
            out, so that shrinking is not rewarded for its own sake.
        mode: `"auto"` (the direction Keras gives the metric), `"min"` or
            `"max"`.
        select: `"best"` or `"sparsest_within"`.
        tolerance: non-negative float, relative tolerance of
            `"sparsest_within"`.
        prune_scope: `"layer"` or `"global"`, for `method="prune"`.
        structure: for `method="prune"`, `None` (single entries),
            `"units"` or a block shape `(block_rows, block_cols)`, as in
            `callbacks.GradualPruning`. Kernels only (`bias` must be
            False): `"units"` prunes each unit's bias with it, and chooses
            Dense, convolution and depthwise convolution layers only.
        finetune_data: `(x, y)`, `(x, y, sample_weight)` or a dataset to
            fine-tune on after each shrink; required for `"penalty"`.
        finetune_epochs: positive int, epochs of fine-tuning per level.
        regularizer: for `"penalty"`: a regularizer name (`"l1"`, `"l2"`,
            `"elastic_net"`, `"exp_abs"`, `"group_lasso"`), whose strengths
            are set to each level, or a function from a level to a
            regularizer.
        proximal: for `"penalty"`, fine-tune with proximal steps.
        batch_size: batch size of `evaluate` and fine-tuning, or `None`.
        verbose: 0 silent; 1 a progress bar over the levels (as `fit`
            shows its steps), with the last level's metric and fraction of
            zeros; 2 one line per level.

    Returns:
        A `ShrinkageReport`.

    Raises:
        ValueError, TypeError: for bad arguments, before any weight changes.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> keras.utils.set_random_seed(0)
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 10))
    >>> y = x[:, :1] + 0.1 * rng.normal(size=(200, 1))
    >>> model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(0.1), "mse")
    >>> _ = model.fit(x[:100], y[:100], epochs=30, verbose=0)
    >>> report = shrink(model, (x[100:], y[100:]), method="soft_threshold",
    ...                 levels=[0.01, 0.03, 0.1])
    >>> report.after.metric <= report.before.metric
    True
    >>> report.after.zero_fraction > 0
    True
    """
    _check_model(model)
    options = ShrinkOptions(
        method=method,
        levels=levels,
        layers=layers,
        bias=bias,
        monitor=monitor,
        mode=mode,
        select=select,
        tolerance=tolerance,
        prune_scope=prune_scope,
        structure=structure,
        finetune_data=finetune_data,
        finetune_epochs=finetune_epochs,
        regularizer=regularizer,
        proximal=proximal,
        batch_size=batch_size,
        verbose=verbose,
    )
    validation = data_arguments(validation_data, "validation_data")
    return run(model, validation, options)


def run(model, validation_arguments, options):
    """`shrink`, with checked options and `evaluate`'s data arguments.

    Args:
        model: the model.
        validation_arguments: keyword arguments of `model.evaluate` that
            give it the validation data, or a function of no arguments
            returning them, called before each evaluation (for data that
            must be handed to the model anew each time).
        options: a `ShrinkOptions`.
    """
    _check_model(model)
    walk = _Walk(model, options, validation_arguments)
    original = _weights.copy_values(walk.state)
    position = {id(v): i for i, v in enumerate(walk.state)}
    originals = [original[position[id(v)]] for v in walk.variables]
    try:
        return _walk_path(walk, original, originals)
    except BaseException:
        walk.restore_settings()
        _weights.assign_values(walk.state, original)
        raise


class _Walk:
    """One call of `shrink`: the model, its options and what to restore.

    Attributes:
        model: the model.
        options: the `ShrinkOptions`.
        mode: `options.mode`, with `"auto"` resolved for this model.
        validation_arguments: `evaluate`'s data arguments, or a function
            returning them.
        variables: the weights to shrink.
        state: every variable a level may change, to restore on error.
        progress: the `keras.utils.Progbar` showing the walk, or None.
        measured: how many points have been measured.
    """

    def __init__(self, model, options, validation_arguments):
        self.model = model
        self.options = options
        self.mode = _resolve_mode(model, options.monitor, options.mode)
        self.progress = None
        self.measured = 0
        self.validation_arguments = validation_arguments
        self.targets = None
        if options.pruning_structure is None:
            self.variables = [
                variable
                for _, variable in _attach.selected_weights(
                    model, options.layers, options.bias
                )
            ]
        else:
            self.targets = _masks.targets(
                model, options.layers, options.pruning_structure
            )
            self.variables = [t.kernel for t in self.targets] + [
                t.bias for t in self.targets if t.bias is not None
            ]
        self.state = _model_state(model, options.finetuning)
        self.saved_regularizers = [v.regularizer for v in self.variables]
        self.saved_constraints = [v.constraint for v in self.variables]

    def measure(self, level):
        """Evaluates the model as it is now, as a `ShrinkageRow`."""
        options = self.options
        monitor, key = options.monitor, options.metric_key
        arguments = self.validation_arguments
        if callable(arguments):
            arguments = arguments()
        results = self.model.evaluate(
            **arguments,
            batch_size=options.batch_size,
            verbose=0,
            return_dict=True,
        )
        if key not in results:
            raise ValueError(
                f"shrink monitors `{monitor}`, which the model's evaluate() "
                f"does not return. Available: {', '.join(results)}"
            )
        metric = _metrics.scalar(results[key], monitor, "shrink")
        if key == "loss":
            metric -= _weight_penalty(self.model)
        row = ShrinkageRow(level, metric, *_weight_statistics(self.variables))
        if self.progress is not None:
            self.measured += 1
            self.progress.update(
                self.measured,
                [
                    ("level", 0.0 if level is None else level),
                    (monitor, metric),
                    ("zeros", row.zero_fraction),
                ],
                # verbose=2: one line per level, as `fit` writes one per epoch.
                finalize=options.verbose == 2 or None,
            )
        return row

    def show_progress(self, points):
        """Shows the measures of `points` points as Keras's `fit` shows epochs.

        `verbose=1`: a `keras.utils.Progbar` over the points, the last
        one's level, metric and fraction of zeros beside it; `verbose=2`:
        one line per point. Written where Keras writes its own (standard
        output, or absl's log with `keras.config.disable_interactive_logging`).
        """
        if self.options.verbose:
            self.progress = keras.utils.Progbar(
                points,
                verbose=self.options.verbose,
                stateful_metrics=("level", self.options.monitor, "zeros"),
                unit_name="level",
            )

    def no_worse(self, metric, reference):
        """Whether `metric` is finite and at least as good as `reference`."""
        return _no_worse(metric, reference, self.mode)

    def finetune(self, level, masks):
        """Fine-tunes the model at `level`, holding the zeros of `masks`."""
        proximal = False
        if self.options.method == "penalty":
            penalty = self.options.penalty(level)
            for variable in self.variables:
                variable.regularizer = penalty
            if self.options.proximal and hasattr(penalty, "prox"):
                proximal = True
                _penalty_state.start_proximal_steps(
                    self.model,
                    _penalty_state.proximal_targets(
                        self.model, self.options.layers
                    ),
                )
        elif masks is not None:
            for variable, mask, constraint in zip(
                self.variables, masks, self.saved_constraints, strict=True
            ):
                variable.constraint = _HoldZeros(mask, constraint)
        _penalty_state.refresh_compiled_functions(self.model)
        try:
            self.model.fit(
                **self.options.finetune_arguments,
                batch_size=self.options.batch_size,
                epochs=self.options.finetune_epochs,
                verbose=0,
            )
        finally:
            if proximal:
                _penalty_state.release_proximal_steps(self.model)
        self.restore_settings()

    def restore_settings(self):
        for variable, regularizer, constraint in zip(
            self.variables,
            self.saved_regularizers,
            self.saved_constraints,
            strict=True,
        ):
            variable.regularizer = regularizer
            variable.constraint = constraint
        _penalty_state.refresh_compiled_functions(self.model)


def _walk_path(walk, original, originals):
    """Walks the levels, leaves the model at the chosen point."""
    levels = walk.options.levels
    if levels is None:
        if walk.options.method == "soft_threshold":
            levels = _default_soft_thresholds(originals)
        else:
            levels = _DEFAULT_LEVELS[walk.options.method]
    walk.show_progress(1 + len(levels))
    rows = [walk.measure(None)]
    path: _Path | _StructuredPath | None
    if walk.options.method == "penalty":
        path = None
    elif walk.targets is not None:
        path = _StructuredPath(
            originals,
            walk.targets,
            walk.options.pruning_structure,
            walk.options.prune_scope,
        )
    else:
        path = _Path(walk.options.method, originals, walk.options.prune_scope)
    kept = {}
    for level in levels:
        masks = None
        if path is not None:
            values = path.values(level)
            _weights.assign_values(walk.variables, values)
            if walk.options.finetuning and walk.options.method != "scale":
                masks = [ops.not_equal(v, 0) for v in values]
        if walk.options.finetuning:
            walk.finetune(level, masks)
        row = walk.measure(level)
        rows.append(row)
        if walk.options.finetuning and walk.no_worse(
            row.metric, rows[0].metric
        ):
            kept[len(rows) - 1] = _weights.copy_values(walk.model.weights)
    chosen = choose(
        rows,
        mode=walk.mode,
        select=walk.options.select,
        tolerance=walk.options.tolerance,
    )
    if chosen == 0:
        _weights.assign_values(walk.state, original)
    elif walk.options.finetuning:
        _weights.assign_values(walk.model.weights, kept[chosen])
    else:
        assert path is not None  # only "penalty" has none, and it fine-tunes
        _weights.assign_values(walk.variables, path.values(rows[chosen].level))
    return ShrinkageReport(
        method=walk.options.method,
        monitor=walk.options.monitor,
        mode=walk.mode,
        select=walk.options.select,
        tolerance=walk.options.tolerance,
        rows=tuple(rows),
        chosen=chosen,
    )


def choose(rows, *, mode, select, tolerance):
    """The index of the `ShrinkageRow` of `rows` that `shrink` would keep.

    `rows[0]` is the model as it came in; `mode`, `select` and `tolerance`
    are `shrink`'s. Also usable on rows whose metrics are means over
    several validation folds.
    """
    candidates = [
        i
        for i, row in enumerate(rows)
        if i == 0 or _no_worse(row.metric, rows[0].metric, mode)
    ]
    sign = 1.0 if mode == "min" else -1.0

    def simplicity(i):
        # Most zeros first, then the smallest norm.
        return (-rows[i].zero_fraction, rows[i].l2_norm)

    best = min(candidates, key=lambda i: (sign * rows[i].metric, simplicity(i)))
    if select == "best":
        return best
    margin = tolerance * abs(rows[best].metric)
    within = [
        i
        for i in candidates
        if sign * (rows[i].metric - rows[best].metric) <= margin
    ]
    return min(within, key=simplicity)


def _no_worse(metric, reference, mode):
    """Whether `metric` is finite and at least as good as `reference`."""
    if not math.isfinite(metric):
        return False
    if mode == "min":
        return metric <= reference
    return metric >= reference


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Invalid value received for argument `model`. Expected a "
            f"keras.Model. Received: model={model!r}"
        )
    if not getattr(model, "compiled", False):
        raise ValueError(
            "shrink needs a compiled model: call `model.compile(...)` first."
        )


def _resolve_mode(model, monitor, mode):
    """`mode`, with `"auto"` replaced by the metric's direction."""
    if mode != "auto":
        return mode
    direction = _metrics.direction(model, monitor)
    if direction is None:
        raise ValueError(
            f"shrink received monitor={monitor!r}, but cannot tell whether "
            "that metric should be maximized or minimized. Pass "
            "`mode='max'` or `mode='min'`."
        )
    return "max" if direction == "up" else "min"


def _model_state(model, finetuning):
    """Every variable that a level of `shrink` may change, once each.

    Not only the weights shrunk: every variable the model holds (its
    weights, non-trainable state and `SeedGenerator` states), and its
    metrics' variables, since on JAX a `fit` or `evaluate` that raises
    leaves all of them without values; dropout in a fine-tuning `fit`
    advances the seed states on every backend. With fine-tuning, the
    optimizer's variables too (built first if they are not, so that they
    exist to be restored), to return the model exactly as it came.
    """
    variables = list(model.variables) + list(model.metrics_variables)
    if finetuning:
        optimizer = model.optimizer
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        variables += optimizer.variables
    unique, seen = [], set()
    for variable in variables:
        if id(variable) not in seen:
            seen.add(id(variable))
            unique.append(variable)
    return unique


def _weight_statistics(variables):
    """`(l2_norm, zero_fraction, nonzero, parameters)` of `variables`."""
    values = [v.value for v in variables]
    squares = ops.stack(
        [ops.sum(ops.square(ops.cast(w, "float32"))) for w in values]
    )
    nonzero = ops.stack(
        [ops.sum(ops.cast(ops.not_equal(w, 0), "int32")) for w in values]
    )
    squares = ops.convert_to_numpy(squares).astype("float64")
    nonzero = int(ops.convert_to_numpy(nonzero).astype("int64").sum())
    parameters = sum(math.prod(v.shape) for v in variables)
    return (
        math.sqrt(float(squares.sum())),
        1.0 - nonzero / parameters,
        nonzero,
        parameters,
    )


def _weight_penalty(model):
    """The sum of the weight penalties Keras adds to the loss."""
    terms = [
        ops.cast(ops.sum(variable.regularizer(variable)), "float32")
        for variable in model.trainable_weights
        if variable.regularizer is not None
    ]
    if not terms:
        return 0.0
    return float(ops.convert_to_numpy(ops.sum(ops.stack(terms))))


class _Path:
    """The shrunk values of the selected weights at each level."""

    def __init__(self, method, originals, prune_scope):
        self.method = method
        self.originals = originals
        self.ranks: list[tuple[Any, int]] | None = None
        if method == "prune":
            self.ranks = _magnitude_ranks(originals, prune_scope)

    def values(self, level):
        if self.method == "scale":
            return [w / (1.0 + level) for w in self.originals]
        if self.method == "soft_threshold":
            return [_proximal.soft_threshold(w, level) for w in self.originals]
        assert self.ranks is not None  # "prune" has them
        return [
            ops.where(rank >= math.floor(level * size), w, ops.zeros_like(w))
            for w, (rank, size) in zip(self.originals, self.ranks, strict=True)
        ]


class _StructuredPath:
    """Structured pruning's values of the selected weights at each level.

    `originals` are the values of the targets' kernels, then of the biases
    pruned with their units (those targets that have one), as in
    `_Walk.variables`.
    """

    def __init__(self, originals, targets, structure, prune_scope):
        self.targets = targets
        self.structure = structure
        self.prune_scope = prune_scope
        arrays = [ops.convert_to_numpy(value) for value in originals]
        self.kernels = arrays[: len(targets)]
        self.biases = arrays[len(targets) :]

    def values(self, level):
        masks = _masks.masks(
            self.kernels,
            level,
            self.structure,
            self.prune_scope,
            [target.unit_axes for target in self.targets],
        )
        kernels = [k * m for k, m in zip(self.kernels, masks, strict=True)]
        keeps = [
            _masks.unit_mask(mask, target.unit_axes)
            for target, mask in zip(self.targets, masks, strict=True)
            if target.bias is not None
        ]
        biases = [b * k for b, k in zip(self.biases, keeps, strict=True)]
        return kernels + biases


class _HoldZeros:
    """A variable constraint keeping the zeros of a mask during fine-tuning."""

    def __init__(self, mask, constraint):
        self.mask = mask
        self.constraint = constraint

    def __call__(self, w):
        w = w * ops.cast(self.mask, w.dtype)
        if self.constraint is not None:
            w = self.constraint(w)
        return w


def _default_soft_thresholds(originals):
    """Log-spaced thresholds between quantiles of the weights' magnitudes."""
    magnitudes = np.concatenate(
        [np.abs(ops.convert_to_numpy(value)).ravel() for value in originals]
    )
    magnitudes = magnitudes[magnitudes > 0]
    if magnitudes.size == 0:
        raise ValueError(
            "Every selected weight is already 0: there is nothing to shrink."
        )
    low, high = np.quantile(magnitudes, _SOFT_THRESHOLD_QUANTILES)
    return tuple(
        float(f"{x:.3g}")
        for x in np.geomspace(low, high, _SOFT_THRESHOLD_LEVELS)
    )


def _magnitude_ranks(originals, scope):
    """For each weight tensor, the rank of each entry's magnitude.

    Ranks are taken within each tensor (`scope="layer"`) or across all of
    them (`"global"`); ties are broken by position, so pruning a fraction
    `f` zeroes exactly `floor(f * n)` entries.
    """
    arrays = [np.abs(ops.convert_to_numpy(value)) for value in originals]
    if scope == "layer":
        groups = [[array] for array in arrays]
    else:
        groups = [arrays]
    ranks = []
    for group in groups:
        flat = np.concatenate([array.ravel() for array in group])
        order = np.argsort(flat, kind="stable")
        rank = np.empty(flat.size, dtype="int64")
        rank[order] = np.arange(flat.size)
        start = 0
        for array in group:
            part = rank[start : start + array.size].reshape(array.shape)
            ranks.append((ops.convert_to_tensor(part, "int32"), flat.size))
            start += array.size
    return ranks
