"""Cost of `shrink` per level and of `ProximalStep` per train step.

What is measured
----------------
Both parts use the MLP of `bench_regularizers.py`, 784-1024-1024-10 (ReLU,
linear output, 1,863,690 parameters; the script counts them from the model
and prints them), on synthetic data (numpy, fixed seed) with sparse
categorical cross-entropy on the logits (`from_logits=True`) and
`keras.optimizers.SGD(0.01)`. A parameter-free identity layer after the input
counts how often the model's `call` runs as Python: under TensorFlow's
`tf.function` and JAX's `jit` that happens only while a step is traced, so
the count is the number of traces. (PyTorch runs the steps eagerly, where
the count is the number of batches: no trace count there.)

1. `shrink`, 10 levels, no fine-tuning. The model is compiled with an
   `"accuracy"` metric and keeps its initial weights (the cost hardly
   depends on their values: at most one more pass over the kernels, when
   `shrink` keeps a level rather than the original). Validation data:
   10,000 rows, evaluated in batches of 256. Timed, in process CPU time:

   - the baseline, 10 calls of `model.evaluate(x_val, y_val,
     batch_size=256, verbose=0)`;
   - for each method M of `"scale"`, `"soft_threshold"` and `"prune"`, one
     call of `keras_regkit.shrink(model, (x_val, y_val), method=M,
     levels=LEVELS[M], batch_size=256)` with 10 explicit levels (so that
     `soft_threshold` does not compute its default thresholds on the host).

   The model's original weights are put back (`set_weights`) before every
   timed call, outside the timed region, so that each starts from the same
   point (`shrink` leaves the model at the level it chose). `shrink` also
   evaluates the model before the first level (its reference point), so it
   runs 11 `evaluate` calls against the baseline's 10: 1.10x is its floor,
   and the "extra ms per level" column, (shrink - baseline) / 10, includes
   that eleventh evaluation spread over the levels.

   Target: each method costs at most 1.3x the baseline, with no retracing or
   recompiling per level. The latter is checked on every call, warm-up
   included: the traces counted during the call (TensorFlow and JAX; 0
   expected) and whether `model.test_function` was replaced by another
   object during the call (every backend; it must not be). Each call's
   report must hold 11 rows (the reference point and the 10 levels).

2. `ProximalStep`, train step. The MLP has `keras_regkit.L1(1e-5)` on its
   three kernels (not the biases) and no metric, and trains on 50 batches
   of 256 rows an epoch:

   - "L1 as loss term": `model.fit(..., epochs=6)`, the penalty added to the
     loss and differentiated (Keras's usual way);
   - "ProximalStep": the same with `callbacks=[ProximalStep()]`: the penalty
     leaves the loss and its proximal step (soft-thresholding) follows each
     optimizer update inside the train step (compiled on TensorFlow and
     JAX).

   `ProximalStep.on_train_begin` rebuilds the train function, so every
   `fit` call with it traces and compiles its step again. To measure the
   steady-state step, a callback times each epoch inside one `fit` call
   (from `on_epoch_begin` to `on_epoch_end`, process CPU time), the first
   epoch of every call (which holds the trace and compilation) is
   discarded, and the median of the other 5 is the variant's time in that
   round. The first epoch's time is reported beside it: its excess over the
   steady state is the retrace each `fit` call with `ProximalStep` pays.
   The callback also checks, after the first epoch's clock stops, that the
   penalties are out of `model.losses` with `ProximalStep` (0 entries) and
   in it without (3), and counts the traces in the timed epochs (0 expected
   on TensorFlow and JAX).

   Target: "ProximalStep" / "L1 as loss term" at most 1.10x.

Method
------
As in the other benchmarks, contenders are compared under the same
conditions rather than one after another:

1. Each model is built and compiled once, with the same initial weights.
   For part 1, one `evaluate` traces and compiles the test step, then each
   method runs `shrink` once (warm-up; its traces are counted). Part 2
   needs no warm-up: each `fit`'s first epoch is discarded.
2. For `--rounds` rounds (part 1) and `--train-rounds` rounds (part 2),
   every contender runs once, in an order shuffled every round (seeded).
   Times are process CPU time (`time.process_time()`, all threads), which
   counts the work done rather than the time spent waiting for the CPU,
   after a `gc.collect()` outside the timed region.
3. Within each round, each contender's time is divided by the baseline's
   time of the same round. The tables report the median of these per-round
   ratios, with their 25th and 75th percentiles, and the median seconds.

The seconds of part 1 include `evaluate`'s fixed cost per call (its data
iterator and callbacks), paid equally by the baseline and by `shrink`.

Usage
-----
The backend is Keras's usual environment variable; run once per backend::

    KERAS_BACKEND=tensorflow python benchmarks/bench_shrink.py
    KERAS_BACKEND=jax python benchmarks/bench_shrink.py --rounds 9
    KERAS_BACKEND=torch python benchmarks/bench_shrink.py --quick

It prints markdown tables for RESULTS.md and which targets are met, and
writes the JSON record to `benchmarks/results_shrink_<backend>.json` (next
to this script, ignored by git; `--json PATH` to choose another file).
`--quick` is a smoke test with a tiny model and a few rows (well under a
minute; its numbers mean nothing, and it writes no JSON unless `--json` is
given). With the defaults (7 rounds of part 1, 5 of part 2) one backend
takes two to three minutes on two CPU cores (measured: TensorFlow 166 s,
JAX 98 s, PyTorch 138 s). Each round's baseline
time goes to stderr: if those vary by more than about 20%, something else
was competing for the CPU, and the run is best repeated.
"""

