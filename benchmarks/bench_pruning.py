"""`GradualPruning` against TF-MOT: accuracy, step time; then `compact`.

What is measured
----------------
Data: scikit-learn's `load_digits` (1,797 images of 8x8 pixels, 10
classes), scaled to [0, 1] (divided by 16), split once, stratified with
`random_state=0`, into 1,280 training images (40 batches of 32) and 517
test images. Two models, the same in Keras 3 (`keras`) and in Keras 2
(`tf_keras`, the only Keras TF-MOT works with), each given the Keras 3
model's initial weights (`get_weights`/`set_weights`):

- MLP: 64-256-256-10 (ReLU, linear output), 85,002 parameters;
- CNN: Conv2D(16, 3) and Conv2D(32, 3) (same padding, ReLU), 2x2 max
  pooling, Flatten, Dense(64, ReLU), Dense(10): 38,282 parameters.

Both train with `Adam(1e-3)`, sparse categorical cross-entropy on the
logits (`from_logits=True`), batches of 32 and `fit`'s shuffling, no
metric. The script counts the parameters from the models and prints them.

1. Accuracy at equal sparsity. For each final sparsity S of `--sparsities`
   (0.5, 0.8, 0.9) and each of `--seeds` seeds (3: `--seed`, `--seed` + 1,
   ...), each model trains `--epochs` epochs (20, so 800 steps) twice:

   - ours: the Keras 3 model with `callbacks=[GradualPruning(
     PolynomialDecay(0.0, S, begin_step=0, end_step=10 * F,
     frequency=F))]`, every kernel pruned (the default: TF-MOT prunes
     Dense and Conv kernels, not biases, and so does ours);
   - TF-MOT's: the tf_keras model wrapped by
     `tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=
     tfmot.sparsity.keras.PolynomialDecay(0.0, S, 0, 10 * F,
     frequency=F))`, trained with `callbacks=[UpdatePruningStep()]`, then
     `strip_pruning`.

   F is 6.5% of the training steps (52 of 800), so that there are 10
   pruning steps and the final sparsity is reached at 65% of training,
   then held. (TF-MOT counts steps from 1 where we count them from 0, the
   optimizer's iteration count: its pruning steps fall one batch earlier.)
   Each model's dense accuracy is measured too, as a reference: the same
   training with no pruning, Keras 3 and tf_keras. Reported: the test
   accuracy (mean, min and max over the seeds) and the sparsity reached,
   the fraction of exact zeros in all the kernels of the final model,
   counted on the model itself (ours) or on the stripped one (TF-MOT's).
   Target: ours >= TF-MOT's - 0.01 in mean accuracy at every sparsity, for
   each model. Checked as well: that ours reached S (within 0.005).

2. Train-step time. Each model trains, in `--rounds` (7) interleaved
   rounds, one `fit` call of `--timed-epochs` (6) epochs per contender:

   - "Keras 3, no pruning": the Keras 3 model alone;
   - "GradualPruning, masks held": with `GradualPruning(ConstantSparsity(
     0.8, begin_step=0, end_step=0))`, pruned to 0.8 once, at the start
     of each `fit`, and then held: the cost of the mask constraints alone;
   - "GradualPruning": with `GradualPruning(ConstantSparsity(0.8,
     begin_step=0, frequency=P))`, P being the steps of an epoch: a
     pruning step every epoch (part 1 prunes every 1.3 epochs);
   - "tf_keras, no pruning": the tf_keras model alone;
   - "TF-MOT": the tf_keras model under `prune_low_magnitude` with
     `tfmot.sparsity.keras.ConstantSparsity(0.8, begin_step=0,
     frequency=P)`, and `UpdatePruningStep()`.

   A timed epoch is the training set seen `--tile` (4) times (160 steps),
   so that an epoch is long enough to time. A callback first in the list
   starts the clock in `on_epoch_begin` and another one last stops it in
   `on_epoch_end`, so each epoch's time holds every callback's epoch and
   batch hooks (the masks rebuilt by a pruning step, TF-MOT's re-masking
   at the end of each epoch). The first epoch of each `fit` is discarded
   (it traces the step, and ours traces it again in `on_train_begin`);
   the median of the others is the contender's time in that round. The
   tables give the median over rounds of per-round ratios: ours against
   TF-MOT's (target <= 1.00x), and, so that the gap between Keras 3's
   and Keras 2's own step is in plain view, each pruned model against its
   own framework's unpruned one, and Keras 3 against tf_keras, unpruned.
   On Keras 3 the train functions built during the timed epochs are
   counted (`make_train_function` wrapped): 0 expected on TensorFlow and
   PyTorch, one per pruning step on JAX, whose compiled step holds the
   masks as constants, so that each pruning step traces and compiles the
   step again. After the rounds the pruned models must hold 0.8 of their
   kernels at zero (within 0.01).

3. Compaction. Each model trains `--compact-epochs` (30) epochs in two
   ways that zero whole hidden units (those of the output layer are the
   classes, and stay):

   - "GroupLasso + ProximalStep": `kernel_regularizer=keras_regkit.
     GroupLasso(s)` on the hidden kernels (its groups are a Dense kernel's
     output units and a convolution's filters), s = 0.1 (MLP) or 0.05
     (CNN), with `callbacks=[ProximalStep()]`, which sets whole groups to
     exactly 0.0; s was chosen so that tens of units end up at zero (the
     table counts them) with the test accuracy within a point of the
     dense model's;
   - "GradualPruning(structure='units')": `GradualPruning(PolynomialDecay(
     0.0, U, ...), layers=("dense_*", "conv_*"), structure="units")`,
     with part 1's steps (10 pruning steps, the last at 65% of training),
     U = 0.75 (MLP) or 0.5 (CNN) of each hidden layer's units, whose
     kernel slices and biases it zeroes;

   then `keras_regkit.compact(model, verbose=0)`. Reported: for each
   hidden layer, the units whose kernel slice is all zero and those
   `keras_regkit.dead_units` lists, which `compact` removes (folding each
   one's constant output, `activation(bias)`, into the next layer's bias
   where that is exact); the parameters and the test accuracy before and
   after (they must be equal), and the largest difference of the test
   logits; and the process CPU time of `model.predict_on_batch` at batch
   1 (`--calls` (200) calls per timed run) and at batch 256 (a fifth as
   many calls), before and after, over `--inference-rounds` (9)
   interleaved rounds after one untimed run of each (the trace). Target:
   the speed-up (before / after) is at least 0.8 times the reduction of
   the parameters (before / after), at each batch size.

Method
------
As in the other benchmarks (README.md here): contenders that should match
get the same initial weights; timed runs go in interleaved rounds, in an
order shuffled every round by a seeded generator; times are process CPU
time (`time.process_time()`, all threads) after a `gc.collect()` outside
the timed region; the tables give the median of per-round ratios with
their 25th and 75th percentiles. Parts 1 and 3 (the accuracies, the
sparsities, the parameter counts) are not timings and are not repeated.

TF-MOT (tensorflow-model-optimization 0.8.1) needs tf_keras and is never a
dependency of keras_regkit: its side runs only on the TensorFlow backend
and when both import, for instance after

    pip install --target /tmp/tfmot --no-deps tensorflow-model-optimization \\
        "tf-keras==2.21.*" dm-tree

and with `--tfmot-path /tmp/tfmot` (or `PYTHONPATH=/tmp/tfmot`). Without
them the script runs our side alone and says that TF-MOT's was skipped;
the targets that compare with it are then left out. On JAX and PyTorch it
runs our side of every part: part 2 then shows what the masks and the
pruning steps cost there (on JAX, the retrace).

Usage
-----
    KERAS_BACKEND=tensorflow python benchmarks/bench_pruning.py \\
        --tfmot-path /tmp/tfmot --json pruning_tensorflow.json
    KERAS_BACKEND=jax python benchmarks/bench_pruning.py --parts timing
    KERAS_BACKEND=tensorflow python benchmarks/bench_pruning.py --quick

`--parts` chooses among `accuracy`, `timing` and `compaction` (all by
default). It prints markdown tables for RESULTS.md and which targets are
met, and with `--json PATH` writes the record there. With the defaults, on
two CPU cores, the TensorFlow run with TF-MOT took 12.5 minutes (on a busy
machine), and the JAX run of `--parts timing` 4 minutes. `--quick` is a
smoke test (one seed, one sparsity, a few epochs and rounds; about 25 s;
its numbers mean nothing).
"""

