"""The overfitting lab: every keras_regkit tool on one small, real problem.

`keras-regkit demo` (or `python -m keras_regkit demo`) reproduces the
classic weight-decay experiment (scikit-learn's two moons, 30 training and
70 test points, a hidden layer of 500 units: far too large, so it
memorises the training set) and trains it with no regularization, with
each penalty, with Dropout, with EarlyStopping, with post-hoc `shrink`,
with `GradualPruning`, with weight averaging (`callbacks.WeightAveraging`,
SWA) and with sharpness-aware steps (`SharpnessAware`, SAM), over several
seeds. It prints a table, sweeps the
`L2` strength from 1e-1 to 1e-6, and writes figures. Needs scikit-learn and
matplotlib (`pip install "keras-regkit[demo]"`).

Early stopping and shrinkage need validation data, and 30 points leave
none to spare: they choose by 3-fold cross-validation on the training
points (never the test set), each fold training on 20 and validating on 10,
then train a fresh model on all 30 with what the folds chose, the number of
steps (early stopping) or the shrinkage level (shrink). The table's summary
also says what the fold models alone, trained on 20 points, would score.
"""

import dataclasses
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_regkit import (
    L1,
    L2,
    ElasticNet,
    ExpAbs,
    GroupLasso,
    SharpnessAware,
    ShrinkageReport,
    _attach,
    _console,
    _shrinkage,
    _validation,
    _weights,
    callbacks,
    plot,
    regularize,
    shrink,
)
from keras_regkit.layers import Dropout
from keras_regkit.pruning import PolynomialDecay

HIDDEN_UNITS = 500
CHUNK = 50  # full-batch steps per `fit` epoch (and per compiled call)
FOLDS = 3  # cross-validation folds of EarlyStopping and shrink
PATIENCE = 10  # EarlyStopping's, in `fit` epochs of CHUNK steps
SHRINK_OPTIONS = {
    "method": "scale",
    "levels": np.geomspace(0.01, 10.0, 12).tolist(),
    # Accuracy, not loss: on 10 points, the loss of an overconfident model
    # rewards shrinking to near-constant predictions.
    "monitor": "accuracy",
    "select": "sparsest_within",
    "tolerance": 0.0,
}
PRUNED_SPARSITY = 0.9  # GradualPruning's final sparsity of the hidden kernel
SAM_RHO = 0.05  # SharpnessAware's neighbourhood radius (the paper's default)
SWEEP = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


@dataclasses.dataclass(frozen=True)
class Score:
    """What one trained model scores, on its data fit alone (no penalty).

    Attributes:
        train_accuracy: accuracy on the training points.
        test_accuracy: accuracy on the test points.
        test_loss: binary cross-entropy on the test points.
        kernel_norm: the L2 norm of the hidden layer's kernel.
        zero_fraction: the fraction of that kernel's entries exactly 0.
    """

    train_accuracy: float
    test_accuracy: float
    test_loss: float
    kernel_norm: float
    zero_fraction: float


@dataclasses.dataclass(frozen=True)
class SeedRun:
    """One method trained on one seed: its figures in the table.

    Attributes:
        score: the final model's `Score`.
        steps: the full-batch steps the final model trained for.
        seconds: the wall time of the whole method, folds included.
        held_out: for the methods that choose on folds, the `Score` of the
            first fold's model (trained on two thirds of the points);
            `None` for the others.
    """

    score: Score
    steps: int
    seconds: float
    held_out: Score | None = None


@dataclasses.dataclass(frozen=True)
class MethodResult:
    """One method over every seed: a row of the table.

    Attributes:
        label: the method's label.
        runs: one `SeedRun` per seed, in seed order.
        baseline: whether the method is the unregularized baseline.
    """

    label: str
    runs: tuple[SeedRun, ...]
    baseline: bool = False

    def scores(self, name):
        """The `Score` field `name` of each seed, as an array."""
        return np.array(
            [getattr(run.score, name) for run in self.runs], dtype="float64"
        )

    def mean_test_accuracy(self):
        """The test accuracy, averaged over the seeds."""
        return float(self.scores("test_accuracy").mean())