import gc
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

# The harness shared by every benchmark lies next to this script.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras
import numpy as np
from _harness import (
    BATCH_SIZE,
    HIDDEN_UNITS,
    INPUT_DIM,
    NUM_CLASSES,
    ArgumentParser,
    Contender,
    Run,
    build_mlp,
    interleaved_rounds,
    make_data,
    markdown_table,
    quartile_cell,
    quartiles,
    ratio_cell,
)

import keras_regkit

# Part 1: `shrink` against a loop of `evaluate`.
LEVEL_COUNT = 10
LEVELS = {
    "scale": tuple(
        float(f"{x:.3g}") for x in np.geomspace(1e-3, 1.0, LEVEL_COUNT)
    ),
    "soft_threshold": tuple(
        float(f"{x:.3g}") for x in np.geomspace(1e-4, 3e-2, LEVEL_COUNT)
    ),
    "prune": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
}
METHODS = tuple(LEVELS)
EVALUATE_LOOP = f"{LEVEL_COUNT} x evaluate"
SHRINK_LIMIT = 1.3

# Part 2: `ProximalStep` against the penalty as a loss term.
L1_STRENGTH = 1e-5
LOSS_TERM = "L1 as loss term"
PROXIMAL = "ProximalStep"
PROXIMAL_LIMIT = 1.10


@dataclass(frozen=True)
class Settings:
    """Sizes of one run; `--quick` has its own."""

    hidden_units: tuple
    validation_rows: int
    eval_batch_size: int
    rounds: int
    steps: int
    train_batch_size: int
    epochs: int
    train_rounds: int
    seed: int


FULL = {
    "hidden_units": HIDDEN_UNITS,
    "validation_rows": 10_000,
    "eval_batch_size": 256,
    "rounds": 7,
    "steps": 50,
    "train_batch_size": 256,
    "epochs": 6,
    "train_rounds": 5,
}
QUICK = {
    "hidden_units": (64, 64),
    "validation_rows": 600,
    "eval_batch_size": 128,
    "rounds": 2,
    "steps": 4,
    "train_batch_size": 128,
    "epochs": 3,
    "train_rounds": 2,
}


