"""SWA and SAM on noisy labels: test accuracy, and what they cost.

What is measured
----------------
Data: scikit-learn's `load_digits` (1,797 images of 8x8 pixels, 10
classes), scaled to [0, 1], split once, stratified with `random_state=0`,
into 1,280 training images (40 batches of 32) and 517 test images. With
label noise, 30% of the training labels (chosen by the seed) are replaced
by another class drawn uniformly (the test labels stay clean): the regime
in which Baek, Kolter and Raghunathan (ICLR 2024) report SAM's largest
gains. The model: an MLP 64-256-256-10 (ReLU, linear output), SGD with
momentum 0.9 at `LEARNING_RATE`, sparse categorical cross-entropy on the
logits, batches of 32, `fit`'s shuffling.

1. Accuracy. For each noise level (0 and 30%) and each of `--seeds` seeds
   (5), four methods train `--epochs` epochs (40) from the same initial
   weights, with the test set as validation data:

   - plain: `model.fit`;
   - SWA: `WeightAveraging(start_epoch=0.75 * epochs, swa_lr=SWA_LR,
     validate_averaged=True)`: the last quarter of the epochs averaged,
     at a constant rate;
   - SAM: `SharpnessAware(model, rho=RHO)`, the same optimizer;
   - SAM + SWA: both.

   Reported for each: the test accuracy at the last epoch (the weights
   `fit` leaves: for SWA the average) and at the best epoch (the highest
   test accuracy over the epochs, an oracle's choice and so an upper
   bound), as the mean and the spread (min-max) over the seeds. No target:
   the numbers are what they are.

2. Cost, on the benchmark MLP of `_harness` (784-1024-1024-10, synthetic
   data, batches of 128) so that an epoch is long enough to time. In
   `--rounds` (7) interleaved rounds, one `fit` of `--timed-epochs` (4)
   epochs of `--steps` (40) steps per contender, the first epoch of each
   `fit` discarded; a callback first in the list starts the clock in
   `on_epoch_begin` and another last stops it in `on_epoch_end`:

   - plain: the model alone;
   - SAM: `SharpnessAware(model)`; target: its epoch time / plain's
     <= 2.05 (two forward-backward passes are the floor of 2.0);
   - SWA: `WeightAveraging(start_epoch=0)`, an average every epoch;
   - EMA: `WeightAveraging(start_epoch=0, mode="ema")`, an average every
     step; target for both: epoch time / plain's <= 1.03;
   - Keras EMA: the incumbent, `SGD(use_ema=True, ema_momentum=0.999)`,
     which averages inside the compiled step (and gives the model the
     average when `fit` ends). Left out on JAX, where a model's second
     `fit` with it fails in Keras 3.15 (the bug that `WeightAveraging`
     avoids by giving each variable its own copy).

Run: `python benchmarks/bench_averaging.py [--quick] [--json PATH]`
(`--quick`: a smoke test, its numbers mean nothing; `--parts timing` for
the second part alone).
"""

import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from _harness import (  # noqa: E402
    Contender,
    Run,
    interleaved_rounds,
    markdown_table,
    ratio_cell,
    ratios,
)

from keras_regkit import SharpnessAware  # noqa: E402
from keras_regkit.callbacks import WeightAveraging  # noqa: E402

TRAIN_ROWS = 1280
BATCH = 32
LEARNING_RATE = 0.05
SWA_LR = 0.02
RHO = 0.05
NOISE_LEVELS = (0.0, 0.3)
METHODS = ("plain", "SWA", "SAM", "SAM + SWA")
SAM_TARGET = 2.05
AVERAGING_TARGET = 1.03
PARTS = ("accuracy", "timing")
KERAS_EMA = "Keras EMA (use_ema=True)"


def parse_args(argv=None):
    parser = _harness.ArgumentParser(__doc__)
    parser.add_setting("--seeds", default=5, quick=1, help="seeds per method")
    parser.add_setting(
        "--epochs",
        default=40,
        quick=4,
        minimum=4,
        why="SWA averages the last quarter",
        help="epochs of each accuracy run",
    )
    parser.add_setting("--rounds", default=7, quick=1, help="timed rounds")
    parser.add_setting(
        "--timed-epochs",
        default=4,
        quick=2,
        minimum=2,
        why="the first epoch is discarded",
        help="epochs of each timed fit",
    )
    parser.add_setting("--steps", default=40, quick=4, help="steps per epoch")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="which parts to run (default: both)",
    )
    return parser.parse_args(argv)


