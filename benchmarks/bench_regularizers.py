"""Train-step cost of keras_regkit's penalties against Keras's own.

What is measured
----------------
An MLP 784-1024-1024-10 (ReLU) is trained with `keras.optimizers.SGD` and
sparse categorical cross-entropy on its logits (`from_logits=True`) on
synthetic data (numpy, fixed seed), batch 128, with each of these
penalties on all three kernels (never on the biases):

- no penalty (the baseline);
- Keras's `L1(1e-5)`, `L2(1e-4)` and `L1L2(1e-5, 1e-4)`;
- no penalty but decoupled weight decay, `SGD(weight_decay=2e-4)` (the same
  step as `L2(1e-4)` under plain SGD; a reference point, not a contender);
- keras_regkit's `L1(1e-5)`, `L2(1e-4)`, `ElasticNet(1e-5, 1e-4)`,
  `ExpAbs(1e-4)` and `GroupLasso(1e-4)`.

Method
------
Wall time on a shared machine is noisy (two identical models can differ by
20%), so the benchmark compares variants under the same conditions rather
than one after another:

1. Every variant's model is built and compiled once, then warmed up with one
   epoch of `fit`, which traces and compiles its train step.
2. For `--rounds` rounds, each variant trains one epoch of `--steps` batches
   with `model.fit(x, y, batch_size=128, epochs=1, verbose=0)`. The order of
   the variants is shuffled every round (seeded), and each epoch is timed in
   process CPU time (`time.process_time()`, all threads together), which
   counts the work done rather than the time spent waiting for the CPU.
3. Within each round, every variant's time is divided by the baseline's time
   of the same round, and each keras_regkit penalty's time by that of its
   Keras twin (`L1`/`L1`, `L2`/`L2`, `ElasticNet`/`L1L2`). The tables report
   the median of these ratios over the rounds, with their 25th and 75th
   percentiles, and the median seconds per epoch.

The seconds include `fit`'s fixed cost per call (callbacks, data iterator),
which is the same for every variant: the ratios are those a user sees from
`fit`, not those of the bare train step.

The cost of `import keras_regkit` on top of `import keras` is measured in
fresh Python processes: each one imports keras, then times
`import keras_regkit` with `time.perf_counter()`. The median over
`--import-runs` processes is reported, next to that of `import keras` itself.

Usage
-----
The backend is Keras's usual environment variable; run once per backend::

    KERAS_BACKEND=tensorflow python benchmarks/bench_regularizers.py
    KERAS_BACKEND=jax python benchmarks/bench_regularizers.py --json jax.json
    KERAS_BACKEND=torch python benchmarks/bench_regularizers.py --rounds 20

It prints a markdown table, the import times and which of the project's
targets are met. With the defaults (15 rounds of 40 steps) one backend takes
two to three minutes on two CPU cores. Each round's no-penalty time goes to
stderr: if those vary by more than about 20%, something else was competing
for the CPU (PyTorch's busy-waiting threads make it the most sensitive
backend), and the run is best repeated.
"""

import argparse
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

import keras_regkit

BATCH_SIZE = 128
INPUT_DIM = 784
HIDDEN_UNITS = (1024, 1024)
NUM_CLASSES = 10
LEARNING_RATE = 0.01
WEIGHT_DECAY = 2e-4  # SGD's decoupled decay equal to L2(1e-4); see L2 docs

BASELINE = "no penalty"

# Project targets: a keras_regkit penalty may cost at most this much relative
# to its Keras twin on every backend (1.00x, with 2% allowed for noise) ...
TWIN_LIMIT = 1.02
# ... and, on TensorFlow, at most this much relative to no penalty.
TENSORFLOW_BASELINE_LIMITS = {
    "regkit L1": 1.08,
    "regkit L2": 1.08,
    "regkit ElasticNet": 1.08,
    "regkit ExpAbs": 1.15,
    "regkit GroupLasso": 1.15,
}
IMPORT_LIMIT_S = 0.1


@dataclass(frozen=True)
class Variant:
    """One model to time: its kernel penalty and optimizer settings."""

    name: str
    make_penalty: Callable[[], keras.regularizers.Regularizer] | None = None
    weight_decay: float | None = None
    twin: str | None = None  # the Keras variant this one is compared to