import gc
import importlib
import math
import os
import sys
import time

# The harness shared by every benchmark lies next to this script.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras
import numpy as np
from _harness import (
    ArgumentParser,
    Contender,
    Run,
    interleaved_rounds,
    markdown_table,
    quartiles,
    ratio_cell,
)

import keras_regkit
from keras_regkit.callbacks import GradualPruning, ProximalStep
from keras_regkit.pruning import ConstantSparsity, PolynomialDecay

BATCH = 32
TRAIN_ROWS = 1280  # 40 batches of 32
LEARNING_RATE = 1e-3
MODELS = ("MLP", "CNN")
MLP_UNITS = (256, 256)
PARTS = ("accuracy", "timing", "compaction")

# Part 1: 10 pruning steps, the last at 65% of training.
PRUNING_STEPS = 10
END_FRACTION = 0.65
ACCURACY_MARGIN = 0.01
SPARSITY_TOLERANCE = 0.005

# Part 2.
TIMING_SPARSITY = 0.8
TIMING_TOLERANCE = 0.01
STEP_LIMIT = 1.0
NONE_K3 = "Keras 3, no pruning"
HELD = "GradualPruning, masks held"
OURS = "GradualPruning"
NONE_TFK = "tf_keras, no pruning"
TFMOT = "TF-MOT"
KERAS3_CONTENDERS = (NONE_K3, HELD, OURS)
TFK_CONTENDERS = (NONE_TFK, TFMOT)
# (numerator, denominator, what the ratio shows)
TIMING_RATIOS = (
    (OURS, TFMOT, "ours / TF-MOT's (target <= 1.00x)"),
    (OURS, NONE_K3, "cost of our masks and pruning steps"),
    (HELD, NONE_K3, "cost of the mask constraints alone"),
    (OURS, HELD, "cost of a pruning step an epoch"),
    (TFMOT, NONE_TFK, "cost of TF-MOT's wrappers and callback"),
    (NONE_K3, NONE_TFK, "Keras 3's own step against Keras 2's"),
)