@dataclasses.dataclass(frozen=True)
class SweepPoint:
    """One strength of the `L2` sweep, its accuracies averaged over seeds."""

    strength: float
    train_accuracy: float
    test_accuracy: float


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What `run` returns.

    Attributes:
        results: a `MethodResult` per method, in `METHODS`' order.
        sweep: a `SweepPoint` per strength swept, strongest first.
        figures: the paths of the PNG figures written.
    """

    results: tuple[MethodResult, ...]
    sweep: tuple[SweepPoint, ...]
    figures: tuple[pathlib.Path, ...]


def load_data():
    """The article's split of `make_moons(100, noise=0.2, random_state=1)`."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=100, noise=0.2, random_state=1)
    x, y = x.astype("float32"), y.astype("float32")
    return (x[:30], y[:30]), (x[30:], y[30:])


def build_model(seed, penalty=None, dropout=None):
    """The oversized network, its hidden kernel optionally penalised."""
    keras.utils.set_random_seed(seed)
    layers = [
        keras.Input((2,)),
        keras.layers.Dense(HIDDEN_UNITS, activation="relu", name="hidden"),
    ]
    if dropout is not None:
        layers.append(Dropout(dropout, seed=seed, name="dropout"))
    layers.append(keras.layers.Dense(1, activation="sigmoid", name="output"))
    model = keras.Sequential(layers)
    if penalty is not None:
        regularize(model, layers="hidden", kernel=penalty)
    model.compile(
        keras.optimizers.Adam(),
        "binary_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=_steps_per_call(),
    )
    return model


def _steps_per_call():
    """A whole epoch's steps in one compiled loop, where Keras allows it.

    A step on 30 points costs less than the call that runs it; Keras runs
    PyTorch one step per call.
    """
    return 1 if keras.backend.backend() == "torch" else CHUNK


def _fit(model, train, steps, validation=None, fit_callbacks=()):
    """`steps` (a multiple of `CHUNK`) full-batch steps, `CHUNK` an epoch."""
    x, y = train
    rows = np.tile(np.arange(len(x)), CHUNK)
    return model.fit(
        x[rows],
        y[rows],
        batch_size=len(x),
        epochs=steps // CHUNK,
        shuffle=False,
        verbose=0,
        validation_data=validation,
        callbacks=list(fit_callbacks),
    )


def _score(model, train, test):
    """The `Score` of `model`: the data fit alone, without the penalty."""

    def probabilities(x):
        return keras.ops.convert_to_numpy(model(x))[:, 0]

    def accuracy(x, y):
        return float(np.mean((probabilities(x) > 0.5) == y.astype(bool)))

    x_test, y_test = test
    test_loss = keras.losses.BinaryCrossentropy()(
        y_test[:, None], probabilities(x_test)[:, None]
    )
    kernel = keras.ops.convert_to_numpy(model.get_layer("hidden").kernel)
    return Score(
        train_accuracy=accuracy(*train),
        test_accuracy=accuracy(*test),
        test_loss=float(keras.ops.convert_to_numpy(test_loss)),
        kernel_norm=float(np.linalg.norm(kernel)),
        zero_fraction=float(np.mean(kernel == 0.0)),
    )


def _folds(train, seed):
    """`FOLDS` (fit, validation) splits of the training points.

    Each validation part holds a different third of the points, in an
    order shuffled by `seed`.
    """
    x, y = train
    order = np.random.default_rng(seed).permutation(len(x))
    for held in np.array_split(order, FOLDS):
        kept = np.setdiff1d(order, held)
        yield (x[kept], y[kept]), (x[held], y[held])


