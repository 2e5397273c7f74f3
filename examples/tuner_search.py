"""Searching a penalty per layer with keras-tuner and RegularizedHyperModel.

`keras_regkit.tuning.RegularizedHyperModel` turns a function that builds an
ordinary, unregularized, compiled model into a keras-tuner hypermodel: with
`per_layer=True`, every trial chooses a penalty kind (none, L1, L2, elastic
net, ExpAbs) and a log-scaled strength for each Dense layer on its own.

The problem: scikit-learn's breast cancer data (30 features), with only
120 training rows for a network of two hidden layers of 256 units, which
overfits them within a few dozen epochs; 60 rows are the validation data
the search scores trials on, and the other 389 are the test set, which the
search never sees. A keras-tuner `RandomSearch` (in a temporary directory)
minimises the validation cross-entropy. The script prints the best trial's
hyperparameters and score, and the test accuracy and cross-entropy of the
best model (`tuner.get_best_models(1)[0]`) next to those of an
unregularized baseline trained the same way: through a one-trial search
whose only penalty kind is "none", so that it too is kept at its best
epoch.

Ten trials are a small search: read the difference from the baseline with
the test figures beside it, and expect the best trial's strengths to be
tiny at times (a search may well find that this model needs little
penalty). `--trials 40` searches further.

The objective is the validation cross-entropy *metric*, not `val_loss`:
Keras adds the weight penalties to the loss in evaluation too, so
`val_loss` would score trials partly on the size of their penalty.

Run (needs `pip install "keras-regkit[tuner]"`, and scikit-learn):

    python examples/tuner_search.py            # 1-2 minutes on 2 CPUs
    python examples/tuner_search.py --quick    # under half a minute
    python examples/tuner_search.py --trials 40 --epochs 150
"""

import argparse
import tempfile
import time
import warnings

import keras
import keras_tuner
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from keras_regkit.tuning import RegularizedHyperModel

OBJECTIVE = keras_tuner.Objective("val_cross_entropy", direction="min")


def load_data():
    """Standardized (train, validation, test) splits: 120, 60, 389 rows.

    Labels are columns, shaped like the model's output, as Keras's
    `BinaryCrossentropy` metric expects.
    """
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, train_size=120, stratify=y, random_state=0
    )
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, train_size=60, stratify=y_rest, random_state=0
    )
    scaler = StandardScaler().fit(x_train)
    return [
        (scaler.transform(x).astype("float32"), y[:, None].astype("float32"))
        for x, y in ((x_train, y_train), (x_val, y_val), (x_test, y_test))
    ]


def build_model():
    """The model to regularize: plain Keras, no penalty, compiled."""
    model = keras.Sequential(
        [
            keras.Input((30,)),
            keras.layers.Dense(256, activation="relu", name="hidden_1"),
            keras.layers.Dense(256, activation="relu", name="hidden_2"),
            keras.layers.Dense(1, activation="sigmoid", name="output"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="binary_crossentropy",
        metrics=[
            "accuracy",
            # The data term alone, without the penalties: the objective.
            keras.metrics.BinaryCrossentropy(name="cross_entropy"),
        ],
    )
    return model


def search(hypermodel, directory, name, trials, epochs, train, val):
    """Runs a RandomSearch; returns the tuner."""
    tuner = keras_tuner.RandomSearch(
        hypermodel,
        objective=OBJECTIVE,
        max_trials=trials,
        directory=directory,
        project_name=name,
        seed=0,
    )
    tuner.search(
        *train, validation_data=val, epochs=epochs, batch_size=32, verbose=0
    )
    return tuner


def score_on_test(model, test):
    """Accuracy and cross-entropy on the test set, without the penalties."""
    x_test, y_test = test
    probabilities = model.predict(x_test, batch_size=500, verbose=0)
    accuracy = float(np.mean((probabilities > 0.5) == y_test.astype(bool)))
    loss = float(keras.losses.BinaryCrossentropy()(y_test, probabilities))
    return accuracy, loss


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="max_trials")
    parser.add_argument("--epochs", type=int, default=40, help="per trial")
    parser.add_argument(
        "--quick", action="store_true", help="2 trials of 8 epochs (smoke)"
    )
    args = parser.parse_args(argv)
    trials, epochs = (2, 8) if args.quick else (args.trials, args.epochs)

    keras.utils.set_random_seed(0)
    train, val, test = load_data()
    print(
        f"Backend {keras.backend.backend()}: RandomSearch, {trials} trials "
        f"of {epochs} epochs; {len(train[0])} training, {len(val[0])} "
        f"validation and {len(test[0])} test rows."
    )
    with tempfile.TemporaryDirectory(prefix="keras_regkit_tuner_") as tmp:
        started = time.perf_counter()
        tuner = search(
            RegularizedHyperModel(build_model, per_layer=True),
            tmp,
            "per_layer",
            trials,
            epochs,
            train,
            val,
        )
        print(f"  search: {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        baseline_tuner = search(
            RegularizedHyperModel(build_model, kinds=["none"]),
            tmp,
            "baseline",
            1,
            epochs,
            train,
            val,
        )
        print(f"  baseline: {time.perf_counter() - started:.1f} s")
        best_trial = tuner.oracle.get_best_trials(1)[0]
        baseline_trial = baseline_tuner.oracle.get_best_trials(1)[0]
        with warnings.catch_warnings():
            # keras-tuner loads a trial's checkpoint into a model whose
            # optimizer is not built yet; Keras warns that it skips the
            # optimizer's variables. The model's weights do load.
            warnings.filterwarnings(
                "ignore", "Skipping variable loading for optimizer"
            )
            best_model = tuner.get_best_models(1)[0]
            baseline_model = baseline_tuner.get_best_models(1)[0]
        best = score_on_test(best_model, test)
        baseline = score_on_test(baseline_model, test)

    print()
    print(
        f"Best trial: {best_trial.trial_id}, val cross-entropy "
        f"{best_trial.score:.4f}, with"
    )
    for name, value in best_trial.hyperparameters.values.items():
        shown = f"{value:.3g}" if isinstance(value, float) else value
        print(f"  {name:<40} {shown}")
    print()
    print(format_table(baseline_trial.score, baseline, best_trial.score, best))
    return best_trial, best, baseline


def format_table(baseline_score, baseline, best_score, best):
    """Validation score and test figures, best model against baseline."""
    header = f"{'model':<10} {'val xent':>9} {'test acc':>9} {'test xent':>10}"
    lines = [header, "-" * len(header)]
    for name, score, (accuracy, loss) in (
        ("baseline", baseline_score, baseline),
        ("best", best_score, best),
    ):
        lines.append(f"{name:<10} {score:>9.4f} {accuracy:>9.3f} {loss:>10.4f}")
    accuracy_change = best[0] - baseline[0]
    loss_change = best[1] - baseline[1]
    better = (accuracy_change > 0) + (loss_change < 0)
    worse = (accuracy_change < 0) + (loss_change > 0)
    if better and not worse:
        verdict = "better on the test set"
    elif worse and not better:
        verdict = "no better on the test set"
    else:
        verdict = "mixed on the test set"
    lines.append(
        f"Best minus baseline: test accuracy {accuracy_change:+.3f}, test "
        f"cross-entropy {loss_change:+.4f} ({verdict})."
    )
    if baseline_score <= best_score:
        lines.append(
            "No trial beat the unregularized baseline on the validation "
            "data either: on this data the search found no penalty that "
            "helps."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
