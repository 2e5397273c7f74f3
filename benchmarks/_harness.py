"""What the benchmarks share: the model, the timing loop, the record.

Every script in this folder compares contenders (models, callbacks or
methods) under the same conditions rather than one after another, and
reports the same way; `README.md` here describes the method. This module is
that method, once:

- the benchmark MLP and its synthetic data (`build_mlp`, `make_data`);
- the command line (`ArgumentParser`: `--quick`, `--seed`, `--json`, and
  counts such as `--rounds` that must be at least 1, each with a default
  and a smaller value for `--quick`);
- the timing loop (`interleaved_rounds`, of `Contender`s such as
  `EpochTrainee`): every contender is warmed up once, then runs once per
  round, in an order shuffled every round (seeded), timed in process CPU
  time and in wall time;
- the summaries: medians of per-round ratios with their 25th and 75th
  percentiles (`quartiles`, `ratios`, `summarize`), and the targets;
- Monte-Carlo prediction's contenders and its statistics check (the mean
  gap and the std ratio of `mc_predict` against a `predict` loop);
- the run itself (`Run`): the backend, the source revision, the clock, the
  targets table and the JSON record.

It is not a module of keras_regkit: each script puts its own folder on
`sys.path` and imports it as `_harness`.
"""

import argparse
import gc
import json
import math
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field

import keras
import numpy as np

import keras_regkit

# The benchmark MLP: 784-1024-1024-10 (ReLU, linear output), trained with
# SGD on synthetic data in batches of 128.
BATCH_SIZE = 128
INPUT_DIM = 784
HIDDEN_UNITS = (1024, 1024)
NUM_CLASSES = 10
LEARNING_RATE = 0.01

# A contender may cost at most this much relative to its twin (1.00x, with
# 2% allowed for noise).
TWIN_LIMIT = 1.02


def make_data(steps, seed):
    """Synthetic inputs and integer labels for `steps` batches."""
    rng = np.random.default_rng(seed)
    count = steps * BATCH_SIZE
    x = rng.standard_normal((count, INPUT_DIM), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, size=count).astype(np.int32)
    return x, y


def build_mlp(
    seed,
    hidden_units=HIDDEN_UNITS,
    *,
    penalty=None,
    make_dropout=None,
    first_layer=None,
    weight_decay=None,
    metrics=None,
):
    """The compiled MLP, with the same initial weights for the same seed.

    Args:
        seed: seeds Keras (the initial weights).
        hidden_units: the hidden layers' widths, ReLU.
        penalty: `penalty()` gives each kernel's regularizer (a fresh
            instance per layer, as a user writing the model would), or None.
        make_dropout: `make_dropout()` gives the layer after each hidden
            layer, or None.
        first_layer: a layer right after the input, or None.
        weight_decay: SGD's decoupled weight decay, or None.
        metrics: `compile`'s metrics.
    """
    keras.utils.set_random_seed(seed)

    def regularizer():
        return None if penalty is None else penalty()

    # The Dense layers draw their initializers' seeds from Python's random
    # when they are created: create them before any dropout layer does.
    hidden = [
        keras.layers.Dense(
            units, activation="relu", kernel_regularizer=regularizer()
        )
        for units in hidden_units
    ]
    output = keras.layers.Dense(NUM_CLASSES, kernel_regularizer=regularizer())
    layers = [keras.Input((INPUT_DIM,))]
    if first_layer is not None:
        layers.append(first_layer)
    for dense in hidden:
        layers.append(dense)
        if make_dropout is not None:
            layers.append(make_dropout())
    layers.append(output)
    model = keras.Sequential(layers)
    model.compile(
        optimizer=keras.optimizers.SGD(
            learning_rate=LEARNING_RATE, weight_decay=weight_decay
        ),
        # The last layer has no softmax: its outputs are logits.
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=metrics,
    )
    return model


# The command line.


