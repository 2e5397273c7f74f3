"""Prune a digits classifier while it trains, then make the model smaller.

An MLP (64 -> 256 -> 256 -> 10) on scikit-learn's 8x8 digits, trained
three ways from the same initial weights:

- `dense`: no pruning, the reference;
- `pruned 90%`: `callbacks.GradualPruning` with Zhu and Gupta's cubic
  schedule (`pruning.PolynomialDecay`) from 0 to 90% zeros in every kernel
  over the first two thirds of training: single weights, the sparsity
  sparse kernels and compressed files use;
- `units 75%`: the same schedule to 75% with `structure="units"`, which
  prunes whole hidden units (their kernel columns and biases), then
  `keras_regkit.compact`, which builds a new model without them: fewer
  parameters, and faster inference on any hardware.

The masks hold the pruned weights at exactly 0.0 through every optimizer
update, and no layer is wrapped: each trained model saves and loads as the
plain Keras model it is. The script prints each run's sparsity after every
epoch as `fit` logs it, then a table: test accuracy, the kernels' zeros,
the parameters left and the CPU time of `predict_on_batch` on 256 rows.
`compact`'s model predicts what the pruned one predicts, to float
rounding; the script checks it.

Run:

    python examples/prune_and_compact.py           # about half a minute
    python examples/prune_and_compact.py --quick   # a few seconds
"""

import argparse
import time

import keras
import numpy as np
from sklearn.datasets import load_digits

import keras_regkit as kr
from keras_regkit.callbacks import GradualPruning
from keras_regkit.pruning import PolynomialDecay

BATCH_SIZE = 32


def load_data(train=1300):
    """Digits scaled to [0, 1]: train and test splits."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = (x[order] / 16.0).astype("float32"), y[order].astype("int32")
    return (x[:train], y[:train]), (x[train:], y[train:])


def build_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(256, activation="relu", name="hidden1"),
            keras.layers.Dense(256, activation="relu", name="hidden2"),
            keras.layers.Dense(10, name="output"),
        ]
    )
    compile_model(model)
    return model


def compile_model(model):
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def train(train_data, epochs, callbacks=()):
    """A fresh model trained `epochs` epochs; returns it and its History."""
    model = build_model()
    x, y = train_data
    history = model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        verbose=0,
        callbacks=list(callbacks),
    )
    return model, history


def pruning(train_data, epochs, sparsity, **options):
    """`GradualPruning` to `sparsity` over the first 2/3 of training."""
    steps = epochs * -(-len(train_data[0]) // BATCH_SIZE)
    schedule = PolynomialDecay(
        0.0,
        sparsity,
        begin_step=0,
        end_step=2 * steps // 3,
        frequency=max(1, steps // 30),
    )
    return GradualPruning(schedule, **options)


def kernel_zeros(model):
    kernels = [layer.kernel for layer in model.layers]
    zeros = sum(
        int((keras.ops.convert_to_numpy(k) == 0).sum()) for k in kernels
    )
    return zeros / sum(int(np.prod(k.shape)) for k in kernels)


def inference_ms(model, x, repeats):
    model.predict_on_batch(x)  # traces it
    started = time.process_time()
    for _ in range(repeats):
        model.predict_on_batch(x)
    return 1000 * (time.process_time() - started) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test")
    args = parser.parse_args()
    epochs, repeats = (3, 5) if args.quick else (30, 50)
    train_data, (x_test, y_test) = load_data()

    runs = {"dense": train(train_data, epochs)[0]}
    for label, sparsity, options in (
        ("pruned 90%", 0.9, {}),
        ("units 75%", 0.75, {"layers": "hidden*", "structure": "units"}),
    ):
        model, history = train(
            train_data,
            epochs,
            [pruning(train_data, epochs, sparsity, **options)],
        )
        logged = ", ".join(f"{s:.2f}" for s in history.history["sparsity"])
        print(f"{label}: sparsity after each epoch: {logged}")
        runs[label] = model

    pruned = runs["units 75%"]
    dead = {name: len(units) for name, units in kr.dead_units(pruned).items()}
    print(f"\ndead units per layer: {dead}")
    compacted = kr.compact(pruned)
    compile_model(compacted)
    np.testing.assert_allclose(
        compacted.predict(x_test, verbose=0),
        pruned.predict(x_test, verbose=0),
        atol=1e-5,
    )
    runs["units 75%, compact"] = compacted

    batch = x_test[:256]
    header = (
        f"{'model':<20}{'test acc':>9}{'zeros':>8}{'params':>9}{'ms/batch':>10}"
    )
    print(f"\n{header}\n{'-' * len(header)}")
    for label, model in runs.items():
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        print(
            f"{label:<20}{accuracy:>9.3f}{kernel_zeros(model):>8.0%}"
            f"{model.count_params():>9}"
            f"{inference_ms(model, batch, repeats):>10.2f}"
        )


if __name__ == "__main__":
    main()