@dataclasses.dataclass(frozen=True)
class Trained:
    """A method's final model on one seed, and what the figures draw of it.

    Attributes:
        model: the model trained on all the training points.
        steps: the full-batch steps it trained for.
        held_out: for the methods that choose on folds, the `Score` of the
            first fold's model; `None` for the others.
        history: EarlyStopping's first fold's `History`, else `None`.
        early_stopping: that fold's `EarlyStopping` callback, else `None`.
        shrinkage_report: shrink's first fold's `ShrinkageReport`, else
            `None`.
        kernel_before: shrink's hidden kernel before it was scaled, else
            `None`.
    """

    model: keras.Model
    steps: int
    held_out: Score | None = None
    history: keras.callbacks.History | None = None
    early_stopping: keras.callbacks.Callback | None = None
    shrinkage_report: ShrinkageReport | None = None
    kernel_before: np.ndarray | None = None


def _trained_on_all(method, seed, steps, train, test, progress):
    """`method`'s model trained `steps` steps on all the training points."""
    model = build_model(seed, method.penalty, method.dropout)
    _fit(model, train, steps, None, progress.callbacks())
    return Trained(model, steps)


def _early_stopped(method, seed, steps, train, test, progress):
    """`EarlyStopping` on each fold, then a refit on all the points.

    Each fold's `EarlyStopping` finds the step count at which its held-out
    points' loss was lowest; a fresh model then trains on every training
    point for the median of those counts (Goodfellow, Bengio and
    Courville's algorithm 7.2, with cross-validation).
    """
    best_epochs = []
    for fold, (fold_train, validation) in enumerate(_folds(train, seed)):
        stopper = callbacks.EarlyStopping(
            patience=PATIENCE, restore_best_weights=True
        )
        model = build_model(seed, method.penalty, method.dropout)
        history = _fit(
            model,
            fold_train,
            steps,
            validation,
            [stopper, *progress.callbacks()],
        )
        best_epochs.append(stopper.best_epoch + 1)
        if fold == 0:
            first = (_score(model, train, test), history, stopper)
    trained = CHUNK * int(np.median(best_epochs))
    model = build_model(seed, method.penalty, method.dropout)
    _fit(model, train, trained, None, progress.callbacks())
    held_out, history, stopper = first
    return Trained(
        model,
        trained,
        held_out=held_out,
        history=history,
        early_stopping=stopper,
    )


def _shrunk(method, seed, steps, train, test, progress):
    """`shrink` on each fold, then its best level on a model of all points.

    Like glmnet's cross-validation: each fold trains on two thirds of the
    points and `shrink` measures the whole path on the third held out; the
    level with the best mean over the folds is then applied to a model
    trained on every training point.
    """
    paths = []
    for fold, (fold_train, validation) in enumerate(_folds(train, seed)):
        model = build_model(seed, method.penalty, method.dropout)
        _fit(model, fold_train, steps, None, progress.callbacks())
        paths.append(shrink(model, validation, **SHRINK_OPTIONS))
        if fold == 0:
            held_out = _score(model, train, test)
    level = _chosen_level(paths)
    model = build_model(seed, method.penalty, method.dropout)
    _fit(model, train, steps, None, progress.callbacks())
    before = keras.ops.convert_to_numpy(model.get_layer("hidden").kernel)
    if level is not None:
        _shrink_to(model, level)
    return Trained(
        model,
        steps,
        held_out=held_out,
        shrinkage_report=paths[0],
        kernel_before=before,
    )


def _chosen_level(reports):
    """The path's level (`None`: unshrunk) chosen on the folds' mean.

    `shrink`'s own rule (`SHRINK_OPTIONS`), applied to the path whose
    metrics are the means over the folds.
    """
    first = reports[0]
    means = np.mean([[row.metric for row in r.rows] for r in reports], 0)
    rows = [
        dataclasses.replace(row, metric=float(mean))
        for row, mean in zip(first.rows, means, strict=True)
    ]
    chosen = _shrinkage.choose(
        rows, mode=first.mode, select=first.select, tolerance=first.tolerance
    )
    return rows[chosen].level


