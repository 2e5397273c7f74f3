"""Train-step cost of keras_regkit's Dropout, and the speed of mc_predict.

What is measured
----------------
Training. The MLP of `bench_regularizers.py`, 784-1024-1024-10 (ReLU),
trained with `keras.optimizers.SGD(0.01)` and sparse categorical
cross-entropy on its logits (`from_logits=True`) on synthetic data (numpy,
fixed seed), batch 128, with a dropout layer of rate 0.5 after each hidden
layer:

- no dropout (the baseline);
- Keras's `keras.layers.Dropout(0.5)`;
- keras_regkit's `keras_regkit.layers.Dropout(0.5)`;
- keras_regkit's `Dropout(0.5)` with a
  `keras_regkit.callbacks.DropoutScheduler` that sets the rate to 0.5 at
  even epochs and to 0.4 at odd ones, so that the compiled train step runs
  with a different rate at every epoch.

Both dropout layers keep the default `seed=None`.

Monte-Carlo prediction. The same MLP with
`keras_regkit.layers.Dropout(0.5, mc=True)`, so that `predict` drops units
too, gives 30 stochastic predictions for synthetic inputs of each size of
`--mc-rows` (64 and 2000 rows by default):

- `keras_regkit.mc_predict(model, x, samples=30)`;
- 30 calls of `model.predict(x, verbose=0)`, with `predict`'s default batch
  of 32 rows;
- the same with `batch_size=1024`, which spares `predict` most of its
  per-batch cost: the fair comparison.

The sizes are swept because the speedup depends on them. Every call of
`predict` has a fixed cost, whatever the rows (some 30 to 50 ms on
TensorFlow, a few ms on JAX and PyTorch), which a loop pays 30 times and
`mc_predict` once: with a few queries, as with 64 rows, that cost is most
of the loop's time and `mc_predict`'s gain is largest. With 2000 rows both
sides are bound by the arithmetic of the forward passes and of the random
masks, which `mc_predict` cannot skip, and its gain is smaller (about 2x on
TensorFlow against batches of 1024).

Each loop then takes the mean and standard deviation over its 30 outputs
(`np.mean` and `np.std` on axis 0), as `mc_predict` returns them, and
`mc_predict`'s are compared with the loop's. Being different random draws
they cannot be equal, so the check is statistical. The mean absolute
difference of the two means, divided by the loop's average standard
deviation (the "mean gap"), should be close to `sqrt(2 / pi) *
sqrt(2 / 30)`, about 0.21, the expected value for two independent 30-sample
means; the check allows 1.5 times that. The ratio of `mc_predict`'s average
standard deviation to the loop's must be within 10% of 1. Both averages run
over every output value (rows times 10 classes, 640 for 64 rows), so they
are noisier for fewer rows; the tolerances are the same for every size.

Method
------
As in `bench_regularizers.py`, variants are compared under the same
conditions rather than one after another:

1. Every model is built and compiled once (same initial weights for all),
   then warmed up: one epoch of `fit` for the training variants, one call of
   each method for Monte-Carlo prediction, which traces and compiles them.
2. For `--rounds` rounds, each training variant trains one epoch of
   `--steps` batches with `model.fit(x, y, batch_size=128, epochs=1,
   verbose=0)` (with `initial_epoch` counting the model's earlier epochs,
   so that the scheduler sees a new epoch every time). Then, for each
   size of `--mc-rows` in turn (one model for all, each method warmed up
   again on the new inputs), for `--mc-rounds` rounds, each Monte-Carlo
   method makes its 30 predictions.
   The order is shuffled every round (seeded), and each run is timed in
   process CPU time (`time.process_time()`, all threads together), which
   counts the work done rather than the time spent waiting for the CPU.
3. Within each round, every training variant's time is divided by the
   baseline's time of the same round, keras_regkit's `Dropout` by Keras's,
   and the scheduled `Dropout` by keras_regkit's constant-rate one. Each
   `predict` loop's time is divided by `mc_predict`'s (the speedup). The
   tables report the median of these ratios over the rounds, with their
   25th and 75th percentiles, and the median seconds, for every input
   size of Monte-Carlo prediction.

The script checks that the scheduled rate did change from epoch to epoch
(in the layers and in the variable the compiled step reads) and stops if
not. The statistics check runs in every Monte-Carlo round; the worst round
of each input size is reported.

The seconds include `fit`'s and `predict`'s fixed costs per call, which are
the ratios a user sees, not those of the bare train step or forward pass.

Usage
-----
The backend is Keras's usual environment variable; run once per backend::

    KERAS_BACKEND=tensorflow python benchmarks/bench_dropout.py
    KERAS_BACKEND=jax python benchmarks/bench_dropout.py --json jax.json
    KERAS_BACKEND=torch python benchmarks/bench_dropout.py --rounds 20
    KERAS_BACKEND=jax python benchmarks/bench_dropout.py --mc-rows 1,64,2000

It prints two markdown tables, the Monte-Carlo one with a row per method
and input size, and which of the project's targets are met: the speedup
target and the statistics checks once per input size.
With the defaults (15 rounds of 40 steps, then 5 Monte-Carlo rounds at 64
and at 2000 rows) one backend takes one to one and a half minutes on two
CPU cores (measured on 2026-11-23: 56 to 94 s), PyTorch the longest (its
`predict` loop over 2000 rows with batches of 32 is the slowest part); the
64 rows are mostly the 30 fixed costs of each `predict` loop. Each
round's no-dropout time and each Monte-Carlo round's `mc_predict` time go
to stderr: if they vary by more than about 20%, something else was
competing for the CPU, and the run is best repeated.
"""