# Part 3: how each model's hidden units are zeroed, on its hidden layers
# (the output layer's units are the classes).
HIDDEN = ("dense_*", "conv_*")
GROUP_LASSO = {"MLP": 0.1, "CNN": 0.05}
UNIT_SPARSITY = {"MLP": 0.75, "CNN": 0.5}
BY_GROUP_LASSO = "GroupLasso + ProximalStep"
BY_UNITS = "GradualPruning(structure='units')"
ZEROING = (BY_GROUP_LASSO, BY_UNITS)
SPEEDUP_FACTOR = 0.8
BIG_BATCH = 256

TFMOT_INSTALL = (
    'pip install --target DIR --no-deps tensorflow-model-optimization "tf-'
    'keras==2.21.*" dm-tree, then --tfmot-path DIR (or PYTHONPATH=DIR)'
)


# Data and models.


def load_data():
    """`{"train": (x, y), "test": (x, y)}`, flat rows in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    y = y.astype("int32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, train_size=TRAIN_ROWS, stratify=y, random_state=0
    )
    return {"train": (x_train, y_train), "test": (x_test, y_test)}


def inputs(kind, x):
    """`x` shaped for the model `kind`: flat rows, or 8x8x1 images."""
    return x if kind == "MLP" else x.reshape(-1, 8, 8, 1)


def build(api, kind, penalty=None):
    """The uncompiled model `kind` in `api` (keras or tf_keras); `penalty()`
    gives each hidden kernel's regularizer, or None."""
    layers = api.layers

    def regularizer():
        return None if penalty is None else penalty()

    if kind == "MLP":
        stack = [api.Input((64,))]
        stack += [
            layers.Dense(
                units,
                activation="relu",
                kernel_regularizer=regularizer(),
                name=f"dense_{index}",
            )
            for index, units in enumerate(MLP_UNITS, 1)
        ]
    else:
        stack = [api.Input((8, 8, 1))]
        stack += [
            layers.Conv2D(
                filters,
                3,
                padding="same",
                activation="relu",
                kernel_regularizer=regularizer(),
                name=f"conv_{index}",
            )
            for index, filters in enumerate((16, 32), 1)
        ]
        stack += [
            layers.MaxPooling2D(2, name="pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(
                64,
                activation="relu",
                kernel_regularizer=regularizer(),
                name="dense_1",
            ),
        ]
    stack.append(layers.Dense(10, name="logits"))
    return api.Sequential(stack, name=kind.lower())


def compile_model(api, model):
    model.compile(
        optimizer=api.optimizers.Adam(LEARNING_RATE),
        loss=api.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def keras3_model(kind, seed, penalty=None):
    """The compiled Keras 3 model and its initial weights."""
    keras.utils.set_random_seed(seed)
    model = build(keras, kind, penalty)
    weights = model.get_weights()
    return compile_model(keras, model), weights


def tf_keras_model(tfk, kind, weights, seed):
    """The uncompiled tf_keras model, given `weights`."""
    tfk.utils.set_random_seed(seed)
    model = build(tfk, kind)
    model.set_weights(weights)
    return model


def to_numpy(value):
    return np.asarray(keras.ops.convert_to_numpy(value))


def kernels(model):
    """The kernels of a model's Dense and Conv layers, as numpy arrays."""
    return [
        np.asarray(layer.kernel.numpy())
        if hasattr(layer.kernel, "numpy")
        else to_numpy(layer.kernel)
        for layer in model.layers
        if getattr(layer, "kernel", None) is not None
    ]


def sparsity(model):
    """The fraction of the kernels' entries that are exactly 0.0."""
    values = kernels(model)
    return sum(int((k == 0.0).sum()) for k in values) / sum(
        k.size for k in values
    )


def logits(model, x):
    # A direct call, not `predict`: no tf.function traced per model.
    return to_numpy(model(x, training=False))


def accuracy(model, x, y):
    return float(np.mean(np.argmax(logits(model, x), axis=-1) == y))


def parameters(model):
    return int(model.count_params())


# TF-MOT, when it imports.


def load_tfmot(path, backend):
    """`(tf_keras, tfmot, None)`, or `(None, None, why it was skipped)`."""
    if backend != "tensorflow":
        return None, None, "TF-MOT runs on TensorFlow only"
    if path:
        sys.path.insert(0, os.path.abspath(path))
    try:
        tfk = importlib.import_module("tf_keras")
        tfmot = importlib.import_module("tensorflow_model_optimization")
    except ImportError as error:
        return None, None, f"{error}; to install: {TFMOT_INSTALL}"
    return tfk, tfmot, None


def tfmot_version(tfmot):
    from importlib import metadata

    try:
        return metadata.version("tensorflow-model-optimization")
    except metadata.PackageNotFoundError:
        return getattr(tfmot, "__version__", "unknown")


# Part 1: accuracy at equal sparsity.


def schedule_steps(epochs, steps_per_epoch):
    """`(frequency, end_step)`: 10 pruning steps ending at 65%."""
    total = epochs * steps_per_epoch
    frequency = max(1, round(END_FRACTION * total / PRUNING_STEPS))
    return frequency, PRUNING_STEPS * frequency


def train_ours(kind, data, target, seed, epochs, frequency, end_step):
    """Test accuracy and kernel sparsity of the Keras 3 model, pruned to
    `target` (or not pruned, for a target of 0)."""
    model, _ = keras3_model(kind, seed)
    callbacks = []
    if target > 0:
        schedule = PolynomialDecay(
            0.0, target, begin_step=0, end_step=end_step, frequency=frequency
        )
        callbacks.append(GradualPruning(schedule))
    (x, y), (x_test, y_test) = data["train"], data["test"]
    model.fit(
        inputs(kind, x),
        y,
        batch_size=BATCH,
        epochs=epochs,
        callbacks=callbacks,
        verbose=0,
    )
    return accuracy(model, inputs(kind, x_test), y_test), sparsity(model)


def train_tfmot(tools, kind, data, target, seed, epochs, frequency, end_step):
    """The same for the tf_keras model, under TF-MOT for a target > 0."""
    tfk, tfmot = tools
    _, weights = keras3_model(kind, seed)
    model = tf_keras_model(tfk, kind, weights, seed)
    callbacks = []
    if target > 0:
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0,
            final_sparsity=target,
            begin_step=0,
            end_step=end_step,
            frequency=frequency,
        )
        model = tfmot.sparsity.keras.prune_low_magnitude(
            model, pruning_schedule=schedule
        )
        callbacks.append(tfmot.sparsity.keras.UpdatePruningStep())
    compile_model(tfk, model)
    (x, y), (x_test, y_test) = data["train"], data["test"]
    model.fit(
        inputs(kind, x),
        y,
        batch_size=BATCH,
        epochs=epochs,
        callbacks=callbacks,
        verbose=0,
    )
    if target > 0:
        model = tfmot.sparsity.keras.strip_pruning(model)
    return accuracy(model, inputs(kind, x_test), y_test), sparsity(model)


