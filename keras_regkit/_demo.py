"""The overfitting lab: every keras_regkit tool on one small, real problem.

`keras-regkit demo` (or `python -m keras_regkit demo`) reproduces the
classic weight-decay experiment (scikit-learn's two moons, 30 training and
70 test points, a hidden layer of 500 units: far too large, so it
memorises the training set) and trains it with no regularization, with
each penalty, with Dropout, with EarlyStopping and with post-hoc `shrink`,
over several seeds. It prints a table, sweeps the `L2` strength from 1e-1
to 1e-6, and writes figures. Needs scikit-learn and matplotlib
(`pip install "keras-regkit[demo]"`).

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

import keras
import numpy as np

from keras_regkit import (
    L1,
    L2,
    ElasticNet,
    ExpAbs,
    GroupLasso,
    _attach,
    _shrinkage,
    _validation,
    callbacks,
    plot,
    regularize,
    shrink,
)
from keras_regkit.layers import Dropout

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

METHODS = (
    "none",
    "L1(1e-4)",
    "L2(1e-3)",
    "ElasticNet(1e-4, 1e-3)",
    "ExpAbs(1e-3)",
    "GroupLasso(1e-3)",
    "Dropout(0.4)",
    "EarlyStopping",
    "shrink",
)
PENALTIES = {
    "L1(1e-4)": L1(1e-4),
    "L2(1e-3)": L2(1e-3),
    "ElasticNet(1e-4, 1e-3)": ElasticNet(1e-4, 1e-3),
    "ExpAbs(1e-3)": ExpAbs(1e-3),
    "GroupLasso(1e-3)": GroupLasso(1e-3),
}
SWEEP = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


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
    """Accuracies and test loss of the data fit alone (no penalty term)."""

    def accuracy(x, y):
        predictions = keras.ops.convert_to_numpy(model(x))[:, 0]
        return float(np.mean((predictions > 0.5) == y.astype(bool)))

    probabilities = keras.ops.convert_to_numpy(model(test[0]))[:, 0]
    eps = 1e-7
    p = np.clip(probabilities, eps, 1 - eps)
    test_loss = -np.mean(test[1] * np.log(p) + (1 - test[1]) * np.log(1 - p))
    kernel = keras.ops.convert_to_numpy(model.get_layer("hidden").kernel)
    return {
        "train_accuracy": accuracy(*train),
        "test_accuracy": accuracy(*test),
        "test_loss": float(test_loss),
        "kernel_norm": float(np.linalg.norm(kernel)),
        "zero_fraction": float(np.mean(kernel == 0.0)),
    }


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


def _early_stopped(seed, steps, train, test, ticker):
    """`EarlyStopping` on each fold, then a refit on all the points.

    Each fold's `EarlyStopping` finds the step count at which its held-out
    points' loss was lowest; a fresh model then trains on every training
    point for the median of those counts (Goodfellow, Bengio and
    Courville's algorithm 7.2, with cross-validation).
    """
    best_epochs, held_out = [], None
    for fold, (fold_train, validation) in enumerate(_folds(train, seed)):
        stopper = callbacks.EarlyStopping(
            patience=PATIENCE, restore_best_weights=True
        )
        model = build_model(seed)
        ticks = ticker.callbacks(steps, f"fold {fold + 1}/{FOLDS}")
        history = _fit(model, fold_train, steps, validation, [stopper, *ticks])
        best_epochs.append(stopper.best_epoch + 1)
        if held_out is None:
            held_out = {
                "history": history,
                "early_stopping": stopper,
                "scores": _score(model, train, test),
            }
    trained = CHUNK * int(np.median(best_epochs))
    model = build_model(seed)
    _fit(model, train, trained, None, ticker.callbacks(trained, "refit"))
    return model, trained, {"held_out": held_out}


def _shrunk(seed, steps, train, test, ticker):
    """`shrink` on each fold, then its best level on a model of all points.

    Like glmnet's cross-validation: each fold trains on two thirds of the
    points and `shrink` measures the whole path on the third held out; the
    level with the best mean over the folds is then applied to a model
    trained on every training point.
    """
    paths, held_out = [], None
    for fold, (fold_train, validation) in enumerate(_folds(train, seed)):
        model = build_model(seed)
        ticks = ticker.callbacks(steps, f"fold {fold + 1}/{FOLDS}")
        _fit(model, fold_train, steps, None, ticks)
        report = shrink(model, validation, **SHRINK_OPTIONS)
        paths.append(report)
        if held_out is None:
            held_out = {
                "report": report,
                "scores": _score(model, train, test),
            }
    level = _chosen_level(paths)
    model = build_model(seed)
    _fit(model, train, steps, None, ticker.callbacks(steps, "refit"))
    before = keras.ops.convert_to_numpy(model.get_layer("hidden").kernel)
    if level is not None:
        # `shrink(method="scale")` multiplies the weights it selects (by
        # default every kernel) by 1 / (1 + level).
        for _, variable in _attach.selected_weights(model):
            variable.assign(variable / (1.0 + level))
    return model, steps, {"held_out": held_out, "before": before}


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


def run_method(method, seed, steps, train, test, ticker=None):
    """Trains one method on one seed; returns its figures and artefacts.

    `ticker`, a `Ticker`, shows the steps as they go.
    """
    started = time.perf_counter()
    ticker = ticker or Ticker(None)
    if method == "EarlyStopping":
        model, trained, extras = _early_stopped(
            seed, steps, train, test, ticker
        )
    elif method == "shrink":
        model, trained, extras = _shrunk(seed, steps, train, test, ticker)
    else:
        model = build_model(
            seed,
            penalty=PENALTIES.get(method),
            dropout=0.4 if method == "Dropout(0.4)" else None,
        )
        history = _fit(model, train, steps, None, ticker.callbacks(steps))
        trained, extras = steps, {"history": history}
    figures = _score(model, train, test)
    figures["steps"] = trained
    if "held_out" in extras:
        scores = extras["held_out"]["scores"]
        figures["held_out_test_accuracy"] = scores["test_accuracy"]
    figures["seconds"] = time.perf_counter() - started
    extras["model"] = model
    return figures, extras


def _mean_std(runs, key):
    values = np.array([run[key] for run in runs], dtype="float64")
    return values.mean(), values.std()


def format_table(results):
    """The side-by-side table, with an honest verdict per method."""
    baseline = _mean_std(results["none"], "test_accuracy")[0]
    header = (
        f"{'method':<24}{'train acc':>10}{'test acc':>16}{'vs none':>9}"
        f"{'test loss':>10}{'kernel L2':>10}{'zeros':>7}{'steps':>7}"
        f"{'s/run':>7}  verdict"
    )
    lines = [header, "-" * len(header)]
    for method, runs in results.items():
        test_mean, test_std = _mean_std(runs, "test_accuracy")
        change = test_mean - baseline
        if method == "none":
            verdict = "baseline"
        elif change > 0.005:
            verdict = "helps"
        elif change < -0.005:
            verdict = "hurts here"
        else:
            verdict = "no gain here"
        lines.append(
            f"{method:<24}"
            f"{_mean_std(runs, 'train_accuracy')[0]:>10.3f}"
            f"{test_mean:>9.3f} ± {test_std:.3f}"
            f"{change:>+9.3f}"
            f"{_mean_std(runs, 'test_loss')[0]:>10.3f}"
            f"{_mean_std(runs, 'kernel_norm')[0]:>10.2f}"
            f"{_mean_std(runs, 'zero_fraction')[0]:>7.0%}"
            f"{_mean_std(runs, 'steps')[0]:>7.0f}"
            f"{_mean_std(runs, 'seconds')[0]:>7.1f}  {verdict}"
        )
    return "\n".join(lines)


def average_accuracies(results):
    """Mean test accuracy of the regularized runs, and of the baseline's."""
    regularized = [
        _mean_std(runs, "test_accuracy")[0]
        for method, runs in results.items()
        if method != "none"
    ]
    baseline = _mean_std(results["none"], "test_accuracy")[0]
    return float(np.mean(regularized)), float(baseline)


def format_summary(results):
    """The average gain, and what the validation-based methods held out."""
    regularized, baseline = average_accuracies(results)
    lines = [
        f"Regularized runs on average: test accuracy {regularized:.3f}, "
        f"against {baseline:.3f} without ({regularized - baseline:+.3f})."
    ]
    held_out = {
        method: _mean_std(runs, "held_out_test_accuracy")[0]
        for method, runs in results.items()
        if "held_out_test_accuracy" in runs[0]
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


class Ticker:
    """Progress on one terminal line: steps as they go, then a result.

    The step count is rewritten in place at each `fit` epoch, and only on
    a terminal; logs and pipes get just the one line per run of `line`.

    Args:
        stream: where to write (`sys.stdout` in the demo), or `None` for
            silence.
    """

    def __init__(self, stream):
        self.stream = stream
        self.live = stream is not None and stream.isatty()
        self.label = ""

    def callbacks(self, steps, stage=""):
        """Callbacks that show the steps of a `fit` of `steps` steps."""
        if not self.live:
            return []
        prefix = f"{self.label} {stage}".rstrip()

        def show(epoch, logs=None):
            done = (epoch + 1) * CHUNK
            self.stream.write(f"\r\033[K{prefix}: step {done}/{steps}")
            self.stream.flush()

        return [keras.callbacks.LambdaCallback(on_epoch_end=show)]

    def line(self, message):
        """Writes `message` as a line of its own, over any step count."""
        if self.stream is None:
            return
        if self.live:
            self.stream.write("\r\033[K")
        self.stream.write(message + "\n")
        self.stream.flush()


def run(out="keras_regkit_demo", quick=False, seeds=None, steps=None):
    """Runs the lab; prints the tables, writes the figures to `out`.

    Args:
        out: folder for the PNG figures (created).
        quick: a short run (1 seed, 400 steps, 3 sweep points) for smoke
            tests; under a minute.
        seeds: seeds per method (default 3; 1 with `quick`).
        steps: full-batch Adam steps per run, a multiple of 50 (default
            4000, the article's 4000 epochs of one batch; 400 with
            `quick`).

    Raises:
        ValueError: for `seeds` or `steps` below 1, or `steps` not a
            multiple of 50.

    Returns:
        A dict with the per-method `results`, the `sweep`, and the paths of
        the `figures`.
    """
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
    sweep = SWEEP[1:4] if quick else SWEEP
    train, test = load_data()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ticker = Ticker(sys.stdout)
    ticker.line(
        f"keras-regkit demo on {keras.backend.backend()}: two moons, 30 "
        f"training and 70 test points, Dense({HIDDEN_UNITS}); {steps} "
        f"full-batch steps, {seeds} seed(s) per method."
    )
    total = len(METHODS) * seeds + len(sweep) * seeds
    done = 0
    results, kept = {}, {}
    for method in METHODS:
        runs = []
        for seed in range(seeds):
            done += 1
            ticker.label = f"[{done:>2}/{total}] {method} seed {seed}"
            figures, extras = run_method(
                method, seed, steps, train, test, ticker
            )
            runs.append(figures)
            if seed == 0:
                kept[method] = extras
            ticker.line(
                f"[{done:>2}/{total}] {method:<24} seed {seed}: test "
                f"accuracy {figures['test_accuracy']:.3f} "
                f"({figures['seconds']:.1f} s)"
            )
        results[method] = runs
    sweep_results = {}
    for strength in sweep:
        runs = []
        for seed in range(seeds):
            done += 1
            ticker.label = f"[{done:>2}/{total}] sweep L2({strength:g})"
            model = build_model(seed, penalty=L2(strength))
            _fit(model, train, steps, None, ticker.callbacks(steps))
            runs.append(_score(model, train, test))
            ticker.line(
                f"[{done:>2}/{total}] sweep L2({strength:g}) seed {seed}: "
                f"test accuracy {runs[-1]['test_accuracy']:.3f}"
            )
        sweep_results[strength] = {
            "train accuracy": _mean_std(runs, "train_accuracy")[0],
            "test accuracy": _mean_std(runs, "test_accuracy")[0],
        }
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
    print("L2 strength sweep (mean over seeds):")
    for strength, values in sweep_results.items():
        print(
            f"  L2({strength:g}): train {values['train accuracy']:.3f}, "
            f"test {values['test accuracy']:.3f}"
        )
    best = max(sweep_results, key=lambda s: sweep_results[s]["test accuracy"])
    print(f"  best test accuracy at L2({best:g})")
    figures = _write_figures(out, kept, sweep_results, train, test)
    print()
    print("Figures:")
    for path in figures:
        print(f"  {path}")
    return {"results": results, "sweep": sweep_results, "figures": figures}


def _write_figures(out, kept, sweep_results, train, test):
    stopping = kept["EarlyStopping"]["held_out"]
    shrunk = kept["shrink"]
    drawn = {
        "learning_curves.png": plot.plot_learning_curves(
            stopping["history"], early_stopping=stopping["early_stopping"]
        ),
        "decision_boundaries.png": _decision_boundaries(
            {
                "no regularization": kept["none"]["model"],
                "L2(1e-3)": kept["L2(1e-3)"]["model"],
                "Dropout(0.4)": kept["Dropout(0.4)"]["model"],
            },
            train,
            test,
        ),
        "weight_histograms.png": plot.plot_weight_histograms(
            {
                "hidden/kernel": keras.ops.convert_to_numpy(
                    shrunk["model"].get_layer("hidden").kernel
                )
            },
            before={"hidden/kernel": shrunk["before"]},
        ),
        "strength_sweep.png": plot.plot_strength_sweep(
            sweep_results, xlabel="L2 strength"
        ),
        "shrinkage_path.png": plot.plot_shrinkage_path(
            shrunk["held_out"]["report"]
        ),
    }
    paths = []
    for name, figure in drawn.items():
        path = out / name
        figure.savefig(path, dpi=100)
        paths.append(path)
    return paths


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
    if args.seeds is not None and args.seeds < 1:
        parser.error("--seeds must be a positive integer")
    if args.steps is not None and (args.steps < 1 or args.steps % CHUNK):
        parser.error(f"--steps must be a positive multiple of {CHUNK}")
    run(args.out, quick=args.quick, seeds=args.seeds, steps=args.steps)
    return 0
