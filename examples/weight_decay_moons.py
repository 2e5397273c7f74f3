"""Weight penalties against overfitting: the two-moons experiment.

A network far too large for its data (one hidden layer of 500 units, 30
training points) memorises the training set. This script trains it with no
penalty and with each keras_regkit penalty on the hidden layer's kernel, over
several seeds, and prints train and test accuracy, test loss and the hidden
kernel's L2 norm side by side (after Jason Brownlee's "How to Use Weight
Decay to Reduce Overfitting of Neural Network in Keras").

Run:

    python examples/weight_decay_moons.py            # about a minute
    python examples/weight_decay_moons.py --quick    # a few seconds
    KERAS_BACKEND=jax python examples/weight_decay_moons.py --steps 4000

Each training step uses all 30 points (the article's batch of 32 holds them
all), so the 30 rows are repeated and fed in full batches: one `fit` epoch
runs many steps, which keeps per-epoch overhead out of the way.
"""

import argparse
import time

import keras
import numpy as np
from sklearn.datasets import make_moons

import keras_regkit as kr

PENALTIES = {
    "none": None,
    "L1(1e-4)": kr.L1(1e-4),
    "L2(1e-3)": kr.L2(1e-3),
    "ElasticNet(1e-4, 1e-3)": kr.ElasticNet(1e-4, 1e-3),
    "ExpAbs(1e-3)": kr.ExpAbs(1e-3),
    "GroupLasso(1e-3)": kr.GroupLasso(1e-3),
}


def load_data():
    """The article's split: 30 training points, 70 test points."""
    x, y = make_moons(n_samples=100, noise=0.2, random_state=1)
    x, y = x.astype("float32"), y.astype("float32")
    return (x[:30], y[:30]), (x[30:], y[30:])


def build_model(penalty, seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(500, activation="relu", name="hidden"),
            keras.layers.Dense(1, activation="sigmoid", name="output"),
        ]
    )
    if penalty is not None:
        kr.regularize(model, layers="hidden", kernel=penalty)
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    return model


def train_and_score(penalty, seed, steps, train, test):
    """Trains for `steps` full-batch steps; returns the run's figures."""
    (x_train, y_train), (x_test, y_test) = train, test
    model = build_model(penalty, seed)
    steps_per_epoch = min(steps, 250)
    repeats = np.tile(np.arange(len(x_train)), steps_per_epoch)
    model.fit(
        x_train[repeats],
        y_train[repeats],
        batch_size=len(x_train),
        epochs=steps // steps_per_epoch,
        shuffle=False,
        verbose=0,
    )
    # Accuracy and loss without the penalty term: the data fit alone.
    train_accuracy = _accuracy(model, x_train, y_train)
    test_accuracy = _accuracy(model, x_test, y_test)
    probabilities = keras.ops.convert_to_numpy(model(x_test))[:, 0]
    test_loss = float(keras.losses.binary_crossentropy(y_test, probabilities))
    kernel = keras.ops.convert_to_numpy(model.get_layer("hidden").kernel)
    return {
        "train_accuracy": train_accuracy,
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "kernel_norm": float(np.linalg.norm(kernel)),
    }


def _accuracy(model, x, y):
    predictions = keras.ops.convert_to_numpy(model(x))[:, 0] > 0.5
    return float(np.mean(predictions == y.astype(bool)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=2000, help="training steps per run"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per run")
    parser.add_argument(
        "--quick", action="store_true", help="250 steps, 1 seed (a smoke run)"
    )
    args = parser.parse_args(argv)
    steps, seeds = (250, 1) if args.quick else (args.steps, args.seeds)

    train, test = load_data()
    print(
        f"Backend {keras.backend.backend()}: {steps} full-batch Adam steps, "
        f"{seeds} seed(s), 30 training and 70 test points."
    )
    results = {}
    for name, penalty in PENALTIES.items():
        started = time.perf_counter()
        runs = [
            train_and_score(penalty, seed, steps, train, test)
            for seed in range(seeds)
        ]
        results[name] = {
            key: np.array([run[key] for run in runs]) for key in runs[0]
        }
        print(f"  {name:<24} {time.perf_counter() - started:5.1f} s")
    print()
    print(format_table(results))
    return results


def format_table(results):
    """The results as a fixed-width table, with the change in test accuracy."""
    baseline = results["none"]["test_accuracy"].mean()
    header = (
        f"{'penalty':<24} {'train acc':>10} {'test acc':>16} "
        f"{'vs none':>8} {'test loss':>10} {'kernel norm':>12}"
    )
    lines = [header, "-" * len(header)]
    for name, figures in results.items():
        test_accuracy = figures["test_accuracy"]
        change = test_accuracy.mean() - baseline
        lines.append(
            f"{name:<24} {figures['train_accuracy'].mean():>10.3f} "
            f"{test_accuracy.mean():>9.3f} ± {test_accuracy.std():.3f} "
            f"{change:>+8.3f} {figures['test_loss'].mean():>10.3f} "
            f"{figures['kernel_norm'].mean():>12.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