class TraceCount:
    """A plain counter, out of reach of Keras's attribute tracking."""

    def __init__(self):
        self.count = 0


class CountCalls(keras.layers.Layer):
    """The identity, counting how often its `call` runs as Python.

    Under `tf.function` and `jax.jit` that is once per trace; eagerly
    (PyTorch) once per batch.
    """

    def __init__(self, counter, **kwargs):
        super().__init__(**kwargs)
        self.counter = counter

    def call(self, inputs):
        self.counter.count += 1
        return inputs


def traces_counted(backend):
    """Whether the counter counts traces (compiled steps) on `backend`."""
    return backend in ("tensorflow", "jax")


def make_rows(rows, seed):
    """`rows` rows of `make_data`'s synthetic inputs and labels."""
    x, y = make_data(math.ceil(rows / BATCH_SIZE), seed)
    return x[:rows], y[:rows]


def build_model(hidden_units, counter, seed, *, penalty=None, metrics=None):
    """The compiled MLP; `penalty()` gives each kernel's regularizer."""
    return build_mlp(
        seed,
        hidden_units,
        penalty=penalty,
        first_layer=CountCalls(counter),
        metrics=metrics,
    )


def architecture(settings):
    units = (INPUT_DIM, *settings.hidden_units, NUM_CLASSES)
    return "-".join(map(str, units))


# Part 1: shrink.


class ShrinkBench:
    """The model, its validation data and the contenders of part 1."""

    def __init__(self, settings):
        self.settings = settings
        self.counter = TraceCount()
        self.model = build_model(
            settings.hidden_units,
            self.counter,
            settings.seed,
            metrics=["accuracy"],
        )
        self.x, self.y = make_rows(settings.validation_rows, settings.seed + 1)
        self.original = self.model.get_weights()

    def evaluate_loop(self):
        for _ in range(LEVEL_COUNT):
            self.model.evaluate(
                self.x,
                self.y,
                batch_size=self.settings.eval_batch_size,
                verbose=0,
            )

    def shrink(self, method):
        report = keras_regkit.shrink(
            self.model,
            (self.x, self.y),
            method=method,
            levels=LEVELS[method],
            batch_size=self.settings.eval_batch_size,
        )
        if len(report.rows) != LEVEL_COUNT + 1:
            raise RuntimeError(
                f"shrink {method}: {len(report.rows)} rows in its report, "
                f"expected {LEVEL_COUNT + 1}"
            )


class ShrinkCall(Contender):
    """One call of the contender `name` of part 1, from the original
    weights; its result is `(traces, test_function replaced)`."""

    def __init__(self, bench, name):
        self.bench = bench
        self.name = name

    def setup(self):
        self.bench.model.set_weights(self.bench.original)
        self.function = self.bench.model.test_function
        self.traces = self.bench.counter.count

    def run(self):
        if self.name == EVALUATE_LOOP:
            self.bench.evaluate_loop()
        else:
            self.bench.shrink(self.name)

    def finish(self, result):
        return (
            self.bench.counter.count - self.traces,
            int(self.bench.model.test_function is not self.function),
        )


def _field(results, index):
    """`{name: [result[index] of each round]}` from `Rounds.results`."""
    return {
        name: [result[index] for result in outcomes]
        for name, outcomes in results.items()
    }


def time_shrink(settings):
    """Seconds, traces and rebuilds per round of every contender of part 1,
    the warm-up calls' traces and rebuilds, and the model's size."""
    bench = ShrinkBench(settings)
    # Traces and compiles the test step (full and last partial batch).
    bench.model.evaluate(
        bench.x, bench.y, batch_size=settings.eval_batch_size, verbose=0
    )
    names = [EVALUATE_LOOP, *METHODS]
    measured = interleaved_rounds(
        {name: ShrinkCall(bench, name) for name in names},
        settings.rounds,
        settings.seed,
        warm_up=METHODS,  # each method's shrink once, its traces counted
        baseline=EVALUATE_LOOP,
        label="shrink ",
    )
    shape = {"parameters": bench.model.count_params()}
    return {
        "seconds": measured.cpu,
        "traces": _field(measured.results, 0),
        "rebuilt": _field(measured.results, 1),
        "warm_up": {
            method: {"traces": traces, "rebuilt": rebuilt}
            for method, (traces, rebuilt) in measured.warm_up.items()
        },
    }, shape


