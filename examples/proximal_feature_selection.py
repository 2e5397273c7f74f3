"""Feature selection with exact zeros: an L1 penalty and proximal steps.

A linear regression on 50 inputs of which only 5 matter (scikit-learn's
`make_regression(n_features=50, n_informative=5, noise=50)`, which also
returns the true coefficients), 200 rows to train on and 800 to validate
on. The model is a single `Dense(1)` trained with plain SGD on full
batches, three ways:

- no penalty;
- Keras's own `keras.regularizers.L1`: its subgradient is added to every
  step, so weights that should be 0 jitter around it without landing on it
  (keras-team/keras#18388);
- `keras_regkit.L1` with `callbacks.ProximalStep()`: a gradient step on the
  data loss, then the penalty's proximal step (soft-thresholding), which
  leaves a weight at exactly 0.0 when the data cannot justify it.

For each penalty strength the table gives the input weights that are
exactly 0.0, the informative inputs whose weight is not 0 (of 5), the
uninformative ones whose weight is not 0 (of 45), those whose magnitude is
below 0.01 (small but not zero), and the validation mean squared error
(targets are standardized: 1.0 is as bad as predicting the mean). Then it
lists the inputs the proximal model kept next to the truly informative
ones.

Run:

    python examples/proximal_feature_selection.py            # ~15 seconds
    python examples/proximal_feature_selection.py --quick    # a few seconds
    python examples/proximal_feature_selection.py --strengths 0.01 0.1 0.5

Full batches make this the proximal gradient method (ISTA) proper;
mini-batches add gradient noise, which can keep a few more weights off zero
at the same strength.
"""

import argparse
import time

import keras
import numpy as np
from sklearn.datasets import make_regression

import keras_regkit as kr
from keras_regkit.callbacks import ProximalStep

FEATURES, INFORMATIVE = 50, 5
LEARNING_RATE = 0.05
SMALL = 0.01
NOISE = 50.0


def load_data(train=200, validation=800):
    """Standardized targets; the indices of the informative inputs."""
    x, y, coef = make_regression(
        n_samples=train + validation,
        n_features=FEATURES,
        n_informative=INFORMATIVE,
        noise=NOISE,
        coef=True,
        random_state=0,
    )
    y = (y - y[:train].mean()) / y[:train].std()
    x, y = x.astype("float32"), y[:, None].astype("float32")
    informative = np.flatnonzero(coef)
    return (x[:train], y[:train]), (x[train:], y[train:]), informative


def build_model(regularizer, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(
                1,
                kernel_regularizer=regularizer,
                kernel_initializer=keras.initializers.RandomNormal(
                    stddev=0.1, seed=seed
                ),
                name="linear",
            ),
        ]
    )
    model.compile(keras.optimizers.SGD(LEARNING_RATE), "mse")
    return model


def train(kind, strength, steps, train_data):
    """Trains one linear model with `steps` full-batch SGD steps."""
    x, y = train_data
    callbacks = []
    if kind == "none":
        regularizer = None
    elif kind == "keras L1":
        regularizer = keras.regularizers.L1(strength)
    else:
        regularizer = kr.L1(strength)
        callbacks.append(ProximalStep())
    model = build_model(regularizer)
    # Each epoch holds `steps_per_epoch` copies of the training set, one per
    # full-batch step: fewer epochs, less per-epoch overhead.
    steps_per_epoch = min(steps, 20)
    repeats = np.tile(np.arange(len(x)), steps_per_epoch)
    model.fit(
        x[repeats],
        y[repeats],
        batch_size=len(x),
        epochs=steps // steps_per_epoch,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )
    return model


def score(model, validation, informative):
    x_val, y_val = validation
    kernel = keras.ops.convert_to_numpy(model.get_layer("linear").kernel)
    kernel = kernel[:, 0]
    relevant = np.zeros(FEATURES, dtype=bool)
    relevant[informative] = True
    nonzero = kernel != 0.0
    predictions = model.predict(x_val, verbose=0)
    return {
        "zeros": int(np.sum(~nonzero)),
        "informative_kept": int(np.sum(nonzero & relevant)),
        "uninformative_kept": int(np.sum(nonzero & ~relevant)),
        "small": int(np.sum(nonzero & (np.abs(kernel) < SMALL))),
        "val_mse": float(np.mean((predictions - y_val) ** 2)),
        "kept": np.flatnonzero(nonzero),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=300, help="full-batch SGD steps"
    )
    parser.add_argument(
        "--strengths",
        type=float,
        nargs="+",
        default=[0.03, 0.1, 0.3],
        help="L1 strengths to compare",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="100 steps, strength 0.1 only (a smoke run)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        steps, strengths = 100, [0.1]
    else:
        steps, strengths = args.steps, args.strengths

    train_data, validation, informative = load_data()
    print(
        f"Backend {keras.backend.backend()}: {steps} full-batch SGD steps "
        f"(learning rate {LEARNING_RATE}), {len(train_data[0])} training and "
        f"{len(validation[0])} validation rows, {FEATURES} inputs of which "
        f"{INFORMATIVE} matter."
    )
    runs = [("none", None)]
    for strength in strengths:
        runs += [("keras L1", strength), ("L1 + ProximalStep", strength)]
    results = []
    for kind, strength in runs:
        started = time.perf_counter()
        model = train(kind, strength, steps, train_data)
        figures = score(model, validation, informative)
        results.append((kind, strength, figures))
        label = kind if strength is None else f"{kind} ({strength:g})"
        print(f"  {label:<26} {time.perf_counter() - started:5.1f} s")
    print()
    print(format_table(results))
    print()
    print(f"Truly informative inputs: {informative.tolist()}")
    for kind, strength, figures in results:
        if kind == "L1 + ProximalStep":
            kept = figures["kept"].tolist()
            print(f"Kept by L1({strength:g}) + ProximalStep: {kept}")
    return results, informative


def format_table(results):
    header = (
        f"{'penalty':<18} {'l1':>5} {'zeros':>6} {'informative':>12} "
        f"{'uninformative':>14} {'|w|<' + str(SMALL):>9} {'val mse':>8}"
    )
    lines = [header, "-" * len(header)]
    for kind, strength, figures in results:
        strength = "-" if strength is None else f"{strength:g}"
        informative = f"{figures['informative_kept']}/{INFORMATIVE}"
        uninformative = f"{figures['uninformative_kept']}/" + str(
            FEATURES - INFORMATIVE
        )
        lines.append(
            f"{kind:<18} {strength:>5} {figures['zeros']:>6} "
            f"{informative:>12} {uninformative:>14} {figures['small']:>9} "
            f"{figures['val_mse']:>8.4f}"
        )
    lines.append(
        "zeros: input weights exactly 0.0 (of 50); informative / "
        "uninformative: inputs whose weight is not 0.0."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