VARIANTS = (
    Variant(BASELINE),
    Variant("keras L1", lambda: keras.regularizers.L1(1e-5)),
    Variant("keras L2", lambda: keras.regularizers.L2(1e-4)),
    Variant("keras L1L2", lambda: keras.regularizers.L1L2(1e-5, 1e-4)),
    Variant("SGD weight_decay", weight_decay=WEIGHT_DECAY),
    Variant("regkit L1", lambda: keras_regkit.L1(1e-5), twin="keras L1"),
    Variant("regkit L2", lambda: keras_regkit.L2(1e-4), twin="keras L2"),
    Variant(
        "regkit ElasticNet",
        lambda: keras_regkit.ElasticNet(1e-5, 1e-4),
        twin="keras L1L2",
    ),
    Variant("regkit ExpAbs", lambda: keras_regkit.ExpAbs(1e-4)),
    Variant("regkit GroupLasso", lambda: keras_regkit.GroupLasso(1e-4)),
)


def make_data(steps, seed):
    """Synthetic inputs and integer labels for `steps` batches."""
    rng = np.random.default_rng(seed)
    count = steps * BATCH_SIZE
    x = rng.standard_normal((count, INPUT_DIM), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, size=count).astype(np.int32)
    return x, y


def build_model(variant, seed):
    """The compiled MLP of `variant`, with the same initial weights for all."""
    keras.utils.set_random_seed(seed)

    def penalty():
        # A fresh instance per layer, as a user writing the model would.
        return None if variant.make_penalty is None else variant.make_penalty()

    layers = [keras.Input((INPUT_DIM,))]
    for units in HIDDEN_UNITS:
        layers.append(
            keras.layers.Dense(
                units, activation="relu", kernel_regularizer=penalty()
            )
        )
    layers.append(keras.layers.Dense(NUM_CLASSES, kernel_regularizer=penalty()))
    model = keras.Sequential(layers)
    model.compile(
        optimizer=keras.optimizers.SGD(
            learning_rate=LEARNING_RATE, weight_decay=variant.weight_decay
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    expected = 0 if variant.make_penalty is None else len(layers) - 1
    if len(model.losses) != expected:
        raise RuntimeError(
            f"{variant.name}: {len(model.losses)} penalties in model.losses, "
            f"expected {expected}"
        )
    return model


def train_one_epoch(model, x, y):
    """Process CPU seconds for one epoch of `fit`."""
    gc.collect()
    start = time.process_time()
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, verbose=0)
    return time.process_time() - start


def time_training(steps, rounds, seed):
    """Per-round CPU seconds of every variant: {name: [seconds, ...]}."""
    x, y = make_data(steps, seed)
    models = {variant.name: build_model(variant, seed) for variant in VARIANTS}
    for model in models.values():
        train_one_epoch(model, x, y)  # trace and compile the train step

    return interleaved_rounds(
        {
            name: (lambda m=m: train_one_epoch(m, x, y))
            for name, m in models.items()
        },
        rounds,
        seed,
        baseline=BASELINE,
        label="no penalty",
    )


def interleaved_rounds(contenders, rounds, seed, baseline, label):
    """Times every contender once per round, in a fresh shuffled order.

    Args:
        contenders: `{name: run}`, `run()` returning the seconds it took.
        rounds: number of rounds.
        seed: seeds the shuffling.
        baseline: the name whose time each round reports on stderr.
        label: how stderr names the baseline.

    Returns:
        `{name: [seconds per round]}`.
    """
    order = list(contenders)
    shuffler = random.Random(seed)
    seconds = {name: [] for name in contenders}
    for round_index in range(rounds):
        shuffler.shuffle(order)
        for name in order:
            seconds[name].append(contenders[name]())
        print(
            f"  round {round_index + 1:>2}/{rounds}: "
            f"{label} {seconds[baseline][-1]:.3f} s",
            file=sys.stderr,
            flush=True,
        )
    return seconds


def quartiles(values):
    """25th, 50th and 75th percentiles."""
    low, median, high = np.percentile(values, [25, 50, 75])
    return float(low), float(median), float(high)


def summarize(seconds):
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
        }
        if variant.twin is not None:
            row["vs_twin"] = quartiles(own / np.asarray(seconds[variant.twin]))
        rows.append(row)
    return rows


_IMPORT_PROBE = """
import time
start = time.perf_counter()
import keras
middle = time.perf_counter()
import keras_regkit
end = time.perf_counter()
print(middle - start, end - middle)
"""


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