def summarize_shrink(results):
    """Median seconds, per-round ratios and extra ms of every contender."""
    seconds = results["seconds"]
    baseline = np.asarray(seconds[EVALUATE_LOOP])
    rows = []
    for name in (EVALUATE_LOOP, *METHODS):
        own = np.asarray(seconds[name])
        warm_up = results["warm_up"].get(name, {"traces": 0, "rebuilt": 0})
        row = {
            "contender": name if name == EVALUATE_LOOP else f"shrink {name}",
            "method": None if name == EVALUATE_LOOP else name,
            "median_s": float(np.median(own)),
            "vs_baseline": quartiles(own / baseline),
            "extra_ms_per_level": None,
            # The most in any call, warm-up included.
            "traces_per_call": max(
                [warm_up["traces"], *results["traces"][name]]
            ),
            "rebuilds": warm_up["rebuilt"] + sum(results["rebuilt"][name]),
        }
        if name != EVALUATE_LOOP:
            row["extra_ms_per_level"] = quartiles(
                (own - baseline) * 1000 / LEVEL_COUNT
            )
        rows.append(row)
    return rows


def shrink_table(rows, backend):
    counted = traces_counted(backend)
    return markdown_table(
        (
            "contender",
            "s / call",
            f"vs {EVALUATE_LOOP} (p25-p75)",
            "extra ms per level (p25-p75)",
            "traces per call",
            "test_function replaced",
        ),
        "lrrrrr",
        (
            (
                row["contender"],
                f"{row['median_s']:.3f}",
                ratio_cell(row["vs_baseline"]),
                quartile_cell(row["extra_ms_per_level"]),
                row["traces_per_call"] if counted else "n/a (eager)",
                row["rebuilds"],
            )
            for row in rows
        ),
    )


# Part 2: ProximalStep.


class EpochTimer(keras.callbacks.Callback):
    """Process CPU seconds and traces of each epoch of one `fit` call.

    Checks, after the first epoch's clock stops, that the model holds
    `expected_losses` penalties in `model.losses`.
    """

    def __init__(self, counter, expected_losses, name):
        super().__init__()
        self.counter = counter
        self.expected_losses = expected_losses
        self.name = name
        self.seconds = []
        self.traces = []

    def on_train_begin(self, logs=None):
        self.seconds = []
        self.traces = []

    def on_epoch_begin(self, epoch, logs=None):
        gc.collect()
        self._traces = self.counter.count
        self._start = time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.process_time() - self._start)
        self.traces.append(self.counter.count - self._traces)
        if len(self.seconds) == 1:
            losses = len(self.model.losses)
            if losses != self.expected_losses:
                raise RuntimeError(
                    f"{self.name}: {losses} penalties in model.losses "
                    f"during training, expected {self.expected_losses}"
                )