def run_accuracy(args, data, tools):
    """`{model: {sparsity: {side: [(accuracy, sparsity) per seed]}}}`."""
    steps = math.ceil(len(data["train"][1]) / BATCH)
    frequency, end_step = schedule_steps(args.epochs, steps)
    seeds = [args.seed + index for index in range(args.seeds)]
    results = {}
    for kind in MODELS:
        results[kind] = {}
        for target in (0.0, *args.sparsities):
            sides = {"ours": []}
            if tools is not None:
                sides["tfmot"] = []
            for seed in seeds:
                sides["ours"].append(
                    train_ours(
                        kind,
                        data,
                        target,
                        seed,
                        args.epochs,
                        frequency,
                        end_step,
                    )
                )
                if tools is not None:
                    sides["tfmot"].append(
                        train_tfmot(
                            tools,
                            kind,
                            data,
                            target,
                            seed,
                            args.epochs,
                            frequency,
                            end_step,
                        )
                    )
                print(
                    f"  accuracy: {kind}, sparsity {target:g}, seed {seed}: "
                    + ", ".join(
                        f"{side} {values[-1][0]:.4f}"
                        for side, values in sides.items()
                    ),
                    file=sys.stderr,
                    flush=True,
                )
            results[kind][target] = sides
    return results, {"frequency": frequency, "end_step": end_step}