def _shrink_to(model, level):
    """Leaves `model` where `shrink(**SHRINK_OPTIONS)` would at `level`.

    The weights `shrink` selects (by default every kernel), shrunk by its
    own path. `shrink` exposes no public way to apply one given level
    without measuring it, hence its private `_Path`.
    """
    variables = [variable for _, variable in _attach.selected_weights(model)]
    path = _shrinkage._Path(
        SHRINK_OPTIONS["method"], [v.value for v in variables], "layer"
    )
    _weights.assign_values(variables, path.values(level))


def _pruned(method, seed, steps, train, test, progress):
    """`GradualPruning` of the hidden kernel to 90% zeros while it trains.

    Zhu and Gupta's cubic schedule from 0 to `PRUNED_SPARSITY` over the
    first half of the steps, pruning every `CHUNK` steps; the second half
    trains what is left.
    """
    model = build_model(seed, method.penalty, method.dropout)
    schedule = PolynomialDecay(
        0.0, PRUNED_SPARSITY, begin_step=0, end_step=steps // 2, frequency=CHUNK
    )
    pruning = callbacks.GradualPruning(schedule, layers="hidden")
    _fit(model, train, steps, None, [pruning, *progress.callbacks()])
    return Trained(model, steps)


def _averaged(method, seed, steps, train, test, progress):
    """`WeightAveraging` (SWA): the mean of the last quarter's epoch weights.

    Each `fit` epoch is `CHUNK` steps; the average of the weights at the
    end of the last quarter of them replaces the model's at the end.
    """
    model = build_model(seed, method.penalty, method.dropout)
    epochs = steps // CHUNK
    averaging = callbacks.WeightAveraging(start_epoch=epochs - epochs // 4 - 1)
    _fit(model, train, steps, None, [averaging, *progress.callbacks()])
    return Trained(model, steps)


def _sharpness_aware(method, seed, steps, train, test, progress):
    """`SharpnessAware` steps (SAM, `rho=SAM_RHO`) with the same Adam."""
    inner = build_model(seed, method.penalty, method.dropout)
    model = SharpnessAware(inner, rho=SAM_RHO)
    model.compile(
        keras.optimizers.Adam(),
        "binary_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=_steps_per_call(),
    )
    _fit(model, train, steps, None, progress.callbacks())
    return Trained(inner, steps)


@dataclasses.dataclass(frozen=True)
class Method:
    """One method of the table: its label, its model, and how it trains.

    Attributes:
        label: the table's label.
        penalty: the hidden kernel's penalty, or `None`.
        dropout: the rate of a `Dropout` after the hidden layer, or `None`.
        trainer: `trainer(method, seed, steps, train, test, progress)`
            trains it, counting its steps on `progress` (a `Progress`), and
            returns a `Trained`; by default `steps` steps on all the
            training points.
        fits: how many `fit`s of up to `steps` steps the trainer runs
            (the folds and the refit), for the length of the progress bar.
        baseline: whether this is the unregularized baseline.
        boundary_title: the title of its panel of the decision boundaries
            figure, or `None` to leave it out.
    """

    label: str
    penalty: keras.regularizers.Regularizer | None = None
    dropout: float | None = None
    trainer: Callable[..., Trained] = _trained_on_all
    baseline: bool = False
    boundary_title: str | None = None
    fits: int = 1


METHODS = (
    Method("none", baseline=True, boundary_title="no regularization"),
    Method("L1(1e-4)", penalty=L1(1e-4)),
    Method("L2(1e-3)", penalty=L2(1e-3), boundary_title="L2(1e-3)"),
    Method("ElasticNet(1e-4, 1e-3)", penalty=ElasticNet(1e-4, 1e-3)),
    Method("ExpAbs(1e-3)", penalty=ExpAbs(1e-3)),
    Method("GroupLasso(1e-3)", penalty=GroupLasso(1e-3)),
    Method("Dropout(0.4)", dropout=0.4, boundary_title="Dropout(0.4)"),
    Method("EarlyStopping", trainer=_early_stopped, fits=FOLDS + 1),
    Method("shrink", trainer=_shrunk, fits=FOLDS + 1),
    Method("GradualPruning(90%)", trainer=_pruned),
    Method("SWA", trainer=_averaged),
    Method(f"SAM({SAM_RHO:g})", trainer=_sharpness_aware),
)


def run_method(method, seed, steps, train, test, progress=None):
    """Trains one `Method` on one seed.

    `progress`, a started `Progress`, counts the steps as they go.

    Returns:
        Its `SeedRun` (the figures) and its `Trained` (the model, and what
        the figures draw).
    """
    started = time.perf_counter()
    progress = progress or Progress(0)
    trained = method.trainer(method, seed, steps, train, test, progress)
    result = SeedRun(
        score=_score(trained.model, train, test),
        steps=trained.steps,
        seconds=time.perf_counter() - started,
        held_out=trained.held_out,
    )
    return result, trained


def format_table(results):
    """The side-by-side table of `MethodResult`s, an honest verdict each."""
    baseline = _baseline(results).mean_test_accuracy()
    header = (
        f"{'method':<24}{'train acc':>10}{'test acc':>16}{'vs none':>9}"
        f"{'test loss':>10}{'kernel L2':>10}{'zeros':>7}{'steps':>7}"
        f"{'s/run':>7}  verdict"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        test = result.scores("test_accuracy")
        change = test.mean() - baseline
        if result.baseline:
            verdict = "baseline"
        elif change > 0.005:
            verdict = "helps"
        elif change < -0.005:
            verdict = "hurts here"
        else:
            verdict = "no gain here"
        lines.append(
            f"{result.label:<24}"
            f"{result.scores('train_accuracy').mean():>10.3f}"
            f"{test.mean():>9.3f} ± {test.std():.3f}"
            f"{change:>+9.3f}"
            f"{result.scores('test_loss').mean():>10.3f}"
            f"{result.scores('kernel_norm').mean():>10.2f}"
            f"{result.scores('zero_fraction').mean():>7.0%}"
            f"{np.mean([run.steps for run in result.runs]):>7.0f}"
            f"{np.mean([run.seconds for run in result.runs]):>7.1f}"
            f"  {verdict}"
        )
    return "\n".join(lines)


def _baseline(results):
    """The baseline's `MethodResult` among `results`."""
    return next(result for result in results if result.baseline)


def average_accuracies(results):
    """Mean test accuracy of the regularized runs, and of the baseline's."""
    regularized = [
        result.mean_test_accuracy() for result in results if not result.baseline
    ]
    baseline = _baseline(results).mean_test_accuracy()
    return float(np.mean(regularized)), baseline


def format_summary(results):
    """The average gain, and what the validation-based methods held out."""
    regularized, baseline = average_accuracies(results)
    lines = [
        f"Regularized runs on average: test accuracy {regularized:.3f}, "
        f"against {baseline:.3f} without ({regularized - baseline:+.3f})."
    ]
    held_out = {
        result.label: np.mean(
            [run.held_out.test_accuracy for run in result.runs]
        )
        for result in results
        if result.runs[0].held_out is not None
    }
    if held_out:
        lines.append(
            f"{' and '.join(held_out)} choose on {FOLDS} folds of the "
            "training points, then train on all of them; trained on one "
            "fold's two thirds only, they would score "
            + ", ".join(f"{m} {v:.3f}" for m, v in held_out.items())
            + "."
        )
    return "\n".join(lines)


def format_sweep(sweep):
    """The `SweepPoint`s, one line each, then the best strength."""
    lines = ["L2 strength sweep (mean over seeds):"]
    for point in sweep:
        lines.append(
            f"  L2({point.strength:g}): train {point.train_accuracy:.3f}, "
            f"test {point.test_accuracy:.3f}"
        )
    best = max(sweep, key=lambda point: point.test_accuracy)
    lines.append(f"  best test accuracy at L2({best.strength:g})")
    return "\n".join(lines)


def _decision_boundaries(models, train, test):
    """The decision boundary of each model over the data, side by side."""
    figure, grid = plot._new_figure(5.0 * len(models), 4.2, 1, len(models))
    x = np.concatenate([train[0], test[0]])
    low, high = x.min(axis=0) - 0.5, x.max(axis=0) + 0.5
    u, v = np.meshgrid(
        np.linspace(low[0], high[0], 200), np.linspace(low[1], high[1], 200)
    )
    points = np.stack([u.ravel(), v.ravel()], axis=1).astype("float32")
    for axes, (name, model) in zip(grid, models.items(), strict=True):
        p = keras.ops.convert_to_numpy(model(points))[:, 0].reshape(u.shape)
        axes.contourf(u, v, p, levels=20, cmap="RdBu_r", alpha=0.6)
        axes.contour(u, v, p, levels=[0.5], colors="black")
        for (features, labels), marker, label in (
            (train, "o", "train"),
            (test, "x", "test"),
        ):
            axes.scatter(
                features[:, 0],
                features[:, 1],
                c=labels,
                cmap="RdBu_r",
                marker=marker,
                edgecolors="black" if marker == "o" else None,
                label=label,
            )
        axes.set_title(name)
        axes.set_xlabel("x1")
        axes.set_ylabel("x2")
        axes.legend(loc="lower left", fontsize="small")
    return figure


class Progress:
    """The demo's progress, shown as Keras's `fit` shows its epochs.

    Each run (a method on a seed) gets a line naming it, as `fit` writes
    "Epoch 3/10", then a `keras.utils.Progbar` over its training steps,
    finished with its test accuracy. Written where Keras writes its own
    (standard output, or absl's log after
    `keras.config.disable_interactive_logging()`).

    Args:
        verbose: 0 silent; 1 the bar, redrawn as the steps go; 2 the
            bar's final line only, one per run.
    """

    def __init__(self, verbose):
        self.verbose = verbose
        self.bar: Any = None  # a keras.utils.Progbar while a run is shown
        self.done = 0

    def start(self, label, steps):
        """Starts a run named `label`, of about `steps` training steps."""
        self.done = 0
        if self.verbose:
            _console.write_line(label)
            self.bar = keras.utils.Progbar(
                steps,
                verbose=self.verbose,
                stateful_metrics=("test_accuracy",),
            )

    def callbacks(self):
        """Callbacks that count the steps of a `fit` of the run."""

        def advance(epoch, logs=None):
            self.done += CHUNK
            if self.verbose == 1:
                self.bar.update(self.done, finalize=False)

        return [keras.callbacks.LambdaCallback(on_epoch_end=advance)]

    def finish(self, test_accuracy):
        """Ends the run's bar at the steps it took, with its result."""
        if self.verbose:
            self.bar.update(
                self.done, [("test_accuracy", test_accuracy)], finalize=True
            )
            self.bar = None


def run(
    out="keras_regkit_demo", quick=False, seeds=None, steps=None, verbose=1
):
    """Runs the lab; prints the tables, writes the figures to `out`.

    Args:
        out: folder for the PNG figures (created if missing; an existing
            file is refused).
        quick: a short run (1 seed, 400 steps, 3 sweep points) for smoke
            tests; under a minute.
        seeds: seeds per method (default 3; 1 with `quick`).
        steps: full-batch Adam steps per run, a multiple of 50 (default
            4000, the article's 4000 epochs of one batch; 400 with
            `quick`).
        verbose: the runs' progress: 0 none; 1 a `keras.utils.Progbar`
            over each run's steps; 2 one line per run (see `Progress`).
            The tables are printed whatever it is.

    Raises:
        ValueError: for `seeds` or `steps` below 1, `steps` not a
            multiple of 50, or `out` an existing file; before training.

    Returns:
        An `Outcome`: the per-method `results`, the `sweep`, and the paths
        of the `figures`.
    """
    seeds, steps = _lengths(quick, seeds, steps)
    verbose = _validation.verbosity("verbose", verbose, (0, 1, 2))
    out = pathlib.Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(
            "Invalid value received for argument `out`. Expected a folder "
            f"for the figures. Received: out={str(out)!r}, an existing file"
        )
    strengths = SWEEP[1:4] if quick else SWEEP
    train, test = load_data()
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(verbose)
    print(
        f"keras-regkit demo on {keras.backend.backend()}: two moons, 30 "
        f"training and 70 test points, Dense({HIDDEN_UNITS}); {steps} "
        f"full-batch steps, {seeds} seed(s) per method."
    )
    numbers = _run_numbers((len(METHODS) + len(strengths)) * seeds)
    results, first = _run_methods(seeds, steps, train, test, progress, numbers)
    sweep = _run_sweep(strengths, seeds, steps, train, test, progress, numbers)
    figures = _report(out, results, first, sweep, quick, steps, train, test)
    return Outcome(results, sweep, figures)


def _lengths(quick, seeds, steps):
    """`seeds` and `steps`, their defaults filled in, checked."""
    if seeds is None:
        seeds = 1 if quick else 3
    if steps is None:
        steps = 400 if quick else 4000
    seeds = _validation.positive_int("seeds", seeds)
    steps = _validation.positive_int("steps", steps)
    if steps % CHUNK:
        raise ValueError(
            "Invalid value received for argument `steps`. Expected a "
            f"multiple of {CHUNK}. Received: steps={steps}"
        )
    return seeds, steps


def _run_numbers(total):
    """`Run 1/total`, `Run 2/total`, ...: the runs' progress labels."""
    for done in range(1, total + 1):
        yield f"Run {done}/{total}"


def _run_methods(seeds, steps, train, test, progress, numbers):
    """Trains every method of `METHODS` on every seed.

    Returns:
        A `MethodResult` per method, and the `Trained` of each method's
        seed 0, for the figures.
    """
    results, first = [], []
    for method in METHODS:
        runs = []
        for seed in range(seeds):
            label = f"{next(numbers)}: {method.label}, seed {seed}"
            progress.start(label, method.fits * steps)
            result, trained = run_method(
                method, seed, steps, train, test, progress
            )
            progress.finish(result.score.test_accuracy)
            runs.append(result)
            if seed == 0:
                first.append(trained)
        results.append(MethodResult(method.label, tuple(runs), method.baseline))
    return tuple(results), tuple(first)


def _run_sweep(strengths, seeds, steps, train, test, progress, numbers):
    """Trains with `L2` at each of `strengths`; a `SweepPoint` each."""
    sweep = []
    for strength in strengths:
        method = Method(f"L2({strength:g})", penalty=L2(strength))
        scores = []
        for seed in range(seeds):
            label = f"{next(numbers)}: sweep {method.label}, seed {seed}"
            progress.start(label, steps)
            trained = method.trainer(method, seed, steps, train, test, progress)
            scores.append(_score(trained.model, train, test))
            progress.finish(scores[-1].test_accuracy)
        sweep.append(
            SweepPoint(
                strength,
                float(np.mean([score.train_accuracy for score in scores])),
                float(np.mean([score.test_accuracy for score in scores])),
            )
        )
    return tuple(sweep)


def _report(out, results, first, sweep, quick, steps, train, test):
    """Prints the table, the summary and the sweep; writes the figures.

    Returns:
        The paths of the figures.
    """
    print()
    print(format_table(results))
    print(format_summary(results))
    if quick:
        print(
            f"(--quick: {steps} steps are too few for the network to "
            "memorise the training set, so these verdicts mean little; run "
            "without --quick for the experiment.)"
        )
    print()
    print(format_sweep(sweep))
    figures = _write_figures(out, first, sweep, train, test)
    print()
    print("Figures:")
    for path in figures:
        print(f"  {path}")
    return figures


def _write_figures(out, first, sweep, train, test):
    """Draws the figures from `first`, the methods' seed-0 `Trained`s.

    Returns:
        The paths of the PNG files written to `out`.
    """
    stopped = next(t for t in first if t.early_stopping is not None)
    shrunk = next(t for t in first if t.shrinkage_report is not None)
    boundaries = {
        method.boundary_title: trained.model
        for method, trained in zip(METHODS, first, strict=True)
        if method.boundary_title is not None
    }
    shrunk_kernel = keras.ops.convert_to_numpy(
        shrunk.model.get_layer("hidden").kernel
    )
    drawn = {
        "learning_curves.png": plot.plot_learning_curves(
            stopped.history, early_stopping=stopped.early_stopping
        ),
        "decision_boundaries.png": _decision_boundaries(
            boundaries, train, test
        ),
        "weight_histograms.png": plot.plot_weight_histograms(
            {"hidden/kernel": shrunk_kernel},
            before={"hidden/kernel": shrunk.kernel_before},
        ),
        "strength_sweep.png": plot.plot_strength_sweep(
            {
                point.strength: {
                    "train accuracy": point.train_accuracy,
                    "test accuracy": point.test_accuracy,
                }
                for point in sweep
            },
            xlabel="L2 strength",
        ),
        "shrinkage_path.png": plot.plot_shrinkage_path(shrunk.shrinkage_report),
    }
    paths = []
    for name, figure in drawn.items():
        path = out / name
        figure.savefig(path, dpi=100)
        paths.append(path)
    return tuple(paths)


def main(argv=None):
    """`keras-regkit demo [--quick] [--out DIR] [--backend NAME] ...`."""
    import argparse
    import os

    parser = argparse.ArgumentParser(
        prog="keras-regkit demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--out",
        default="keras_regkit_demo",
        help="folder for the figures (default: %(default)s)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short smoke run: 1 seed, 400 steps, 3 sweep points",
    )
    parser.add_argument(
        "--seeds", type=int, help="seeds per method (default 3; 1 quick)"
    )
    parser.add_argument(
        "--steps",
        type=int,
        help=f"full-batch steps per run, a multiple of {CHUNK} (default "
        "4000; 400 quick)",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="progress of the runs: 0 none, 1 a bar per run, 2 a line per "
        "run (default: %(default)s)",
    )
    parser.add_argument(
        "--backend",
        choices=("tensorflow", "jax", "torch"),
        help="the Keras backend (default: KERAS_BACKEND, else tensorflow)",
    )
    argv = list(argv if argv is not None else sys.argv[1:])
    args = parser.parse_args(argv)
    if args.backend and args.backend != keras.backend.backend():
        # Keras picks its backend once, at import: start again with it.
        env = dict(os.environ, KERAS_BACKEND=args.backend)
        command = [sys.executable, "-m", "keras_regkit", "demo", *argv]
        os.execve(sys.executable, command, env)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f"--out {args.out} is a file: it must name a folder")
    if args.seeds is not None and args.seeds < 1:
        parser.error("--seeds must be a positive integer")
    if args.steps is not None and (args.steps < 1 or args.steps % CHUNK):
        parser.error(f"--steps must be a positive multiple of {CHUNK}")
    run(
        args.out,
        quick=args.quick,
        seeds=args.seeds,
        steps=args.steps,
        verbose=args.verbose,
    )
    return 0