class ArgumentParser(argparse.ArgumentParser):
    """A benchmark's command line: `--quick`, `--seed` and `--json`, and the
    settings added by `add_setting`, each with a default and a `--quick`
    value, checked against a minimum."""

    def __init__(
        self,
        doc,
        *,
        quick_help="smoke test: fewer, shorter rounds (its numbers mean "
        "nothing)",
        json_help="also write the results to PATH",
    ):
        super().__init__(
            description=doc.split("\n\n")[0],
            epilog="The backend is chosen with the KERAS_BACKEND variable.",
        )
        self._settings = []
        self.add_argument("--quick", action="store_true", help=quick_help)
        self.add_argument(
            "--seed", type=int, default=0, help="data, weights and order seed"
        )
        self.add_argument("--json", metavar="PATH", help=json_help)

    def add_setting(
        self,
        flag,
        *,
        default,
        quick,
        help,
        type=int,
        minimum=1,
        why=None,
        show=str,
        **kwargs,
    ):
        """An option worth `default`, or `quick` with `--quick`.

        An integer one must be at least `minimum` (`why` says why, if not
        1); `show` writes the defaults in the help.
        """
        action = self.add_argument(
            flag,
            type=type,
            default=None,
            help=f"{help} (default: {show(default)}; --quick: {show(quick)})",
            **kwargs,
        )
        self._settings.append((action.dest, flag, default, quick, minimum, why))

    def add_epoch_settings(self, rounds, steps, per="variant"):
        """`--rounds` timed epochs per `per`, of `--steps` batches each;
        `rounds` and `steps` are `(default, quick)` pairs."""
        self.add_setting(
            "--rounds",
            default=rounds[0],
            quick=rounds[1],
            help=f"timed epochs per {per}",
        )
        self.add_setting(
            "--steps",
            default=steps[0],
            quick=steps[1],
            help=f"batches of {BATCH_SIZE} per epoch",
        )

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        for dest, flag, default, quick, minimum, why in self._settings:
            if getattr(parsed, dest) is None:
                setattr(parsed, dest, quick if parsed.quick else default)
            value = getattr(parsed, dest)
            if isinstance(value, int) and value < minimum:
                reason = f" ({why})" if why else ""
                self.error(f"{flag} must be at least {minimum}{reason}")
        return parsed


def epoch_settings(args):
    """The JSON record's first settings, after `add_epoch_settings`."""
    return {
        "rounds": args.rounds,
        "steps": args.steps,
        "batch_size": BATCH_SIZE,
    }


# The timing loop.


class Contender:
    """One thing to time: `run()`, between `setup()` and `finish(result)`.

    Only `run` is timed. `finish` receives what `run` returned, may check
    it, and returns what the rounds record. A plain function passed to
    `interleaved_rounds` is a contender with only `run`.
    """

    def setup(self):
        pass

    def run(self):
        raise NotImplementedError

    def finish(self, result):
        return result


class _Function(Contender):
    def __init__(self, function):
        self.run = function


class EpochTrainee(Contender):
    """A model that each run trains one epoch of `fit`, `initial_epoch`
    counting its earlier epochs (so that callbacks see a new epoch every
    time); `epochs` counts them, warm-up included."""

    def __init__(self, model, x, y, callbacks=()):
        self.model = model
        self.x, self.y = x, y
        self.callbacks = list(callbacks)
        self.epochs = 0

    def run(self):
        return self.model.fit(
            self.x,
            self.y,
            batch_size=BATCH_SIZE,
            initial_epoch=self.epochs,
            epochs=self.epochs + 1,
            callbacks=self.callbacks,
            verbose=0,
        )

    def finish(self, history):
        self.epochs += 1
        return history


@dataclass
class Rounds:
    """What `interleaved_rounds` measured, `{name: [value per round]}`."""

    cpu: dict  # process CPU seconds, all threads together
    wall: dict  # wall seconds
    results: dict  # what each contender's `finish` returned
    warm_up: dict = field(default_factory=dict)  # `{name: result}`


def time_once(contender):
    """CPU seconds, wall seconds and result of one run of `contender`."""
    contender.setup()
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    result = contender.run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu, wall, contender.finish(result)