def spread(values):
    """`(mean, min, max)`."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.min()), float(values.max())


def spread_cell(values, spec=".4f"):
    mean, low, high = values
    return f"{mean:{spec}} ({low:{spec}}-{high:{spec}})"


def summarize_accuracy(results):
    rows = []
    for kind, targets in results.items():
        for target, sides in targets.items():
            row = {"model": kind, "target": target}
            for side, values in sides.items():
                row[f"{side}_accuracy"] = spread([v[0] for v in values])
                row[f"{side}_sparsity"] = spread([v[1] for v in values])
            rows.append(row)
    return rows


def accuracy_table(rows, with_tfmot):
    headings = ["model", "final sparsity", "ours: test accuracy"]
    if with_tfmot:
        headings += ["TF-MOT: test accuracy", "ours - TF-MOT"]
    headings += ["ours: sparsity reached"]
    if with_tfmot:
        headings += ["TF-MOT: sparsity reached"]

    dense_label = "0 (dense: Keras 3" + (" / tf_keras)" if with_tfmot else ")")

    def show(row):
        dense = row["target"] == 0
        cells = [
            row["model"],
            dense_label if dense else f"{row['target']:g}",
            spread_cell(row["ours_accuracy"]),
        ]
        if with_tfmot:
            gap = row["ours_accuracy"][0] - row["tfmot_accuracy"][0]
            cells += [spread_cell(row["tfmot_accuracy"]), f"{gap:+.4f}"]
        cells.append(spread_cell(row["ours_sparsity"]))
        if with_tfmot:
            cells.append(spread_cell(row["tfmot_sparsity"]))
        return cells

    return markdown_table(
        headings, "ll" + "r" * (len(headings) - 2), (show(r) for r in rows)
    )


def accuracy_checks(rows, with_tfmot):
    checks = []
    for row in rows:
        if row["target"] == 0:
            continue
        where = f"{row['model']}, sparsity {row['target']:g}"
        if with_tfmot:
            ours, theirs = row["ours_accuracy"][0], row["tfmot_accuracy"][0]
            checks.append(
                (
                    f"{where}: ours >= TF-MOT's - {ACCURACY_MARGIN:g} "
                    "(mean test accuracy)",
                    f"{ours:.4f} vs {theirs:.4f}",
                    ours >= theirs - ACCURACY_MARGIN,
                )
            )
        low, high = row["ours_sparsity"][1:]
        checks.append(
            (
                f"{where}: ours reaches it (+-{SPARSITY_TOLERANCE:g})",
                f"{low:.4f}-{high:.4f}",
                max(abs(low - row["target"]), abs(high - row["target"]))
                <= SPARSITY_TOLERANCE,
            )
        )
    return checks


# Part 2: train-step time.


class BuildCount:
    """Counts the train functions a Keras 3 model builds."""

    def __init__(self, model):
        self.count = 0
        original = model.make_train_function

        def counted(force=False):
            if force or getattr(model, "train_function", None) is None:
                self.count += 1
            return original(force=force)

        model.make_train_function = counted


def epoch_clock(base, builds=None):
    """`(start, stop)`: callbacks of the class `base` (keras's or
    tf_keras's) timing each epoch in process CPU time, `start` first in
    the callbacks and `stop` last; `stop.seconds` and `stop.builds` (the
    train functions `builds` counted, each epoch) after each `fit`."""

    class Stop(base):
        def __init__(self):
            super().__init__()
            self.seconds, self.builds = [], []

        def on_train_begin(self, logs=None):
            self.seconds, self.builds = [], []

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.process_time() - self.started)
            if builds is not None:
                self.builds.append(builds.count - self.built)

    class Start(base):
        def __init__(self, stop):
            super().__init__()
            self.stop = stop

        def on_epoch_begin(self, epoch, logs=None):
            gc.collect()
            if builds is not None:
                self.stop.built = builds.count
            self.stop.started = time.process_time()

    stop = Stop()
    return Start(stop), stop


class Trainee(Contender):
    """One contender of part 2: each run, one `fit` of `epochs` epochs;
    its result, `(seconds, train functions built)` of each epoch."""

    def __init__(self, model, x, y, epochs, callbacks, base, keras3):
        self.model = model
        self.x, self.y = x, y
        self.epochs = epochs
        builds = BuildCount(model) if keras3 else None
        start, self.stop = epoch_clock(base, builds)
        self.callbacks = [start, *callbacks, self.stop]

    def run(self):
        self.model.fit(
            self.x,
            self.y,
            batch_size=BATCH,
            epochs=self.epochs,
            callbacks=self.callbacks,
            verbose=0,
        )

    def finish(self, result):
        return list(self.stop.seconds), list(self.stop.builds)


def timing_contenders(kind, x, y, args, tools):
    """`{name: Trainee}` of part 2 for the model `kind`, and the models
    whose sparsity is checked afterwards, `{name: function -> model}`."""
    steps = math.ceil(len(y) / BATCH)
    contenders, pruned = {}, {}
    for name in KERAS3_CONTENDERS:
        model, weights = keras3_model(kind, args.seed)
        callbacks = []
        if name == HELD:
            schedule = ConstantSparsity(
                TIMING_SPARSITY, begin_step=0, end_step=0
            )
            callbacks.append(GradualPruning(schedule))
        elif name == OURS:
            schedule = ConstantSparsity(
                TIMING_SPARSITY, begin_step=0, frequency=steps
            )
            callbacks.append(GradualPruning(schedule))
        if callbacks:
            pruned[name] = lambda model=model: model
        contenders[name] = Trainee(
            model,
            x,
            y,
            args.timed_epochs,
            callbacks,
            keras.callbacks.Callback,
            keras3=True,
        )
    if tools is not None:
        tfk, tfmot = tools
        for name in TFK_CONTENDERS:
            model = tf_keras_model(tfk, kind, weights, args.seed)
            callbacks = []
            if name == TFMOT:
                schedule = tfmot.sparsity.keras.ConstantSparsity(
                    TIMING_SPARSITY, begin_step=0, frequency=steps
                )
                model = tfmot.sparsity.keras.prune_low_magnitude(
                    model, pruning_schedule=schedule
                )
                callbacks.append(tfmot.sparsity.keras.UpdatePruningStep())
                pruned[name] = lambda model=model: (
                    tfmot.sparsity.keras.strip_pruning(model)
                )
            compile_model(tfk, model)
            contenders[name] = Trainee(
                model,
                x,
                y,
                args.timed_epochs,
                callbacks,
                tfk.callbacks.Callback,
                keras3=False,
            )
    return contenders, pruned


def run_timing(args, data, tools):
    """Per model: `{"seconds": {name: [[s per epoch] per round]},
    "builds": ..., "sparsity": {name: s}, "steps_per_epoch": n}`."""
    x, y = data["train"]
    x, y = np.tile(x, (args.tile, 1)), np.tile(y, args.tile)
    results = {}
    for kind in MODELS:
        contenders, pruned = timing_contenders(
            kind, inputs(kind, x), y, args, tools
        )
        measured = interleaved_rounds(
            contenders,
            args.rounds,
            args.seed,
            # No warm-up: each fit's first epoch, with its traces, is
            # discarded.
            warm_up=False,
            label=f"step time, {kind}: ",
            progress=lambda m: (
                f"{NONE_K3} {np.median(m.results[NONE_K3][-1][0][1:]):.3f} "
                "s / epoch"
            ),
        )
        reached = {name: sparsity(get()) for name, get in pruned.items()}
        for name, value in reached.items():
            if abs(value - TIMING_SPARSITY) > TIMING_TOLERANCE:
                raise RuntimeError(
                    f"step time, {kind}, {name}: sparsity {value:.4f} after "
                    f"the rounds, expected {TIMING_SPARSITY}"
                )
        results[kind] = {
            "seconds": {
                n: [r[0] for r in v] for n, v in measured.results.items()
            },
            "builds": {
                n: [r[1] for r in v] for n, v in measured.results.items()
            },
            "sparsity": reached,
            "steps_per_epoch": math.ceil(len(y) / BATCH),
        }
    return results


def steady(epochs_per_round):
    """Each round's median epoch, the first epoch left out."""
    return np.asarray([np.median(epochs[1:]) for epochs in epochs_per_round])


def summarize_timing(results):
    summary = {}
    for kind, result in results.items():
        seconds = {n: steady(v) for n, v in result["seconds"].items()}
        steps = result["steps_per_epoch"]
        contenders = []
        for name, values in seconds.items():
            builds = result["builds"][name]
            contenders.append(
                {
                    "contender": name,
                    "median_s": float(np.median(values)),
                    "ms_per_step": float(np.median(values)) * 1e3 / steps,
                    "builds_per_epoch": (
                        None
                        if not builds[0]
                        else float(np.mean([b[1:] for b in builds]))
                    ),
                    "first_epoch_s": float(
                        np.median([e[0] for e in result["seconds"][name]])
                    ),
                }
            )
        ratio_rows = []
        for top, bottom, meaning in TIMING_RATIOS:
            if top in seconds and bottom in seconds:
                ratio_rows.append(
                    {
                        "ratio": f"{top} / {bottom}",
                        "meaning": meaning,
                        "quartiles": quartiles(seconds[top] / seconds[bottom]),
                        "extra_ms_per_epoch": quartiles(
                            (seconds[top] - seconds[bottom]) * 1e3
                        ),
                    }
                )
        summary[kind] = {"contenders": contenders, "ratios": ratio_rows}
    return summary


def contender_table(summary):
    rows = []
    for kind, part in summary.items():
        for row in part["contenders"]:
            builds = row["builds_per_epoch"]
            rows.append(
                (
                    kind,
                    row["contender"],
                    f"{row['median_s']:.3f}",
                    f"{row['ms_per_step']:.2f}",
                    f"{row['first_epoch_s']:.3f}",
                    "n/a" if builds is None else f"{builds:g}",
                )
            )
    return markdown_table(
        (
            "model",
            "contender",
            "s / epoch",
            "ms / step",
            "first epoch, s (discarded)",
            "train functions built / timed epoch",
        ),
        "llrrrr",
        rows,
    )


def ratio_table(summary):
    rows = []
    for kind, part in summary.items():
        for row in part["ratios"]:
            low, median, high = row["extra_ms_per_epoch"]
            rows.append(
                (
                    kind,
                    row["ratio"],
                    row["meaning"],
                    ratio_cell(row["quartiles"]),
                    f"{median:+.1f} ({low:+.1f} to {high:+.1f})",
                )
            )
    return markdown_table(
        (
            "model",
            "ratio",
            "what it shows",
            "median (p25-p75)",
            "ms / epoch (p25 to p75)",
        ),
        "lllrr",
        rows,
    )


def timing_checks(summary):
    checks = []
    for kind, part in summary.items():
        for row in part["ratios"]:
            if row["ratio"] == f"{OURS} / {TFMOT}":
                ratio = row["quartiles"][1]
                checks.append(
                    (
                        f"{kind}: train step, ours / TF-MOT's <= "
                        f"{STEP_LIMIT:.2f}x",
                        f"{ratio:.3f}x",
                        ratio <= STEP_LIMIT,
                    )
                )
    return checks


# Part 3: compaction.


class PredictCalls(Contender):
    """`calls` calls of `model.predict_on_batch(x)`."""

    def __init__(self, model, x, calls):
        self.model, self.x, self.calls = model, x, calls

    def run(self):
        for _ in range(self.calls):
            self.model.predict_on_batch(self.x)


def zeroed(kind, method, args, x, y):
    """The Keras 3 model `kind` trained with `method`'s zeros."""
    if method == BY_GROUP_LASSO:
        strength = GROUP_LASSO[kind]
        model, _ = keras3_model(
            kind,
            args.seed,
            penalty=lambda: keras_regkit.GroupLasso(strength),
        )
        callbacks = [ProximalStep()]
    else:
        model, _ = keras3_model(kind, args.seed)
        frequency, end_step = schedule_steps(
            args.compact_epochs, math.ceil(len(y) / BATCH)
        )
        schedule = PolynomialDecay(
            0.0,
            UNIT_SPARSITY[kind],
            begin_step=0,
            end_step=end_step,
            frequency=frequency,
        )
        callbacks = [GradualPruning(schedule, HIDDEN, structure="units")]
    model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=args.compact_epochs,
        callbacks=callbacks,
        verbose=0,
    )
    return model