def time_imports(runs):
    """Median seconds of `import keras`, then of `import keras_regkit`."""
    keras_times, regkit_times = [], []
    for _ in range(runs):
        output = subprocess.run(
            [sys.executable, "-c", _IMPORT_PROBE],
            check=True,
            capture_output=True,
            text=True,
            env=dict(os.environ, KERAS_BACKEND=keras.backend.backend()),
        ).stdout
        keras_s, regkit_s = map(float, output.split()[-2:])
        keras_times.append(keras_s)
        regkit_times.append(regkit_s)
    return statistics.median(keras_times), statistics.median(regkit_times)


def check_targets(backend, rows, regkit_import_s):
    """The project's targets as (description, measured, met) triples."""
    checks = []
    for row in rows:
        if row["vs_twin"] is not None:
            ratio = row["vs_twin"][1]
            checks.append(
                (
                    f"{row['variant']} / Keras twin <= 1.00x (+-2%)",
                    f"{ratio:.3f}x",
                    ratio <= TWIN_LIMIT,
                )
            )
    if backend == "tensorflow":
        for row in rows:
            limit = TENSORFLOW_BASELINE_LIMITS.get(row["variant"])
            if limit is not None:
                ratio = row["vs_baseline"][1]
                checks.append(
                    (
                        f"{row['variant']} / no penalty <= {limit:.2f}x",
                        f"{ratio:.3f}x",
                        ratio <= limit,
                    )
                )
    checks.append(
        (
            f"import keras_regkit < {IMPORT_LIMIT_S} s",
            f"{regkit_import_s * 1000:.1f} ms",
            regkit_import_s < IMPORT_LIMIT_S,
        )
    )
    return checks


def ratio_cell(values):
    """A table cell: the median ratio with its 25th-75th percentiles."""
    if values is None:
        return ""
    low, median, high = values
    return f"{median:.3f}x ({low:.3f}-{high:.3f})"


def print_targets(checks):
    """Prints `(description, measured, met)` rows as a markdown table."""
    print("| target | measured | met |\n|---|---:|---|")
    for description, measured, met in checks:
        print(f"| {description} | {measured} | {'yes' if met else 'no'} |")


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


def markdown_table(rows):
    lines = [
        "| variant | s / epoch | vs no penalty (p25-p75) "
        "| vs Keras twin (p25-p75) |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {row['median_s']:.3f} "
            f"| {ratio_cell(row['vs_baseline'])} "
            f"| {ratio_cell(row['vs_twin'])} |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="The backend is chosen with the KERAS_BACKEND variable.",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=15,
        help="timed epochs per variant (default: %(default)s)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=40,
        help="batches of 128 per epoch (default: %(default)s)",
    )
    parser.add_argument(
        "--import-runs",
        type=int,
        default=7,
        help="fresh processes for the import timing (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="data, weights and order seed"
    )
    parser.add_argument(
        "--json", metavar="PATH", help="also write the results to PATH"
    )
    args = parser.parse_args(argv)
    for option in ("rounds", "steps", "import_runs"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    backend = keras.backend.backend()
    revision = source_revision()
    print(
        f"Backend {backend}: {len(VARIANTS)} variants, {args.rounds} rounds "
        f"of {args.steps} steps, keras_regkit at {revision}",
        file=sys.stderr,
        flush=True,
    )
    started = time.perf_counter()
    seconds = time_training(args.steps, args.rounds, args.seed)
    rows = summarize(seconds)
    keras_import_s, regkit_import_s = time_imports(args.import_runs)
    checks = check_targets(backend, rows, regkit_import_s)
    elapsed = time.perf_counter() - started

    print(
        f"\n### {backend} ({args.rounds} rounds x {args.steps} steps of "
        f"{BATCH_SIZE}, median of per-round ratios; keras_regkit "
        f"{keras_regkit.__version__} at {revision})\n"
    )
    print(markdown_table(rows))
    print(
        f"\n`import keras`: {keras_import_s:.3f} s; `import keras_regkit` "
        f"after it: {regkit_import_s * 1000:.1f} ms "
        f"(medians of {args.import_runs} fresh processes)\n"
    )
    print_targets(checks)
    print(f"\n({elapsed:.0f} s)", file=sys.stderr)

    if args.json:
        result = {
            **run_record(backend, revision, checks),
            "settings": {
                "rounds": args.rounds,
                "steps": args.steps,
                "batch_size": BATCH_SIZE,
                "seed": args.seed,
                "import_runs": args.import_runs,
            },
            "seconds_per_epoch": seconds,
            "summary": rows,
            "import_s": {
                "keras": keras_import_s,
                "keras_regkit": regkit_import_s,
            },
            "elapsed_s": elapsed,
        }
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)


if __name__ == "__main__":
    main()
