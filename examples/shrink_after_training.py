"""Post-hoc shrinkage: exact zeros in a trained digits classifier.

An MLP (64 -> 256 -> 10) is trained on scikit-learn's 8x8 digits with no
penalty at all. `keras_regkit.shrink` then walks a path of shrinkage
levels on the trained model, measures each on held-out validation data and
keeps the sparsest point whose validation metric is within `tolerance` of
the best one found (`select="sparsest_within"`), never a point worse than
the model it started from. Two methods, each from the same trained
weights:

- `method="prune"`: the smallest-magnitude fraction of each kernel set to
  exactly 0 (fractions 0.1 ... 0.95);
- `method="soft_threshold"`: every kernel entry moved towards 0 by a
  threshold, and those within it set to 0 (the proximal step of an L1
  penalty).

`shrink` judges each level by validation accuracy here (`--monitor loss`
judges by the validation data loss instead, a finer and stricter test).
Accuracy ignores how confident the predictions are: a shrunk model can keep
its accuracy while its loss rises, so the summary shows both.
With 400 validation digits, accuracy moves in steps of 0.0025, and the
floor (never worse than the trained model) usually decides before the
tolerance does: a level one digit below the start is not a candidate.
For each method, the script prints `report.as_table()` (the path walked, the
chosen level marked), then a summary: validation metric, test accuracy and
test loss before and after, and the fraction of weights that are exactly
0.0, in the kernels `shrink` worked on and in the whole model (biases
included, which are left alone).

Run:

    python examples/shrink_after_training.py                # half a minute
    python examples/shrink_after_training.py --quick        # a few seconds
    python examples/shrink_after_training.py --monitor loss --tolerance 0.02
"""

import argparse
import time

import keras
import numpy as np
from sklearn.datasets import load_digits

import keras_regkit as kr

METHODS = ("prune", "soft_threshold")


def load_data(train=900, validation=400):
    """Digits scaled to [0, 1]: train, validation and test splits."""
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
            keras.layers.Dense(256, activation="relu", name="hidden"),
            keras.layers.Dense(10, activation="softmax", name="output"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def zero_fraction(model):
    """The fraction of all the model's weights that are exactly 0.0."""
    weights = model.get_weights()
    zeros = sum(int(np.sum(w == 0.0)) for w in weights)
    return zeros / sum(w.size for w in weights)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs", type=int, default=40, help="training epochs"
    )
    parser.add_argument(
        "--monitor",
        default="accuracy",
        help="validation metric shrink judges by ('accuracy' or 'loss')",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="relative tolerance of select='sparsest_within'",
    )
    parser.add_argument(
        "--quick", action="store_true", help="10 epochs (a smoke run)"
    )
    args = parser.parse_args(argv)
    epochs = 10 if args.quick else args.epochs

    (x_train, y_train), validation, (x_test, y_test) = load_data()
    print(
        f"Backend {keras.backend.backend()}: {epochs} epochs of Adam on "
        f"{len(x_train)} digits; {len(validation[0])} validation and "
        f"{len(x_test)} test digits; shrink monitors validation "
        f"{args.monitor}, select='sparsest_within', "
        f"tolerance={args.tolerance:g}."
    )
    model = build_model(seed=0)
    started = time.perf_counter()
    model.fit(x_train, y_train, batch_size=32, epochs=epochs, verbose=0)
    print(f"Trained in {time.perf_counter() - started:.1f} s.")
    trained = model.get_weights()
    test_loss, test_accuracy = _test(model, x_test, y_test)
    before = {"loss": test_loss, "accuracy": test_accuracy}
    before["zeros"] = zero_fraction(model)

    summary = {}
    for method in METHODS:
        model.set_weights(trained)  # each method starts from the same model
        started = time.perf_counter()
        report = kr.shrink(
            model,
            validation,
            method=method,
            monitor=args.monitor,
            select="sparsest_within",
            tolerance=args.tolerance,
        )
        elapsed = time.perf_counter() - started
        test_loss, test_accuracy = _test(model, x_test, y_test)
        summary[method] = {
            "level": report.chosen_level,
            "val_before": report.before.metric,
            "val_after": report.after.metric,
            "kernel_zeros_before": report.before.zero_fraction,
            "accuracy": test_accuracy,
            "loss": test_loss,
            "kernel_zeros": report.after.zero_fraction,
            "zeros": zero_fraction(model),
        }
        print()
        print(f"shrink(method={method!r}) in {elapsed:.1f} s:")
        print(report.as_table())
    print()
    print(format_summary(before, summary, args.monitor))
    return before, summary


def _test(model, x, y):
    """Test loss and accuracy."""
    loss, accuracy = model.evaluate(x, y, verbose=0)
    return float(loss), float(accuracy)


def format_summary(before, summary, monitor):
    """Before and after each method, as a fixed-width table."""
    header = (
        f"{'model':<15} {'level':>7} {'val ' + monitor:>13} {'test acc':>9} "
        f"{'test loss':>10} {'kernel zeros':>13} {'all zeros':>10}"
    )
    lines = [header, "-" * len(header)]
    first = next(iter(summary.values()))
    lines.append(
        f"{'trained':<15} {'-':>7} {first['val_before']:>13.4f} "
        f"{before['accuracy']:>9.4f} {before['loss']:>10.4f} "
        f"{first['kernel_zeros_before']:>13.1%} "
        f"{before['zeros']:>10.1%}"
    )
    for method, figures in summary.items():
        level = "-" if figures["level"] is None else f"{figures['level']:.3g}"
        lines.append(
            f"{method:<15} {level:>7} {figures['val_after']:>13.4f} "
            f"{figures['accuracy']:>9.4f} {figures['loss']:>10.4f} "
            f"{figures['kernel_zeros']:>13.1%} {figures['zeros']:>10.1%}"
        )
    kept = [m for m, f in summary.items() if f["level"] is None]
    if kept:
        lines.append(
            f"No level of {', '.join(kept)} was as good as the trained model "
            "on the validation data: its weights were kept unchanged."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
