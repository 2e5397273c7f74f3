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
    KERAS_BACKEND=tensorflow python benchmarks/bench_regularizers.py --quick

It prints a markdown table, the import times and which of the project's
targets are met. With the defaults (15 rounds of 40 steps) one backend takes
two to three minutes on two CPU cores. Each round's no-penalty time goes to
stderr: if those vary by more than about 20%, something else was competing
for the CPU (PyTorch's busy-waiting threads make it the most sensitive
backend), and the run is best repeated. `--quick` (3 rounds of 5 steps, 1
import run) is a smoke test of the whole script, well under a minute; its
numbers mean nothing.
"""

import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

# The harness shared by every benchmark lies next to this script.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras
from _harness import (
    BATCH_SIZE,
    ArgumentParser,
    Run,
    build_mlp,
    epoch_settings,
    interleaved_rounds,
    make_data,
    summarize,
    twin_checks,
    variant_table,
)

import keras_regkit

WEIGHT_DECAY = 2e-4  # SGD's decoupled decay equal to L2(1e-4); see L2 docs

BASELINE = "no penalty"

# Project targets: a keras_regkit penalty may cost at most 1.00x (+-2%)
# relative to its Keras twin on every backend (the harness's TWIN_LIMIT) ...
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


def build_model(variant, seed):
    """The compiled MLP of `variant`, with the same initial weights for all."""
    model = build_mlp(
        seed, penalty=variant.make_penalty, weight_decay=variant.weight_decay
    )
    expected = 0 if variant.make_penalty is None else len(model.layers)
    if len(model.losses) != expected:
        raise RuntimeError(
            f"{variant.name}: {len(model.losses)} penalties in model.losses, "
            f"expected {expected}"
        )
    return model


def time_training(steps, rounds, seed):
    """Per-round CPU seconds of every variant: {name: [seconds, ...]}."""
    x, y = make_data(steps, seed)
    models = {variant.name: build_model(variant, seed) for variant in VARIANTS}
    # Warmed up with one epoch each (traces and compiles the train step).
    return interleaved_rounds(
        {
            name: lambda m=m: m.fit(
                x, y, batch_size=BATCH_SIZE, epochs=1, verbose=0
            )
            for name, m in models.items()
        },
        rounds,
        seed,
        baseline=BASELINE,
    ).cpu


_IMPORT_PROBE = """
import time
start = time.perf_counter()
import keras
middle = time.perf_counter()
import keras_regkit
end = time.perf_counter()
print(middle - start, end - middle)
"""


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
    checks = twin_checks(rows, "Keras twin")
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


def parse_args(argv=None):
    parser = ArgumentParser(__doc__)
    parser.add_epoch_settings(rounds=(15, 3), steps=(40, 5))
    parser.add_setting(
        "--import-runs",
        default=7,
        quick=1,
        help="fresh processes for the import timing",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    run = Run(
        f"{len(VARIANTS)} variants, {args.rounds} rounds of {args.steps} steps",
        args.quick,
    )
    seconds = time_training(args.steps, args.rounds, args.seed)
    rows = summarize(
        seconds,
        BASELINE,
        {variant.name: variant.twin for variant in VARIANTS},
        twin=False,
    )
    keras_import_s, regkit_import_s = time_imports(args.import_runs)
    checks = check_targets(run.backend, rows, regkit_import_s)
    run.stop()

    print(
        f"\n### {run.backend} ({run.quick_note}{args.rounds} rounds x "
        f"{args.steps} steps of {BATCH_SIZE}, median of per-round ratios; "
        f"{run.stamp})\n"
    )
    print(variant_table(rows, BASELINE, "vs Keras twin"))
    print(
        f"\n`import keras`: {keras_import_s:.3f} s; `import keras_regkit` "
        f"after it: {regkit_import_s * 1000:.1f} ms "
        f"(medians of {args.import_runs} fresh processes)"
    )
    run.report(
        checks,
        args.json,
        settings={
            **epoch_settings(args),
            "seed": args.seed,
            "import_runs": args.import_runs,
        },
        seconds_per_epoch=seconds,
        summary=rows,
        import_s={"keras": keras_import_s, "keras_regkit": regkit_import_s},
    )


if __name__ == "__main__":
    main()