import argparse
import gc
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

# The MLP's settings and the helpers shared with the penalties' benchmark,
# found next to this script (Python puts the script's folder on sys.path).
from bench_regularizers import (
    BATCH_SIZE,
    HIDDEN_UNITS,
    INPUT_DIM,
    LEARNING_RATE,
    NUM_CLASSES,
    interleaved_rounds,
    make_data,
    print_targets,
    quartiles,
    ratio_cell,
    run_record,
    source_revision,
)

import keras_regkit

RATE = 0.5
SCHEDULED_RATES = (0.5, 0.4)  # the scheduled variant's, at even, odd epochs

BASELINE = "no dropout"
KERAS_DROPOUT = "keras Dropout"
REGKIT_DROPOUT = "regkit Dropout"
SCHEDULED_DROPOUT = "regkit Dropout, rate changed every epoch"

SAMPLES = 30
DEFAULT_MC_ROWS = (64, 2000)  # few queries (fixed costs), compute-bound
FAIR_BATCH_SIZE = 1024
MC_PREDICT = "mc_predict"
LOOP_DEFAULT = "predict loop, batch 32 (default)"
LOOP_FAIR = f"predict loop, batch {FAIR_BATCH_SIZE}"

# Project targets: keras_regkit's Dropout may cost at most this much
# relative to Keras's, and a rate changed at every epoch relative to a
# constant one (1.00x, with 2% allowed for noise) ...
TWIN_LIMIT = 1.02
# ... and mc_predict must be at least this much faster than the fair loop.
SPEEDUP_TARGET = 3.0
# Equal statistics: the gap between the means (relative to the average std)
# at most this multiple of its expected value for independent draws, and
# the average stds within this fraction of each other.
MEAN_GAP_FACTOR = 1.5
STD_TOLERANCE = 0.10


def alternating_rate(epoch):
    """The scheduled variant's rate: 0.5 at even epochs, 0.4 at odd ones."""
    return SCHEDULED_RATES[epoch % 2]


@dataclass(frozen=True)
class Variant:
    """One model to time: its dropout layer and whether its rate changes."""

    name: str
    make_dropout: Callable[[], keras.layers.Layer] | None = None
    scheduled: bool = False
    twin: str | None = None  # the variant this one is compared to


