"""Train through noisy labels with weight averaging and sharpness-aware steps.

scikit-learn's 8x8 digits with 30% of the training labels replaced by a
wrong class (the test labels stay clean): a network with enough capacity
learns the wrong labels by heart, and its test accuracy falls as it does.
An MLP with a BatchNormalization layer trains four ways from the same
initial weights, with SGD and momentum:

- `plain`: `model.fit` as it is;
- `SWA`: `callbacks.WeightAveraging`, the equal-weight average of the
  weights at the end of each of the last third of the epochs, at a
  constant learning rate (`swa_lr`), with the BatchNorm statistics
  recomputed for the average over the training inputs at the end;
- `SAM`: `keras_regkit.SharpnessAware(model)`, whose every step takes the
  gradient at the worst weights within `rho` of the current ones;
- `SAM + SWA`: both.

The script prints a table: the test accuracy of the weights each run ends
with, and the accuracy on the noisy training labels, which shows how much
of the noise the model learned by heart (the 70% of labels that are right
bound what an honest model scores there). `benchmarks/bench_averaging.py`
measures the same over five seeds, with and without noise.

Run:

    python examples/swa_and_sam_noisy_labels.py           # about a minute
    python examples/swa_and_sam_noisy_labels.py --quick   # a few seconds
"""

import argparse

import keras
import numpy as np
from sklearn.datasets import load_digits

import keras_regkit as kr
from keras_regkit.callbacks import WeightAveraging

NOISE = 0.3
BATCH_SIZE = 32


def load_data(train=1300, seed=0):
    """Digits in [0, 1]; `NOISE` of the training labels made wrong."""
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    x, y = (x[order] / 16.0).astype("float32"), y[order].astype("int32")
    noisy = y[:train].copy()
    flipped = rng.choice(train, size=round(NOISE * train), replace=False)
    noisy[flipped] = (noisy[flipped] + rng.integers(1, 10, len(flipped))) % 10
    return (x[:train], noisy), (x[train:], y[train:])


def build_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(256, name="hidden1"),
            keras.layers.BatchNormalization(name="norm"),
            keras.layers.Activation("relu"),
            keras.layers.Dense(256, activation="relu", name="hidden2"),
            keras.layers.Dense(10, name="output"),
        ]
    )


def train(method, train_data, epochs):
    """Trains `method`; returns the trained model and the SWA callback."""
    x, y = train_data
    inner = build_model()
    model = kr.SharpnessAware(inner, rho=0.05) if "SAM" in method else inner
    model.compile(
        keras.optimizers.SGD(0.05, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    averaging = None
    if "SWA" in method:
        averaging = WeightAveraging(
            start_epoch=epochs - epochs // 3,
            swa_lr=0.02,
            batch_norm_data=x,  # to recompute the statistics at the end
        )
    model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        callbacks=[averaging] if averaging else [],
        verbose=0,
    )
    return inner, averaging


def accuracy(model, x, y):
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    return float(np.mean(logits.argmax(axis=1) == y))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test")
    args = parser.parse_args()
    epochs = 3 if args.quick else 45
    train_data, test_data = load_data()
    rows = []
    for method in ("plain", "SWA", "SAM", "SAM + SWA"):
        model, averaging = train(method, train_data, epochs)
        if averaging is not None:
            print(f"{method}: the average of {averaging.count} snapshots")
        rows.append(
            (
                method,
                accuracy(model, *test_data),
                accuracy(model, *train_data),
            )
        )
    print(f"\n{epochs} epochs, {NOISE:.0%} of the training labels wrong\n")
    print(f"{'method':<10} {'test accuracy':>14} {'noisy-train accuracy':>21}")
    for method, test, noisy in rows:
        print(f"{method:<10} {test:>14.4f} {noisy:>21.4f}")


if __name__ == "__main__":
    main()