# Part 1: accuracy.


def load_data():
    """`(x_train, y_train, x_test, y_test)`, flat rows in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return train_test_split(
        x, y.astype("int32"), train_size=TRAIN_ROWS, stratify=y, random_state=0
    )


def flip_labels(y, fraction, seed):
    """`y` with `fraction` of its labels replaced by another class."""
    rng = np.random.default_rng(seed)
    y = y.copy()
    flipped = rng.choice(len(y), size=round(fraction * len(y)), replace=False)
    y[flipped] = (y[flipped] + rng.integers(1, 10, size=len(flipped))) % 10
    return y


def build(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def train(method, data, noise, seed, epochs):
    """`(best, last)` test accuracy of `method` for one seed."""
    x_train, x_test, y_train, y_test = data
    y_train = flip_labels(y_train, noise, seed) if noise else y_train
    inner = build(seed)
    model = SharpnessAware(inner, rho=RHO) if "SAM" in method else inner
    model.compile(
        keras.optimizers.SGD(LEARNING_RATE, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    callbacks = []
    if "SWA" in method:
        start = round(0.75 * epochs)
        callbacks.append(
            WeightAveraging(start, swa_lr=SWA_LR, validate_averaged=True)
        )
    history = model.fit(
        x_train,
        y_train,
        batch_size=BATCH,
        epochs=epochs,
        validation_data=(x_test, y_test),
        callbacks=callbacks,
        verbose=0,
    )
    accuracy = history.history["val_accuracy"]
    last = model.evaluate(x_test, y_test, verbose=0)[1]
    return max(accuracy), float(last)


def run_accuracy(args):
    data = load_data()
    results = {}
    for noise in NOISE_LEVELS:
        for method in METHODS:
            runs = [
                train(method, data, noise, args.seed + i, args.epochs)
                for i in range(args.seeds)
            ]
            results[f"{noise:g}/{method}"] = {
                "noise": noise,
                "method": method,
                "best": [best for best, _ in runs],
                "last": [last for _, last in runs],
            }
            print(
                f"  noise {noise:g} {method}: last "
                f"{np.mean(results[f'{noise:g}/{method}']['last']):.4f}",
                file=sys.stderr,
                flush=True,
            )
    return results


def spread_cell(values):
    return f"{np.mean(values):.4f} ({min(values):.4f}-{max(values):.4f})"


def accuracy_table(results):
    rows = []
    for row in results.values():
        plain = results[f"{row['noise']:g}/plain"]
        rows.append(
            (
                f"{row['noise']:.0%}",
                row["method"],
                spread_cell(row["last"]),
                f"{np.mean(row['last']) - np.mean(plain['last']):+.4f}",
                spread_cell(row["best"]),
            )
        )
    return markdown_table(
        (
            "label noise",
            "method",
            "last epoch: mean (min-max)",
            "vs plain",
            "best epoch (oracle): mean (min-max)",
        ),
        "llrrr",
        rows,
    )


# Part 2: cost.


class Clock(keras.callbacks.Callback):
    """Times each epoch in process CPU time: `start` first in the list."""

    def __init__(self):
        super().__init__()
        self.seconds = []
        self.start = _Start(self)

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.process_time() - self.started)


class _Start(keras.callbacks.Callback):
    def __init__(self, clock):
        super().__init__()
        self.clock = clock

    def on_epoch_begin(self, epoch, logs=None):
        gc.collect()
        self.clock.started = time.process_time()


class Trainee(Contender):
    """One `fit` of `epochs` epochs; its result, the median epoch time
    after the first."""

    def __init__(self, model, data, epochs, callbacks=()):
        self.model, self.data, self.epochs = model, data, epochs
        self.clock = Clock()
        self.callbacks = [self.clock.start, *callbacks, self.clock]

    def run(self):
        x, y = self.data
        self.model.fit(
            x,
            y,
            batch_size=_harness.BATCH_SIZE,
            epochs=self.epochs,
            callbacks=self.callbacks,
            verbose=0,
        )

    def finish(self, result):
        return float(np.median(self.clock.seconds[1:]))


def timing_contenders(args):
    data = _harness.make_data(args.steps, args.seed)

    def mlp():
        return _harness.build_mlp(args.seed)

    sam = SharpnessAware(_harness.build_mlp(args.seed))
    sam.compile(
        keras.optimizers.SGD(_harness.LEARNING_RATE),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    # The incumbent of EMA: Keras's optimizers average inside the step.
    keras_ema = mlp()
    keras_ema.compile(
        keras.optimizers.SGD(
            _harness.LEARNING_RATE, use_ema=True, ema_momentum=0.999
        ),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    epochs = args.timed_epochs
    contenders = {
        "plain": Trainee(mlp(), data, epochs),
        "SAM": Trainee(sam, data, epochs),
        "SWA": Trainee(mlp(), data, epochs, [WeightAveraging(0)]),
        "EMA": Trainee(mlp(), data, epochs, [WeightAveraging(0, mode="ema")]),
        KERAS_EMA: Trainee(keras_ema, data, epochs),
    }
    if keras.backend.backend() == "jax":
        # Its second `fit` fails: the average it writes into the model at
        # the end of the first shares a buffer with the optimizer's copy,
        # and the next step donates both ("Attempt to donate the same
        # buffer twice").
        print(
            f"  {KERAS_EMA} left out: on JAX, a model's second fit with it "
            "fails (Keras 3.15)",
            file=sys.stderr,
        )
        del contenders[KERAS_EMA]
    return contenders


def run_timing(args):
    measured = interleaved_rounds(
        timing_contenders(args),
        args.rounds,
        args.seed,
        baseline="plain",
        label="timing ",
        progress=lambda m: f"plain epoch {m.results['plain'][-1]:.3f} s",
    )
    epochs = measured.results
    return {
        "epoch_s": epochs,
        "vs_plain": {
            name: ratios(epochs[name], epochs["plain"]) for name in epochs
        },
    }


def timing_table(timing):
    rows = [
        (
            name,
            f"{np.median(timing['epoch_s'][name]) * 1e3:.0f}",
            ratio_cell(timing["vs_plain"][name]),
        )
        for name in timing["epoch_s"]
    ]
    return markdown_table(
        ("contender", "epoch CPU ms (median)", "epoch / plain's"), "lrr", rows
    )


def checks_of(timing):
    ratio = {name: q[1] for name, q in timing["vs_plain"].items()}
    return [
        (
            f"SAM epoch / plain <= {SAM_TARGET}",
            f"{ratio['SAM']:.3f}x",
            ratio["SAM"] <= SAM_TARGET,
        ),
        *(
            (
                f"{name} (WeightAveraging) epoch / plain <= {AVERAGING_TARGET}",
                f"{ratio[name]:.3f}x",
                ratio[name] <= AVERAGING_TARGET,
            )
            for name in ("SWA", "EMA")
        ),
    ]


def main(argv=None):
    args = parse_args(argv)
    run = Run(f"parts {', '.join(args.parts)}", args.quick)
    accuracy = run_accuracy(args) if "accuracy" in args.parts else None
    timing = run_timing(args) if "timing" in args.parts else None
    run.stop()
    quick, backend = run.quick_note, run.backend
    if accuracy is not None:
        print(
            f"\n### {backend}: load_digits test accuracy ({quick}"
            f"{args.seeds} seeds, {args.epochs} epochs x 40 steps of {BATCH}, "
            f"SGD({LEARNING_RATE}, momentum 0.9); SWA from epoch "
            f"{round(0.75 * args.epochs)} at {SWA_LR}; SAM rho {RHO}; "
            f"{run.stamp})\n\n" + accuracy_table(accuracy)
        )
    if timing is not None:
        print(
            f"\n### {backend}: epoch time ({quick}{args.rounds} rounds of "
            f"one fit of {args.timed_epochs} epochs x {args.steps} steps of "
            f"{_harness.BATCH_SIZE}, the benchmark MLP, first epoch "
            "discarded; median of per-round ratios)\n\n" + timing_table(timing)
        )
    run.report(
        checks_of(timing) if timing is not None else [],
        args.json,
        settings=vars(args),
        accuracy=accuracy,
        timing=timing,
    )


if __name__ == "__main__":
    main()