VARIANTS = (
    Variant(BASELINE),
    Variant(KERAS_DROPOUT, lambda: keras.layers.Dropout(RATE)),
    Variant(
        REGKIT_DROPOUT,
        lambda: keras_regkit.layers.Dropout(RATE),
        twin=KERAS_DROPOUT,
    ),
    Variant(
        SCHEDULED_DROPOUT,
        lambda: keras_regkit.layers.Dropout(RATE),
        scheduled=True,
        twin=REGKIT_DROPOUT,
    ),
)


def build_model(make_dropout, seed):
    """The compiled MLP, with the same initial weights for all variants."""
    keras.utils.set_random_seed(seed)
    # The Dense layers draw their initializers' seeds from Python's random
    # when they are created: create them before any dropout layer does.
    hidden = [
        keras.layers.Dense(units, activation="relu") for units in HIDDEN_UNITS
    ]
    output = keras.layers.Dense(NUM_CLASSES)
    layers = [keras.Input((INPUT_DIM,))]
    for dense in hidden:
        layers.append(dense)
        if make_dropout is not None:
            layers.append(make_dropout())
    layers.append(output)
    model = keras.Sequential(layers)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def regkit_dropout_layers(model):
    return [
        layer
        for layer in model.layers
        if isinstance(layer, keras_regkit.layers.Dropout)
    ]


class Trainee:
    """A training variant's model, its epoch count and scheduled rates."""

    def __init__(self, variant, seed):
        self.model = build_model(variant.make_dropout, seed)
        self.epochs = 0
        self.callbacks = []
        self.rates = []  # the rate of each epoch, for a scheduled variant
        if variant.scheduled:
            self.callbacks.append(
                keras_regkit.callbacks.DropoutScheduler(alternating_rate)
            )

    def train_one_epoch(self, x, y):
        """Process CPU seconds for one epoch of `fit`."""
        gc.collect()
        start = time.process_time()
        history = self.model.fit(
            x,
            y,
            batch_size=BATCH_SIZE,
            initial_epoch=self.epochs,
            epochs=self.epochs + 1,
            callbacks=self.callbacks,
            verbose=0,
        )
        seconds = time.process_time() - start
        self.epochs += 1
        if self.callbacks:
            self.rates.extend(history.history["dropout_rate"])
            self._check_rate_variables()
        return seconds

    def _check_rate_variables(self):
        """Stops unless the compiled step's rate variables hold the rate."""
        expected = alternating_rate(self.epochs - 1)
        for layer in regkit_dropout_layers(self.model):
            held = [
                float(keras.ops.convert_to_numpy(variable))
                for variable in layer.variables
                if variable.name == "rate"
            ]
            if held != [np.float32(expected)]:
                raise RuntimeError(
                    f"{layer.name}: rate variable {held} after epoch "
                    f"{self.epochs - 1}, expected {expected}"
                )


def check_rates_changed(trainee):
    """Stops unless the scheduled rate alternated at every epoch."""
    expected = [alternating_rate(epoch) for epoch in range(trainee.epochs)]
    if trainee.rates != expected or len(set(trainee.rates)) < 2:
        raise RuntimeError(
            f"{SCHEDULED_DROPOUT}: epoch rates {trainee.rates}, "
            f"expected {expected}"
        )


def time_training(steps, rounds, seed):
    """Per-round CPU seconds of every variant: {name: [seconds, ...]}."""
    x, y = make_data(steps, seed)
    trainees = {variant.name: Trainee(variant, seed) for variant in VARIANTS}
    for trainee in trainees.values():
        trainee.train_one_epoch(x, y)  # trace and compile the train step

    seconds = interleaved_rounds(
        {
            name: (lambda t=t: t.train_one_epoch(x, y))
            for name, t in trainees.items()
        },
        rounds,
        seed,
        baseline=BASELINE,
        label="no dropout",
    )
    check_rates_changed(trainees[SCHEDULED_DROPOUT])
    return seconds


