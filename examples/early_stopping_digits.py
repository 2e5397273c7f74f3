"""Early stopping: Keras's patience rule and Prechelt's criteria on digits.

A two-hidden-layer MLP trained on 300 of scikit-learn's 8x8 digits fits
them perfectly within a few dozen epochs; after that its validation loss
climbs while the training loss keeps falling. This script trains it over
several seeds with no early stopping and with `keras_regkit`'s
`callbacks.EarlyStopping`, watching `val_loss`:

- `patience=10`: Keras's rule (stop after 10 epochs without improvement);
- `criterion="gl", alpha=5`: Prechelt's GL_5, stop as soon as the
  validation loss is 5% above its best so far;
- `criterion="pq", alpha=0.5`: PQ_0.5, stop at the end of a 5-epoch strip
  when the generalization loss is large relative to the training progress;
- `criterion="up", alpha=3, strip_length=5`: UP_3, stop when the validation
  loss rose at the end of 3 successive 5-epoch strips.

Every early-stopped run restores the weights of its best epoch
(`restore_best_weights=True`). The table gives the epochs run, the epoch
whose weights were kept, test accuracy and test loss; below it, the
`stop_reason` each callback gave (first seed). GL reacts to any bump of
the validation loss, early ones included; PQ divides the generalization
loss by the training progress, which stays large while the training loss
keeps falling by large factors, so it may not stop within the epoch budget.
Reference: Lutz Prechelt, "Early Stopping - But When?" (1998).

Run:

    python examples/early_stopping_digits.py            # a minute or two
    python examples/early_stopping_digits.py --quick    # a few seconds
    KERAS_BACKEND=jax python examples/early_stopping_digits.py --seeds 5
"""

import argparse
import time

import keras
import numpy as np
from sklearn.datasets import load_digits

from keras_regkit.callbacks import EarlyStopping

BATCH_SIZE = 16
CRITERIA = {
    "none": None,
    "patience=10": {"patience": 10},
    "GL alpha=5": {"criterion": "gl", "alpha": 5.0},
    "PQ alpha=0.5": {"criterion": "pq", "alpha": 0.5, "strip_length": 5},
    "UP s=3": {"criterion": "up", "alpha": 3, "strip_length": 5},
}


def load_data(train=300, validation=300):
    """Digits scaled to [0, 1]: train, validation and test splits.

    The split is fixed (one shuffle with seed 0); the rest is the test set.
    """
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = (x[order] / 16.0).astype("float32"), y[order].astype("int32")
    cut = train + validation
    return (
        (x[:train], y[:train]),
        (x[train:cut], y[train:cut]),
        (x[cut:], y[cut:]),
    )


def build_model(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def train_and_score(settings, seed, epochs, data):
    """Trains one network; returns its figures and why it stopped."""
    (x_train, y_train), validation, (x_test, y_test) = data
    model = build_model(seed)
    callbacks, stop = [], None
    if settings is not None:
        stop = EarlyStopping(
            monitor="val_loss", restore_best_weights=True, **settings
        )
        callbacks.append(stop)
    history = model.fit(
        x_train,
        y_train,
        validation_data=validation,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        verbose=0,
        callbacks=callbacks,
    )
    epochs_run = len(history.history["loss"])
    test_loss, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
    if stop is None:
        kept_epoch, reason = epochs_run, f"ran all {epochs_run} epochs"
    else:
        kept_epoch = stop.best_epoch + 1
        reason = stop.stop_reason or f"did not stop in {epochs_run} epochs"
    return {
        "epochs": epochs_run,
        "kept_epoch": kept_epoch,
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
    }, reason


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs", type=int, default=60, help="most epochs per run"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per run")
    parser.add_argument(
        "--quick", action="store_true", help="20 epochs, 1 seed (a smoke run)"
    )
    args = parser.parse_args(argv)
    epochs, seeds = (20, 1) if args.quick else (args.epochs, args.seeds)

    data = load_data()
    sizes = ", ".join(str(len(split[0])) for split in data)
    print(
        f"Backend {keras.backend.backend()}: at most {epochs} epochs of Adam "
        f"(batch {BATCH_SIZE}), {seeds} seed(s); train, validation, test: "
        f"{sizes}."
    )
    results, reasons = {}, {}
    for name, settings in CRITERIA.items():
        started = time.perf_counter()
        runs = []
        for seed in range(seeds):
            figures, reason = train_and_score(settings, seed, epochs, data)
            runs.append(figures)
            if seed == 0:
                reasons[name] = reason
        results[name] = {
            key: np.array([run[key] for run in runs]) for key in runs[0]
        }
        print(f"  {name:<13} {time.perf_counter() - started:5.1f} s")
    print()
    print(format_table(results))
    print()
    print("Why each run stopped (seed 0):")
    for name, reason in reasons.items():
        print(f"  {name:<13} {reason}")
    return results, reasons


def format_table(results):
    """Means over seeds; test accuracy with its standard deviation."""
    baseline = results["none"]
    header = (
        f"{'criterion':<13} {'epochs':>7} {'kept':>6} {'test acc':>16} "
        f"{'vs none':>8} {'test loss':>10} {'vs none':>8}"
    )
    lines = [header, "-" * len(header)]
    for name, figures in results.items():
        accuracy, loss = figures["test_accuracy"], figures["test_loss"]
        lines.append(
            f"{name:<13} {figures['epochs'].mean():>7.1f} "
            f"{figures['kept_epoch'].mean():>6.1f} "
            f"{accuracy.mean():>9.4f} ± {accuracy.std():.4f} "
            f"{accuracy.mean() - baseline['test_accuracy'].mean():>+8.4f} "
            f"{loss.mean():>10.4f} "
            f"{loss.mean() - baseline['test_loss'].mean():>+8.4f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