def interleaved_rounds(
    contenders,
    rounds,
    seed,
    *,
    warm_up=True,
    baseline=None,
    label="",
    progress=None,
):
    """Times every contender once per round, in a fresh shuffled order.

    Args:
        contenders: `{name: Contender or function}`.
        rounds: number of timed rounds.
        seed: seeds the shuffling.
        warm_up: the names to run once first, in order and untimed (to
            trace and compile); True for all of them, False for none.
        baseline: the name whose CPU time each round's stderr line reports.
        label: what precedes "round" in those lines.
        progress: `progress(rounds)` gives the end of each round's line
            instead, from the `Rounds` so far.

    Returns:
        A `Rounds`.
    """
    contenders = {
        name: c if isinstance(c, Contender) else _Function(c)
        for name, c in contenders.items()
    }
    measured = Rounds(
        cpu={name: [] for name in contenders},
        wall={name: [] for name in contenders},
        results={name: [] for name in contenders},
    )
    if warm_up is True:
        warm_up = list(contenders)
    for name in warm_up or ():
        measured.warm_up[name] = time_once(contenders[name])[2]

    order = list(contenders)
    shuffler = random.Random(seed)
    for round_index in range(rounds):
        shuffler.shuffle(order)
        for name in order:
            cpu, wall, result = time_once(contenders[name])
            measured.cpu[name].append(cpu)
            measured.wall[name].append(wall)
            measured.results[name].append(result)
        if progress is not None:
            line = progress(measured)
        else:
            line = f"{baseline} {measured.cpu[baseline][-1]:.3f} s"
        print(
            f"  {label}round {round_index + 1:>2}/{rounds}: {line}",
            file=sys.stderr,
            flush=True,
        )
    return measured


# Summaries.


def quartiles(values):
    """25th, 50th and 75th percentiles."""
    low, median, high = np.percentile(values, [25, 50, 75])
    return float(low), float(median), float(high)


def ratios(own, reference):
    """Quartiles of the per-round ratios `own / reference`."""
    return quartiles(np.asarray(own) / np.asarray(reference))


def summarize(seconds, baseline, twins=None, *, extra_ms=False, twin=True):
    """A row per contender of `seconds`, `{name: [seconds per round]}`.

    Each row holds the median seconds, the quartiles of the per-round ratios
    to `baseline` and to the contender's twin in `twins` (`{name: twin}`),
    with `extra_ms` the quartiles of the milliseconds over the baseline,
    and with `twin` the twin's name.
    """
    twins = twins or {}
    reference = np.asarray(seconds[baseline])
    rows = []
    for name, values in seconds.items():
        own = np.asarray(values)
        twin_name = twins.get(name)
        row = {
            "variant": name,
            "median_s": float(np.median(own)),
            "vs_baseline": quartiles(own / reference),
        }
        if extra_ms:
            row["extra_ms"] = (
                None if name == baseline else quartiles((own - reference) * 1e3)
            )
        row["vs_twin"] = (
            None if twin_name is None else ratios(own, seconds[twin_name])
        )
        if twin:
            row["twin"] = twin_name
        rows.append(row)
    return rows


def quartile_cell(values, spec=".1f", unit="", between="-"):
    """A table cell: the median with its 25th-75th percentiles, `values`
    being `quartiles`' triple (empty for None)."""
    if values is None:
        return ""
    low, median, high = (format(value, spec) for value in values)
    return f"{median}{unit} ({low}{between}{high})"


def ratio_cell(values):
    """A table cell: the median ratio with its 25th-75th percentiles."""
    return quartile_cell(values, ".3f", "x")


def cell(value, spec=".3f"):
    """A table cell: `value` formatted, or empty for None."""
    return "" if value is None else format(value, spec)


def markdown_table(headings, alignment, rows):
    """A markdown table; `alignment` has "l" or "r" for each column."""
    rule = {"l": "---", "r": "---:"}
    lines = [
        "| " + " | ".join(headings) + " |",
        "|" + "|".join(rule[a] for a in alignment) + "|",
    ]
    lines.extend("| " + " | ".join(map(str, row)) + " |" for row in rows)
    return "\n".join(lines)