def predict_loop(model, x, batch_size):
    """Mean and std over `SAMPLES` calls of `predict`."""
    outputs = np.stack(
        [
            model.predict(x, batch_size=batch_size, verbose=0)
            for _ in range(SAMPLES)
        ]
    )
    return outputs.mean(axis=0), outputs.std(axis=0)


def mc_methods(model):
    """{name: function of x returning (mean, std)}, mc_predict first."""
    return {
        MC_PREDICT: lambda x: keras_regkit.mc_predict(model, x, SAMPLES),
        LOOP_DEFAULT: lambda x: predict_loop(model, x, None),
        LOOP_FAIR: lambda x: predict_loop(model, x, FAIR_BATCH_SIZE),
    }


def expected_mean_gap():
    """E|mean_a - mean_b| / std for two independent SAMPLES-sample means."""
    return math.sqrt(2 / math.pi) * math.sqrt(2 / SAMPLES)


def compare_statistics(loop, mc):
    """How far mc_predict's mean and std are from a predict loop's.

    The gap between the means, and mc_predict's std, both averaged over
    every output value and divided by the loop's average std.
    """
    mean, std = loop
    mc_mean, mc_std = mc
    average_std = float(np.mean(std))
    return {
        "mean_gap": float(np.mean(np.abs(mc_mean - mean))) / average_std,
        "std_ratio": float(np.mean(mc_std)) / average_std,
    }


def time_monte_carlo(row_counts, rounds, seed):
    """Per-round CPU seconds and statistics checks for every input size.

    One model serves every size; each size gets its own inputs, warm-up and
    rounds. Returns a list with one dict per size: {"rows", "seconds":
    {method: [seconds, ...]}, "statistics": {loop: [check, ...]}}.
    """
    model = build_model(
        lambda: keras_regkit.layers.Dropout(RATE, mc=True), seed
    )
    methods = mc_methods(model)
    results = []
    for rows in row_counts:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((rows, INPUT_DIM), dtype=np.float32)
        seconds, statistics = _time_monte_carlo_rows(
            model, methods, x, rounds, seed
        )
        results.append(
            {"rows": rows, "seconds": seconds, "statistics": statistics}
        )
    return results


def _time_monte_carlo_rows(model, methods, x, rounds, seed):
    """Interleaved, shuffled rounds of every method on the inputs `x`."""
    # Warm up for these inputs' shapes (each size has its own chunks and
    # last batches): mc_predict's eager forward pass at every chunk size ...
    methods[MC_PREDICT](x)
    model.predict(x, verbose=0)  # ... predict's step, traced and compiled
    model.predict(x, batch_size=FAIR_BATCH_SIZE, verbose=0)  # ... and this

    rows = len(x)
    order = list(methods)
    shuffler = random.Random(seed)
    seconds = {name: [] for name in methods}
    statistics = {name: [] for name in methods if name != MC_PREDICT}
    for round_index in range(rounds):
        shuffler.shuffle(order)
        results = {}
        for name in order:
            gc.collect()
            start = time.process_time()
            results[name] = methods[name](x)
            seconds[name].append(time.process_time() - start)
        for name in statistics:
            statistics[name].append(
                compare_statistics(results[name], results[MC_PREDICT])
            )
        print(
            f"  MC {rows} rows, round {round_index + 1:>2}/{rounds}: "
            f"mc_predict {seconds[MC_PREDICT][-1]:.3f} s",
            file=sys.stderr,
            flush=True,
        )
    return seconds, statistics


def summarize_training(seconds):
    """Median seconds and median per-round ratios of every variant."""
    baseline = np.asarray(seconds[BASELINE])
    rows = []
    for variant in VARIANTS:
        own = np.asarray(seconds[variant.name])
        row = {
            "variant": variant.name,
            "median_s": float(np.median(own)),
            "vs_baseline": quartiles(own / baseline),
            "vs_twin": None,
            "twin": variant.twin,
        }
        if variant.twin is not None:
            row["vs_twin"] = quartiles(own / np.asarray(seconds[variant.twin]))
        rows.append(row)
    return rows