def unit_counts(model, dead):
    """`{layer: (units, with an all-zero kernel slice, dead for compact)}`
    of the hidden layers."""
    counts = {}
    for layer in model.layers:
        if layer.name == "logits" or getattr(layer, "kernel", None) is None:
            continue
        kernel = to_numpy(layer.kernel)
        matrix = kernel.reshape(-1, kernel.shape[-1])
        counts[layer.name] = (
            int(kernel.shape[-1]),
            int(np.all(matrix == 0.0, axis=0).sum()),
            len(dead.get(layer.name, ())),
        )
    return counts


def time_inference(model, compact_model, kind, x_test, args, label):
    """Speed-ups of `compact_model` over `model`, at batch 1 and 256."""
    timings = {}
    rng = np.random.default_rng(args.seed)
    for batch, calls in ((1, args.calls), (BIG_BATCH, max(1, args.calls // 5))):
        rows = inputs(kind, x_test[rng.integers(0, len(x_test), batch)])
        measured = interleaved_rounds(
            {
                "before": PredictCalls(model, rows, calls),
                "after": PredictCalls(compact_model, rows, calls),
            },
            args.inference_rounds,
            args.seed,
            baseline="before",
            label=f"inference, {label}, batch {batch}: ",
        )
        timings[batch] = {
            "calls": calls,
            "seconds": measured.cpu,
            "speedup": quartiles(
                np.asarray(measured.cpu["before"])
                / np.asarray(measured.cpu["after"])
            ),
        }
    return timings


def run_compaction(args, data):
    """Per model and method: the counts, accuracies and speed-ups."""
    (x, y), (x_test, y_test) = data["train"], data["test"]
    results = {}
    for kind in MODELS:
        x_eval = inputs(kind, x_test)
        for method in ZEROING:
            model = zeroed(kind, method, args, inputs(kind, x), y)
            dead = keras_regkit.dead_units(model)
            compact_model = keras_regkit.compact(model, verbose=0)
            gap = np.abs(logits(model, x_eval) - logits(compact_model, x_eval))
            label = f"{kind}, {method}"
            results[label] = {
                "model": kind,
                "method": method,
                "before": {
                    "parameters": parameters(model),
                    "accuracy": accuracy(model, x_eval, y_test),
                },
                "after": {
                    "parameters": parameters(compact_model),
                    "accuracy": accuracy(compact_model, x_eval, y_test),
                },
                "units": unit_counts(model, dead),
                "max_logit_gap": float(gap.max()),
                "inference": time_inference(
                    model, compact_model, kind, x_test, args, label
                ),
            }
    return results


def per_call(seconds, timing):
    """Median milliseconds per call."""
    return float(np.median(seconds)) * 1e3 / timing["calls"]


def reduction(result):
    return result["before"]["parameters"] / result["after"]["parameters"]


def compaction_table(results):
    """The units zeroed and removed, the parameters, the accuracies."""
    rows = []
    for result in results.values():
        before, after = result["before"], result["after"]
        units = "; ".join(
            f"{name} {total}: {zero} / {dead}"
            for name, (total, zero, dead) in result["units"].items()
        )
        rows.append(
            (
                result["model"],
                result["method"],
                units,
                f"{before['parameters']:,} -> {after['parameters']:,}",
                f"{reduction(result):.2f}x",
                f"{before['accuracy']:.4f} -> {after['accuracy']:.4f}",
                f"{result['max_logit_gap']:.2g}",
            )
        )
    return markdown_table(
        (
            "model",
            "zeros from",
            "hidden layer units: zero kernel slices / removed by compact",
            "parameters",
            "reduction",
            "test accuracy",
            "max logit gap",
        ),
        "lllrrrr",
        rows,
    )


def inference_table(results):
    """The time of `predict_on_batch` before and after `compact`."""
    rows = []
    for result in results.values():
        for batch, timing in result["inference"].items():
            seconds = timing["seconds"]
            rows.append(
                (
                    result["model"],
                    result["method"],
                    batch,
                    f"{per_call(seconds['before'], timing):.3f} -> "
                    f"{per_call(seconds['after'], timing):.3f}",
                    ratio_cell(timing["speedup"]),
                    f"{reduction(result):.2f}x",
                )
            )
    return markdown_table(
        (
            "model",
            "zeros from",
            "batch",
            "ms / call, before -> after",
            "speed-up (p25-p75)",
            "parameter reduction",
        ),
        "llrrrr",
        rows,
    )


def compaction_checks(results):
    checks = []
    for label, result in results.items():
        before, after = result["before"], result["after"]
        checks.append(
            (
                f"{label}: compact keeps the test accuracy",
                f"{before['accuracy']:.4f} -> {after['accuracy']:.4f}",
                before["accuracy"] == after["accuracy"],
            )
        )
        target = SPEEDUP_FACTOR * reduction(result)
        for batch, timing in result["inference"].items():
            speedup = timing["speedup"][1]
            checks.append(
                (
                    f"{label}, batch {batch}: inference speed-up >= "
                    f"{SPEEDUP_FACTOR:g} x parameter reduction "
                    f"({target:.2f}x)",
                    f"{speedup:.3f}x",
                    speedup >= target,
                )
            )
    return checks


# The command line and the run.


def floats(text):
    values = tuple(float(part) for part in text.split(",") if part.strip())
    if not values or not all(0 < value < 1 for value in values):
        raise ValueError(text)
    return values


def part_list(text):
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    if not values or any(value not in PARTS for value in values):
        raise ValueError(text)
    return values


def parse_args(argv=None):
    parser = ArgumentParser(__doc__)
    parser.add_argument(
        "--tfmot-path",
        metavar="DIR",
        help="a folder holding tensorflow_model_optimization and tf_keras, "
        "put first on sys.path (default: none; PYTHONPATH works too)",
    )
    parser.add_argument(
        "--parts",
        type=part_list,
        default=PARTS,
        help="comma-separated parts to run, of " + ", ".join(PARTS),
    )
    parser.add_setting(
        "--sparsities",
        default=(0.5, 0.8, 0.9),
        quick=(0.8,),
        type=floats,
        show=lambda v: ",".join(f"{x:g}" for x in v),
        help="part 1: final sparsities, comma-separated",
    )
    parser.add_setting(
        "--seeds", default=3, quick=1, help="part 1: seeds per sparsity"
    )
    parser.add_setting(
        "--epochs",
        default=20,
        quick=2,
        help="part 1: training epochs of 40 steps",
    )
    parser.add_setting(
        "--rounds", default=7, quick=1, help="part 2: timed fit calls each"
    )
    parser.add_setting(
        "--timed-epochs",
        default=6,
        quick=2,
        minimum=2,
        why="the first is discarded",
        help="part 2: epochs per fit call, the first one discarded",
    )
    parser.add_setting(
        "--tile",
        default=4,
        quick=1,
        help="part 2: the training set's passes in a timed epoch",
    )
    parser.add_setting(
        "--compact-epochs",
        default=30,
        quick=2,
        help="part 3: training epochs with GroupLasso and ProximalStep",
    )
    parser.add_setting(
        "--inference-rounds",
        default=9,
        quick=1,
        help="part 3: timed runs of each model at each batch size",
    )
    parser.add_setting(
        "--calls",
        default=200,
        quick=10,
        help="part 3: predict_on_batch calls per timed run at batch 1 "
        "(a fifth as many at batch 256)",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    backend = keras.backend.backend()
    tfk, tfmot, skipped = load_tfmot(args.tfmot_path, backend)
    tools = None if skipped else (tfk, tfmot)
    run = Run(
        f"parts {', '.join(args.parts)}; TF-MOT "
        + (f"{tfmot_version(tfmot)}" if tools else f"SKIPPED ({skipped})"),
        args.quick,
    )
    data = load_data()
    shapes = {kind: parameters(build(keras, kind)) for kind in MODELS}
    record, checks, printed = {}, [], []
    quick = run.quick_note
    models = ", ".join(
        f"{kind} {count:,} parameters" for kind, count in shapes.items()
    )

    if "accuracy" in args.parts:
        results, schedule = run_accuracy(args, data, tools)
        rows = summarize_accuracy(results)
        checks += accuracy_checks(rows, tools is not None)
        printed.append(
            f"### {backend}: test accuracy at equal sparsity ({quick}"
            f"{args.seeds} seeds, mean (min-max); {models}; "
            f"{args.epochs} epochs x 40 steps of {BATCH}, Adam; "
            f"PolynomialDecay(0, S, 0, {schedule['end_step']}, "
            f"frequency={schedule['frequency']}); {run.stamp})\n\n"
            + accuracy_table(rows, tools is not None)
        )
        record["accuracy"] = {
            "schedule": schedule,
            "results": {
                kind: {str(t): sides for t, sides in targets.items()}
                for kind, targets in results.items()
            },
            "summary": rows,
        }

    if "timing" in args.parts:
        results = run_timing(args, data, tools)
        summary = summarize_timing(results)
        checks += timing_checks(summary)
        steps = TRAIN_ROWS * args.tile // BATCH
        printed.append(
            f"### {backend}: train-step time at sparsity {TIMING_SPARSITY:g} "
            f"({quick}{args.rounds} rounds of one fit of {args.timed_epochs} "
            f"epochs x {steps} steps of {BATCH}, first epoch discarded; "
            f"a pruning step every epoch; median of per-round ratios)\n\n"
            + contender_table(summary)
            + "\n\n"
            + ratio_table(summary)
        )
        record["timing"] = {"results": results, "summary": summary}

    if "compaction" in args.parts:
        results = run_compaction(args, data)
        checks += compaction_checks(results)
        printed.append(
            f"### {backend}: compact ({quick}{args.compact_epochs} epochs "
            f"of Adam; GroupLasso("
            + ", ".join(f"{k} {v:g}" for k, v in GROUP_LASSO.items())
            + ") on the hidden kernels with ProximalStep, or GradualPruning "
            "to a unit sparsity of "
            + ", ".join(f"{k} {v:g}" for k, v in UNIT_SPARSITY.items())
            + f" on the hidden layers; {run.stamp})\n\n"
            + compaction_table(results)
            + f"\n\n### {backend}: predict_on_batch before and after compact"
            f" ({quick}{args.inference_rounds} rounds of {args.calls} calls "
            f"at batch 1, {max(1, args.calls // 5)} at batch {BIG_BATCH}; "
            "median of per-round ratios)\n\n" + inference_table(results)
        )
        record["compaction"] = results

    run.stop()
    for text in printed:
        print("\n" + text)
    if skipped:
        print(
            f"\nTF-MOT's side was SKIPPED ({skipped}): only ours ran, and "
            "the targets against TF-MOT are left out."
        )
    run.report(
        checks,
        args.json,
        settings={
            key: getattr(args, key)
            for key in (
                "quick",
                "seed",
                "parts",
                "sparsities",
                "seeds",
                "epochs",
                "rounds",
                "timed_epochs",
                "tile",
                "compact_epochs",
                "inference_rounds",
                "calls",
            )
        },
        tfmot=(
            {"version": tfmot_version(tfmot), "tf_keras": tfk.__version__}
            if tools
            else {"skipped": skipped}
        ),
        models=shapes,
        **record,
    )


if __name__ == "__main__":
    main()