def variant_table(rows, baseline, twin_heading="vs its twin"):
    """The table of `summarize`'s rows: a column per field they hold."""
    columns = [
        ("variant", "l", lambda row: row["variant"]),
        ("s / epoch", "r", lambda row: f"{row['median_s']:.3f}"),
        (
            f"vs {baseline} (p25-p75)",
            "r",
            lambda row: ratio_cell(row["vs_baseline"]),
        ),
    ]
    if "extra_ms" in rows[0]:
        columns.append(
            (
                "extra ms / epoch (p25 to p75)",
                "r",
                lambda row: quartile_cell(row["extra_ms"], between=" to "),
            )
        )
    columns.append(
        (
            f"{twin_heading} (p25-p75)",
            "r",
            lambda row: ratio_cell(row["vs_twin"]),
        )
    )
    if "twin" in rows[0]:
        columns.append(("twin", "l", lambda row: row["twin"] or ""))
    return markdown_table(
        [heading for heading, _, _ in columns],
        "".join(align for _, align, _ in columns),
        ([show(row) for _, _, show in columns] for row in rows),
    )


def twin_checks(rows, twin_label=None):
    """`(description, measured, met)`: each row with a twin within 1.00x."""
    return [
        (
            f"{row['variant']} / {twin_label or row['twin']} <= 1.00x (+-2%)",
            f"{row['vs_twin'][1]:.3f}x",
            row["vs_twin"][1] <= TWIN_LIMIT,
        )
        for row in rows
        if row["vs_twin"] is not None
    ]


def print_targets(checks):
    """Prints `(description, measured, met)` rows as a markdown table."""
    print(
        markdown_table(
            ("target", "measured", "met"),
            "lrl",
            (
                (description, measured, "yes" if met else "no")
                for description, measured, met in checks
            ),
        )
    )


# Monte-Carlo prediction: mc_predict against a loop of `predict` calls.

SAMPLES = 30
MC_PREDICT = "mc_predict"
LOOP_DEFAULT = "predict loop, batch 32 (default)"
# mc_predict must be at least this much faster than the fair loop.
SPEEDUP_TARGET = 3.0
# Equal statistics: the gap between the means (relative to the average std)
# at most this multiple of its expected value for independent draws, and
# the average stds within this fraction of each other.
MEAN_GAP_FACTOR = 1.5
STD_TOLERANCE = 0.10


def loop_name(batch_size):
    return f"predict loop, batch {batch_size}"


def predict_loop(model, x, batch_size):
    """Mean and std over `SAMPLES` calls of `predict`."""
    outputs = np.stack(
        [
            model.predict(x, batch_size=batch_size, verbose=0)
            for _ in range(SAMPLES)
        ]
    )
    return outputs.mean(axis=0), outputs.std(axis=0)


def mc_contenders(mc_model, loop_model, x, fair_batch_size):
    """`{name: function returning (mean, std)}`, mc_predict first: it on
    `mc_model`, and `predict` loops on `loop_model` at predict's default
    batch and at `fair_batch_size`."""
    return {
        MC_PREDICT: lambda: keras_regkit.mc_predict(mc_model, x, SAMPLES),
        LOOP_DEFAULT: lambda: predict_loop(loop_model, x, None),
        loop_name(fair_batch_size): lambda: predict_loop(
            loop_model, x, fair_batch_size
        ),
    }


def warm_up_mc(mc_model, loop_model, x, fair_batch_size):
    """Runs mc_predict once and `predict` once at each batch size (traces
    and compiles them for these inputs); their wall seconds by name."""
    seconds = {}
    started = time.perf_counter()
    keras_regkit.mc_predict(mc_model, x, SAMPLES)
    seconds[MC_PREDICT] = time.perf_counter() - started
    for name, batch_size in (
        (LOOP_DEFAULT, None),
        (loop_name(fair_batch_size), fair_batch_size),
    ):
        started = time.perf_counter()
        loop_model.predict(x, batch_size=batch_size, verbose=0)
        seconds[name] = time.perf_counter() - started
    return seconds


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


def round_statistics(results):
    """`{loop: [compare_statistics of each round]}` from `Rounds.results`."""
    return {
        name: [
            compare_statistics(loop, mc)
            for loop, mc in zip(outputs, results[MC_PREDICT], strict=True)
        ]
        for name, outputs in results.items()
        if name != MC_PREDICT
    }


