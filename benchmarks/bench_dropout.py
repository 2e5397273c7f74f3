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
    KERAS_BACKEND=tensorflow python benchmarks/bench_dropout.py --quick

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
competing for the CPU, and the run is best repeated. `--quick` (3 rounds
of 5 steps, then one Monte-Carlo round at 64 and at 500 rows) is a smoke
test of the whole script, checks included, well under a minute; its
numbers mean nothing.
"""

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

# The harness shared by every benchmark lies next to this script.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras
import numpy as np
from _harness import (
    BATCH_SIZE,
    INPUT_DIM,
    LOOP_DEFAULT,
    MC_PREDICT,
    SAMPLES,
    ArgumentParser,
    EpochTrainee,
    Run,
    build_mlp,
    cell,
    epoch_settings,
    expected_mean_gap,
    interleaved_rounds,
    loop_name,
    make_data,
    markdown_table,
    mc_contenders,
    ratio_cell,
    ratios,
    round_statistics,
    speedup_check,
    statistics_check,
    summarize,
    twin_checks,
    variant_table,
    warm_up_mc,
    worst_statistics,
)

import keras_regkit

RATE = 0.5
SCHEDULED_RATES = (0.5, 0.4)  # the scheduled variant's, at even, odd epochs

BASELINE = "no dropout"
KERAS_DROPOUT = "keras Dropout"
REGKIT_DROPOUT = "regkit Dropout"
SCHEDULED_DROPOUT = "regkit Dropout, rate changed every epoch"

DEFAULT_MC_ROWS = (64, 2000)  # few queries (fixed costs), compute-bound
QUICK_MC_ROWS = (64, 500)
FAIR_BATCH_SIZE = 1024
LOOP_FAIR = loop_name(FAIR_BATCH_SIZE)

# Project targets (in the harness): keras_regkit's Dropout may cost at most
# 1.00x (+-2%) relative to Keras's, and a rate changed at every epoch
# relative to a constant one; mc_predict must be at least 3x faster than
# the fair loop, with equal statistics.


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


def regkit_dropout_layers(model):
    return [
        layer
        for layer in model.layers
        if isinstance(layer, keras_regkit.layers.Dropout)
    ]


class Trainee(EpochTrainee):
    """A training variant's model, its epoch count and scheduled rates.

    Each run trains one epoch of `fit`.
    """

    def __init__(self, variant, x, y, seed):
        model = build_mlp(seed, make_dropout=variant.make_dropout)
        callbacks = []
        if variant.scheduled:
            callbacks.append(
                keras_regkit.callbacks.DropoutScheduler(alternating_rate)
            )
        super().__init__(model, x, y, callbacks)
        self.rates = []  # the rate of each epoch, for a scheduled variant

    def finish(self, history):
        super().finish(history)
        if self.callbacks:
            self.rates.extend(history.history["dropout_rate"])
            self._check_rate_variables()

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
    trainees = {
        variant.name: Trainee(variant, x, y, seed) for variant in VARIANTS
    }
    # Warmed up with one epoch each (traces and compiles the train step).
    seconds = interleaved_rounds(trainees, rounds, seed, baseline=BASELINE).cpu
    check_rates_changed(trainees[SCHEDULED_DROPOUT])
    return seconds


def time_monte_carlo(row_counts, rounds, seed):
    """Per-round CPU seconds and statistics checks for every input size.

    One model serves every size; each size gets its own inputs, warm-up and
    rounds. Returns a list with one dict per size: {"rows", "seconds":
    {method: [seconds, ...]}, "statistics": {loop: [check, ...]}}.
    """
    model = build_mlp(
        seed, make_dropout=lambda: keras_regkit.layers.Dropout(RATE, mc=True)
    )
    results = []
    for rows in row_counts:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((rows, INPUT_DIM), dtype=np.float32)
        # Warm up for these inputs' shapes (each size has its own chunks and
        # last batches): mc_predict's eager forward pass at every chunk
        # size, and predict's step at each batch size, traced and compiled.
        warm_up_mc(model, model, x, FAIR_BATCH_SIZE)
        measured = interleaved_rounds(
            mc_contenders(model, model, x, FAIR_BATCH_SIZE),
            rounds,
            seed,
            warm_up=False,
            baseline=MC_PREDICT,
            label=f"MC {rows} rows, ",
        )
        results.append(
            {
                "rows": rows,
                "seconds": measured.cpu,
                "statistics": round_statistics(measured.results),
            }
        )
    return results


def summarize_monte_carlo(rows, seconds, statistics):
    """Median seconds, speedups and the worst statistics of every method,
    for inputs of `rows` rows."""
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
            row["speedup"] = ratios(times, seconds[MC_PREDICT])
            row.update(worst_statistics(statistics[name]))
        summary.append(row)
    return summary


def check_targets(training_rows, mc_summaries):
    """The project's targets as (description, measured, met) triples.

    `mc_summaries` holds one `summarize_monte_carlo` list per input size:
    the speedup target and the statistics checks apply to each size.
    """
    checks = twin_checks(training_rows)
    for summary in mc_summaries:
        by_method = {row["method"]: row for row in summary}
        checks.append(
            speedup_check(
                by_method[LOOP_FAIR]["speedup"][1],
                LOOP_FAIR,
                after=f", {summary[0]['rows']} rows",
            )
        )
    for summary in mc_summaries:
        by_method = {row["method"]: row for row in summary}
        for name in (LOOP_DEFAULT, LOOP_FAIR):
            checks.append(
                statistics_check(
                    by_method[name], name, after=f", {summary[0]['rows']} rows"
                )
            )
    return checks


def monte_carlo_table(summaries):
    """One table for every input size, a row per method and size."""
    return markdown_table(
        (
            "rows",
            "method",
            f"s / {SAMPLES} samples",
            "speedup of mc_predict (p25-p75)",
            "worst mean gap (std)",
            "worst std ratio",
        ),
        "rlrrrr",
        (
            (
                row["rows"],
                row["method"],
                f"{row['median_s']:.3f}",
                ratio_cell(row["speedup"]),
                cell(row["worst_mean_gap"]),
                cell(row["worst_std_ratio"]),
            )
            for summary in summaries
            for row in summary
        ),
    )


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
    parser = ArgumentParser(__doc__)
    parser.add_epoch_settings(
        rounds=(15, 3), steps=(40, 5), per="training variant"
    )
    parser.add_setting(
        "--mc-rounds",
        default=5,
        quick=1,
        help=f"timed runs of {SAMPLES} samples per Monte-Carlo method",
    )
    parser.add_setting(
        "--mc-rows",
        type=parse_row_counts,
        default=list(DEFAULT_MC_ROWS),
        quick=list(QUICK_MC_ROWS),
        show=lambda counts: ",".join(map(str, counts)),
        metavar="N[,N...]",
        help="input sizes of Monte-Carlo prediction, in rows, timed one "
        "after another",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    run = Run(
        f"{len(VARIANTS)} training variants, {args.rounds} rounds of "
        f"{args.steps} steps, then {args.mc_rounds} Monte-Carlo rounds at "
        f"each of {', '.join(map(str, args.mc_rows))} rows",
        args.quick,
    )
    training_seconds = time_training(args.steps, args.rounds, args.seed)
    mc_results = time_monte_carlo(args.mc_rows, args.mc_rounds, args.seed)
    training_rows = summarize(
        training_seconds,
        BASELINE,
        {variant.name: variant.twin for variant in VARIANTS},
    )
    for result in mc_results:
        result["summary"] = summarize_monte_carlo(
            result["rows"], result["seconds"], result["statistics"]
        )
    mc_summaries = [result["summary"] for result in mc_results]
    checks = check_targets(training_rows, mc_summaries)
    run.stop()

    print(
        f"\n### {run.backend}: training ({run.quick_note}{args.rounds} "
        f"rounds x {args.steps} steps of {BATCH_SIZE}, dropout rate {RATE}, "
        f"median of per-round ratios; {run.stamp})\n"
    )
    print(variant_table(training_rows, BASELINE))
    print(
        f"\n### {run.backend}: Monte-Carlo prediction ({run.quick_note}"
        f"{args.mc_rounds} rounds, {SAMPLES} samples of each number of rows; "
        f"speedup = loop time / mc_predict time; mean gap = mean |difference "
        f"of the means| / average std, about {expected_mean_gap():.2f} "
        f"expected)\n"
    )
    print(monte_carlo_table(mc_summaries))
    run.report(
        checks,
        args.json,
        settings={
            **epoch_settings(args),
            "rate": RATE,
            "scheduled_rates": SCHEDULED_RATES,
            "mc_rounds": args.mc_rounds,
            "samples": SAMPLES,
            "mc_rows": args.mc_rows,
            "fair_batch_size": FAIR_BATCH_SIZE,
            "seed": args.seed,
        },
        seconds_per_epoch=training_seconds,
        training_summary=training_rows,
        # One entry per input size: {"rows", "seconds", "statistics",
        # "summary"}, in the order of --mc-rows.
        monte_carlo=mc_results,
    )


if __name__ == "__main__":
    main()