def summarize_monte_carlo(rows, seconds, statistics):
    """Median seconds, speedups and the worst statistics of every method,
    for inputs of `rows` rows."""
    reference = np.asarray(seconds[MC_PREDICT])
    summary = []
    for name, times in seconds.items():
        row = {
            "rows": rows,
            "method": name,
            "median_s": float(np.median(times)),
            "speedup": None,
            "worst_mean_gap": None,
            "worst_std_ratio": None,
        }
        if name != MC_PREDICT:
            row["speedup"] = quartiles(np.asarray(times) / reference)
            gaps = [check["mean_gap"] for check in statistics[name]]
            ratios = [check["std_ratio"] for check in statistics[name]]
            row["worst_mean_gap"] = max(gaps)
            row["worst_std_ratio"] = max(ratios, key=lambda r: abs(r - 1))
        summary.append(row)
    return summary


def check_targets(training_rows, mc_summaries):
    """The project's targets as (description, measured, met) triples.

    `mc_summaries` holds one `summarize_monte_carlo` list per input size:
    the speedup target and the statistics checks apply to each size.
    """
    checks = []
    for row in training_rows:
        if row["vs_twin"] is not None:
            ratio = row["vs_twin"][1]
            checks.append(
                (
                    f"{row['variant']} / {row['twin']} <= 1.00x (+-2%)",
                    f"{ratio:.3f}x",
                    ratio <= TWIN_LIMIT,
                )
            )
    for summary in mc_summaries:
        by_method = {row["method"]: row for row in summary}
        rows = summary[0]["rows"]
        speedup = by_method[LOOP_FAIR]["speedup"][1]
        checks.append(
            (
                f"mc_predict speedup vs {LOOP_FAIR} >= "
                f"{SPEEDUP_TARGET:.0f}x, {rows} rows",
                f"{speedup:.2f}x",
                speedup >= SPEEDUP_TARGET,
            )
        )
    gap_limit = MEAN_GAP_FACTOR * expected_mean_gap()
    for summary in mc_summaries:
        by_method = {row["method"]: row for row in summary}
        rows = summary[0]["rows"]
        for name in (LOOP_DEFAULT, LOOP_FAIR):
            gap = by_method[name]["worst_mean_gap"]
            ratio = by_method[name]["worst_std_ratio"]
            checks.append(
                (
                    f"mc_predict statistics equal {name}'s, {rows} rows: "
                    f"mean gap <= {gap_limit:.2f} std, std ratio within "
                    f"{STD_TOLERANCE:.0%}",
                    f"{gap:.3f} std, {ratio:.3f}",
                    gap <= gap_limit and abs(ratio - 1) <= STD_TOLERANCE,
                )
            )
    return checks


def training_table(rows):
    lines = [
        "| variant | s / epoch | vs no dropout (p25-p75) "
        "| vs its twin (p25-p75) | twin |",
        "|---|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {row['median_s']:.3f} "
            f"| {ratio_cell(row['vs_baseline'])} "
            f"| {ratio_cell(row['vs_twin'])} | {row['twin'] or ''} |"
        )
    return "\n".join(lines)