def worst_statistics(checks):
    """The largest mean gap and the std ratio farthest from 1."""
    return {
        "worst_mean_gap": max(check["mean_gap"] for check in checks),
        "worst_std_ratio": max(
            (check["std_ratio"] for check in checks), key=lambda r: abs(r - 1)
        ),
    }


def speedup_check(speedup, fair_name, before="", after=""):
    """`(description, measured, met)` of the speedup target."""
    return (
        f"{before}mc_predict speedup vs {fair_name} >= "
        f"{SPEEDUP_TARGET:.0f}x{after}",
        f"{speedup:.2f}x",
        speedup >= SPEEDUP_TARGET,
    )


def statistics_check(row, name, before="", after=""):
    """`(description, measured, met)` of the statistics check of the loop
    `name`, from its summary `row` (`worst_mean_gap`, `worst_std_ratio`)."""
    gap_limit = MEAN_GAP_FACTOR * expected_mean_gap()
    gap, ratio = row["worst_mean_gap"], row["worst_std_ratio"]
    return (
        f"{before}mc_predict statistics equal {name}'s{after}: mean gap <= "
        f"{gap_limit:.2f} std, std ratio within {STD_TOLERANCE:.0%}",
        f"{gap:.3f} std, {ratio:.3f}",
        gap <= gap_limit and abs(ratio - 1) <= STD_TOLERANCE,
    )


# The run and its record.


def source_revision():
    """The git commit of the keras_regkit source, or None outside a checkout.

    "+dirty" is appended when the package has uncommitted changes, so that
    results can always be traced to the code that produced them.
    """
    package_dir = os.path.dirname(os.path.abspath(keras_regkit.__file__))

    def git(*arguments):
        return subprocess.run(
            ["git", *arguments],
            cwd=package_dir,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", ".")
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def backend_version(backend):
    """The version of the package behind the Keras backend."""
    # Every Keras backend is named after the package that implements it.
    return __import__(backend).__version__


def run_record(backend, revision, checks):
    """The JSON fields every benchmark writes: what ran, where, what met."""
    return {
        "backend": backend,
        "versions": {
            "python": platform.python_version(),
            "keras": keras.__version__,
            "keras_regkit": keras_regkit.__version__,
            "keras_regkit_revision": revision,
            backend: backend_version(backend),
            "numpy": np.__version__,
        },
        "cpu_count": os.cpu_count(),
        "targets": [
            {"target": description, "measured": measured, "met": met}
            for description, measured, met in checks
        ],
    }


class Run:
    """One run of a benchmark: its backend, source revision and clock.

    Creating it says on stderr what runs (`plan`) and starts the clock;
    `stop()` stops it, and `report(checks, path, **fields)` prints the
    targets table and the time taken, and writes the JSON record.
    """

    def __init__(self, plan, quick=False):
        self.backend = keras.backend.backend()
        self.revision = source_revision()
        self.quick = quick
        self.elapsed = None
        print(
            f"Backend {self.backend}{' (quick)' if quick else ''}: {plan}; "
            f"keras_regkit at {self.revision}",
            file=sys.stderr,
            flush=True,
        )
        self.started = time.perf_counter()

    @property
    def stamp(self):
        """The code measured, for the tables' headings."""
        return f"keras_regkit {keras_regkit.__version__} at {self.revision}"

    @property
    def quick_note(self):
        """What begins a table's settings under `--quick`."""
        return "QUICK SMOKE TEST, not a measurement; " if self.quick else ""

    def stop(self):
        self.elapsed = time.perf_counter() - self.started
        return self.elapsed

    def report(self, checks, path=None, **fields):
        """Prints a blank line, the targets table and the time taken; with
        a `path`, writes the JSON record there: `run_record`'s fields,
        `fields`, then the seconds taken."""
        print()
        print_targets(checks)
        print(f"\n({self.elapsed:.0f} s)", file=sys.stderr)
        if path:
            record = {
                **run_record(self.backend, self.revision, checks),
                **fields,
                "elapsed_s": self.elapsed,
            }
            with open(path, "w") as file:
                json.dump(record, file, indent=2)
            print(f"Wrote {path}", file=sys.stderr)