class Trainee(Contender):
    """A part-2 variant: its model, its callbacks and its timer.

    Each run is one `fit` call; its result, the seconds and traces of each
    of its epochs.
    """

    def __init__(self, name, settings, x, y):
        self.name = name
        self.settings = settings
        self.x, self.y = x, y
        self.counter = TraceCount()
        self.model = build_model(
            settings.hidden_units,
            self.counter,
            settings.seed,
            penalty=lambda: keras_regkit.L1(L1_STRENGTH),
        )
        kernels = len(settings.hidden_units) + 1
        expected = 0 if name == PROXIMAL else kernels
        self.timer = EpochTimer(self.counter, expected, name)
        self.callbacks = [self.timer]
        if name == PROXIMAL:
            # The timer last: its clock starts after every other callback's
            # `on_epoch_begin` and stops before their `on_epoch_end`.
            self.callbacks.insert(0, keras_regkit.callbacks.ProximalStep())

    def run(self):
        self.model.fit(
            self.x,
            self.y,
            batch_size=self.settings.train_batch_size,
            epochs=self.settings.epochs,
            callbacks=self.callbacks,
            verbose=0,
        )

    def finish(self, result):
        return list(self.timer.seconds), list(self.timer.traces)


def time_proximal(settings):
    """Per-round epoch seconds and traces of both variants of part 2."""
    rows = settings.steps * settings.train_batch_size
    x, y = make_rows(rows, settings.seed)
    measured = interleaved_rounds(
        {name: Trainee(name, settings, x, y) for name in (LOSS_TERM, PROXIMAL)},
        settings.train_rounds,
        settings.seed,
        # No warm-up: each fit's first epoch, with its trace, is discarded.
        warm_up=False,
        label="ProximalStep ",
        progress=lambda measured: (
            f"{LOSS_TERM} "
            f"{np.median(measured.results[LOSS_TERM][-1][0][1:]):.3f} s / epoch"
        ),
    )
    return {
        "seconds": _field(measured.results, 0),
        "traces": _field(measured.results, 1),
    }


def summarize_proximal(results, settings):
    """Steady-state and first-epoch seconds, ratios and traces."""
    seconds = results["seconds"]

    def steady(name):
        # Each round's median over its epochs after the first.
        return np.asarray([np.median(epochs[1:]) for epochs in seconds[name]])

    baseline = steady(LOSS_TERM)
    rows = []
    for name in (LOSS_TERM, PROXIMAL):
        own = steady(name)
        traces = results["traces"][name]
        rows.append(
            {
                "variant": name,
                "median_s": float(np.median(own)),
                "ms_per_step": float(np.median(own)) * 1000 / settings.steps,
                "vs_baseline": quartiles(own / baseline),
                "first_epoch_s": float(
                    np.median([epochs[0] for epochs in seconds[name]])
                ),
                "first_epoch_traces": [epochs[0] for epochs in traces],
                "later_traces": sum(sum(epochs[1:]) for epochs in traces),
            }
        )
    return rows


def proximal_table(rows, backend):
    counted = traces_counted(backend)
    return markdown_table(
        (
            "variant",
            "s / epoch",
            "ms / step",
            f"vs {LOSS_TERM} (p25-p75)",
            "first epoch, s",
            "traces in first epochs",
            "traces after",
        ),
        "lrrrrrr",
        (
            (
                row["variant"],
                f"{row['median_s']:.3f}",
                f"{row['ms_per_step']:.2f}",
                ratio_cell(row["vs_baseline"]),
                f"{row['first_epoch_s']:.3f}",
                ", ".join(map(str, row["first_epoch_traces"]))
                if counted
                else "n/a (eager)",
                row["later_traces"] if counted else "n/a (eager)",
            )
            for row in rows
        ),
    )


def check_targets(backend, shrink_rows, proximal_rows):
    """The targets as (description, measured, met) triples."""
    checks = []
    counted = traces_counted(backend)
    for row in shrink_rows:
        if row["method"] is None:
            continue
        ratio = row["vs_baseline"][1]
        checks.append(
            (
                f"{row['contender']}, {LEVEL_COUNT} levels / "
                f"{EVALUATE_LOOP} <= {SHRINK_LIMIT:.2f}x",
                f"{ratio:.3f}x",
                ratio <= SHRINK_LIMIT,
            )
        )
    for row in shrink_rows:
        if row["method"] is None:
            continue
        traces, rebuilds = row["traces_per_call"], row["rebuilds"]
        measured = f"{rebuilds} test_function replaced, " + (
            f"{traces} traces per call" if counted else "traces n/a (eager)"
        )
        checks.append(
            (
                f"{row['contender']}: no retrace or recompile per level",
                measured,
                rebuilds == 0 and (traces == 0 or not counted),
            )
        )
    ratio = proximal_rows[1]["vs_baseline"][1]
    checks.append(
        (
            f"{PROXIMAL} / {LOSS_TERM}, train step <= {PROXIMAL_LIMIT:.2f}x",
            f"{ratio:.3f}x",
            ratio <= PROXIMAL_LIMIT,
        )
    )
    return checks