def monte_carlo_table(summaries):
    """One table for every input size, a row per method and size."""
    lines = [
        f"| rows | method | s / {SAMPLES} samples "
        "| speedup of mc_predict (p25-p75) "
        "| worst mean gap (std) | worst std ratio |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for row in (row for summary in summaries for row in summary):
        gap, ratio = row["worst_mean_gap"], row["worst_std_ratio"]
        lines.append(
            f"| {row['rows']} | {row['method']} | {row['median_s']:.3f} "
            f"| {ratio_cell(row['speedup'])} "
            f"| {'' if gap is None else f'{gap:.3f}'} "
            f"| {'' if ratio is None else f'{ratio:.3f}'} |"
        )
    return "\n".join(lines)


def parse_row_counts(text):
    """`--mc-rows`: comma-separated, distinct row counts of at least 1."""
    try:
        counts = [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if min(counts) < 1 or len(set(counts)) < len(counts):
        raise argparse.ArgumentTypeError(
            f"row counts must be distinct and at least 1, got {text!r}"
        )
    return counts


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="The backend is chosen with the KERAS_BACKEND variable.",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=15,
        help="timed epochs per training variant (default: %(default)s)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=40,
        help="batches of 128 per epoch (default: %(default)s)",
    )
    parser.add_argument(
        "--mc-rounds",
        type=int,
        default=5,
        help=f"timed runs of {SAMPLES} samples per Monte-Carlo method "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--mc-rows",
        type=parse_row_counts,
        default=list(DEFAULT_MC_ROWS),
        metavar="N[,N...]",
        help="input sizes of Monte-Carlo prediction, in rows, timed one "
        "after another (default: "
        f"{','.join(map(str, DEFAULT_MC_ROWS))})",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="data, weights and order seed"
    )
    parser.add_argument(
        "--json", metavar="PATH", help="also write the results to PATH"
    )
    args = parser.parse_args(argv)
    for option in ("rounds", "steps", "mc_rounds"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    backend = keras.backend.backend()
    revision = source_revision()
    print(
        f"Backend {backend}: {len(VARIANTS)} training variants, "
        f"{args.rounds} rounds of {args.steps} steps, then "
        f"{args.mc_rounds} Monte-Carlo rounds at each of "
        f"{', '.join(map(str, args.mc_rows))} rows; "
        f"keras_regkit at {revision}",
        file=sys.stderr,
        flush=True,
    )
    started = time.perf_counter()
    training_seconds = time_training(args.steps, args.rounds, args.seed)
    mc_results = time_monte_carlo(args.mc_rows, args.mc_rounds, args.seed)
    training_rows = summarize_training(training_seconds)
    for result in mc_results:
        result["summary"] = summarize_monte_carlo(
            result["rows"], result["seconds"], result["statistics"]
        )
    mc_summaries = [result["summary"] for result in mc_results]
    checks = check_targets(training_rows, mc_summaries)
    elapsed = time.perf_counter() - started

    print(
        f"\n### {backend}: training ({args.rounds} rounds x {args.steps} "
        f"steps of {BATCH_SIZE}, dropout rate {RATE}, median of per-round "
        f"ratios; keras_regkit {keras_regkit.__version__} at {revision})\n"
    )
    print(training_table(training_rows))
    print(
        f"\n### {backend}: Monte-Carlo prediction ({args.mc_rounds} rounds, "
        f"{SAMPLES} samples of each number of rows; speedup = loop time / "
        f"mc_predict time; mean gap = mean |difference of the means| / "
        f"average std, about {expected_mean_gap():.2f} expected)\n"
    )
    print(monte_carlo_table(mc_summaries))
    print()
    print_targets(checks)
    print(f"\n({elapsed:.0f} s)", file=sys.stderr)

    if args.json:
        result = {
            **run_record(backend, revision, checks),
            "settings": {
                "rounds": args.rounds,
                "steps": args.steps,
                "batch_size": BATCH_SIZE,
                "rate": RATE,
                "scheduled_rates": SCHEDULED_RATES,
                "mc_rounds": args.mc_rounds,
                "samples": SAMPLES,
                "mc_rows": args.mc_rows,
                "fair_batch_size": FAIR_BATCH_SIZE,
                "seed": args.seed,
            },
            "seconds_per_epoch": training_seconds,
            "training_summary": training_rows,
            # One entry per input size: {"rows", "seconds", "statistics",
            # "summary"}, in the order of --mc-rows.
            "monte_carlo": mc_results,
            "elapsed_s": elapsed,
        }
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)


if __name__ == "__main__":
    main()