def parse_args(argv=None):
    parser = ArgumentParser(
        __doc__,
        quick_help="smoke test: a tiny model, few rows and rounds",
        json_help="where to write the results (default: results_shrink_"
        "<backend>.json next to this script; none with --quick)",
    )

    def setting(flag, help, **kwargs):
        option = flag[2:].replace("-", "_")
        parser.add_setting(
            flag, default=FULL[option], quick=QUICK[option], help=help, **kwargs
        )

    setting("--rounds", "timed calls per contender of part 1, shrink")
    setting(
        "--train-rounds", "timed fit calls per variant of part 2, ProximalStep"
    )
    setting(
        "--epochs",
        "epochs per fit call of part 2, the first one discarded",
        minimum=2,
        why="the first is discarded",
    )
    setting("--steps", "batches per epoch of part 2")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    args.settings = Settings(
        **{
            **profile,
            "rounds": args.rounds,
            "train_rounds": args.train_rounds,
            "epochs": args.epochs,
            "steps": args.steps,
            "seed": args.seed,
        }
    )
    return args


def main(argv=None):
    args = parse_args(argv)
    settings = args.settings
    run = Run(
        f"shrink, {settings.rounds} rounds; ProximalStep, "
        f"{settings.train_rounds} rounds of {settings.epochs} epochs x "
        f"{settings.steps} steps",
        args.quick,
    )
    backend = run.backend
    shrink_results, shape = time_shrink(settings)
    proximal_results = time_proximal(settings)
    shrink_rows = summarize_shrink(shrink_results)
    proximal_rows = summarize_proximal(proximal_results, settings)
    checks = check_targets(backend, shrink_rows, proximal_rows)
    run.stop()

    quick = run.quick_note
    print(
        f"\n### {backend}: `shrink`, {LEVEL_COUNT} levels, no fine-tuning"
        f" ({quick}{settings.rounds} rounds; MLP {architecture(settings)}, "
        f"{shape['parameters']:,} parameters; {settings.validation_rows:,} "
        f"validation rows, batch {settings.eval_batch_size}; median of "
        f"per-round ratios; {run.stamp})\n"
    )
    print(shrink_table(shrink_rows, backend))
    print(
        f"\n### {backend}: `ProximalStep` train step ({quick}"
        f"{settings.train_rounds} rounds of one `fit` of {settings.epochs} "
        f"epochs x {settings.steps} steps of {settings.train_batch_size}, "
        f"first epoch discarded; L1({L1_STRENGTH:g}) on the kernels, SGD; "
        f"median of per-round ratios)\n"
    )
    print(proximal_table(proximal_rows, backend))
    path = args.json
    if path is None and not args.quick:
        path = os.path.join(
            os.path.dirname(os.path.abspath(__file__)),
            f"results_shrink_{backend}.json",
        )
    run.report(
        checks,
        path,
        settings={
            **asdict(settings),
            "quick": args.quick,
            "levels": LEVELS,
            "l1": L1_STRENGTH,
        },
        model=shape,
        shrink=shrink_results,
        shrink_summary=shrink_rows,
        proximal_step=proximal_results,
        proximal_step_summary=proximal_rows,
    )


if __name__ == "__main__":
    main()
