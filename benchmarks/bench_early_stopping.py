"""Epoch-time and memory cost of EarlyStopping's `restore_best_weights`.

What is measured
----------------
Training. An MLP 784-2048-2048-2048-10 (ReLU), 10,020,874 parameters
(40.1 MB of float32; the script counts them from the model and prints
them), trained with `keras.optimizers.SGD(0.01)` and sparse categorical
cross-entropy on its logits (`from_logits=True`) on synthetic data (numpy,
fixed seed), batch 128, one epoch per `fit` call, with:

- no early stopping (the baseline);
- Keras's `keras.callbacks.EarlyStopping(monitor="score", mode="min",
  patience=5, restore_best_weights=True)`, which snapshots the weights with
  `model.get_weights()`, host numpy copies;
- keras_regkit's `keras_regkit.callbacks.EarlyStopping` with the same
  arguments, which snapshots them with `keras.ops.copy`, backend tensors
  where the weights live, each copy replacing the previous one's weight.

Every variant, the baseline too, has a small callback before the early
stopping one that writes `logs["score"]`, lower at every epoch (a counter
kept across `fit` calls): the monitored value improves at every epoch, so
every epoch snapshots the weights. Epochs are short (`--steps` batches, 5
by default) so that the snapshots' cost shows.

Each `fit` call resets the callback (`on_train_begin`), so in a one-epoch
`fit` Keras's callback takes the "best weights were never set" snapshot,
then the improvement's snapshot (two snapshots, the second replacing the
first), where keras_regkit's takes one (the weights have not changed in
between); both restore the best weights at the end of training
(`set_weights`). Each timed epoch thus pays one restore and two snapshots
(Keras) or one (keras_regkit), against one snapshot for an improving epoch
of a long `fit` (the restore being once per `fit`). The extra milliseconds
are thus an upper bound on an epoch's cost, and the ratio includes the
snapshot keras_regkit does not take twice. On TensorFlow keras_regkit's
copy (`tf.identity`) shares the variable's buffer until the optimizer
writes to it, which copies it then:
that cost falls in the next epoch's train step, timed too. The script
checks after every `fit` that each callback holds best weights taken at
that epoch, and stops if not.

Memory. Outside the timed rounds, in a fresh Python process for each
implementation (so that neither inherits the other's freed memory), the
same model is warmed up with two epochs of `fit`, then:

1. a snapshot is taken (`model.get_weights()`, or keras_regkit's
   `_weights.copy_values(model.weights)`) and the model trains one epoch;
2. a second snapshot replaces the first, as the callback does on an
   improvement (Keras's list is replaced once the new one is built,
   keras_regkit's copies one weight at a time over the old ones), and the
   model trains one more epoch.

Two gauges are read before (after a control epoch without any snapshot)
and after each step, with their peak during each snapshot:

- the process's resident memory, VmRSS in `/proc/self/status`, and its
  peak VmHWM (reset through `/proc/self/clear_refs`). Freed memory must
  leave the process for it to follow the memory in use: every epoch ends
  with glibc's `malloc_trim(0)`, and the probes run with
  `MALLOC_MMAP_THRESHOLD_=1048576` (buffers of 1 MiB and more mapped on
  their own and unmapped when freed; glibc's default threshold rises after
  the first large buffer is freed, after which such buffers stay resident
  once freed and hide the allocations that reuse them);
- on TensorFlow, its allocator's own count of the bytes in use and their
  peak (`tf.config.experimental.get_memory_info("CPU:0")`), which sees its
  tensors, keras_regkit's copies among them, but not numpy's arrays. It
  is needed because that allocator reuses memory it freed without the
  resident memory growing.

Training after a snapshot matters, for TensorFlow's shared buffers (see
above). The target is at most one extra
copy of the weights, plus one weight (the largest), as keras_regkit's
docstring promises, for the worst reading of either gauge; Keras's
replacing snapshot should peak near two copies. These figures are
approximate (allocators and compilers keep some memory of their own):
compare them with the weights' size, not to the MB.

Method
------
As in `bench_regularizers.py`, variants are compared under the same
conditions rather than one after another:

1. Every model is built and compiled once (same initial weights for all),
   then warmed up with one epoch of `fit`, which traces and compiles its
   train step.
2. For `--rounds` rounds, each variant trains one epoch of `--steps`
   batches with `model.fit(x, y, batch_size=128, initial_epoch=n,
   epochs=n + 1, verbose=0, callbacks=[...])`, `n` counting the model's
   earlier epochs. The order of the variants is shuffled every round
   (seeded), and each epoch is timed in process CPU time
   (`time.process_time()`, all threads together), which counts the work
   done rather than the time spent waiting for the CPU.
3. Within each round, every variant's time is divided by the baseline's
   time of the same round, and keras_regkit's by Keras's; the baseline's
   time is also subtracted from each early-stopping variant's (the extra
   milliseconds per epoch). The table reports the median of these over the
   rounds, with their 25th and 75th percentiles, and the median seconds.

The seconds include `fit`'s fixed cost per call (callbacks, data
iterator), the same for every variant: the ratios are those a user sees.

Usage
-----
The backend is Keras's usual environment variable; run once per backend::

    KERAS_BACKEND=tensorflow python benchmarks/bench_early_stopping.py
    KERAS_BACKEND=jax python benchmarks/bench_early_stopping.py --json j.json
    KERAS_BACKEND=torch python benchmarks/bench_early_stopping.py --rounds 30
    KERAS_BACKEND=tensorflow python benchmarks/bench_early_stopping.py --quick

It prints a markdown table of the epoch times, one of the memory, and which
of the project's targets are met. With the defaults (20 rounds of 5 steps,
then two fresh processes for the memory) one backend should take under a
minute on two CPU cores (6 rounds took 25 s on JAX). Each round's baseline
time goes to stderr: if those vary by more than about 20%, something else
was competing for the CPU, and the run is best repeated. `--quick` (3
rounds of 2 steps, the same model and memory measurement) is a smoke test
of the whole script, checks included, well under a minute; its epoch
times mean nothing.
"""

import argparse
import ctypes
import gc
import json
import math
import os
import subprocess
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
    NUM_CLASSES,
    ArgumentParser,
    EpochTrainee,
    Run,
    build_mlp,
    epoch_settings,
    interleaved_rounds,
    make_data,
    markdown_table,
    summarize,
    twin_checks,
    variant_table,
)

import keras_regkit
from keras_regkit._weights import copy_values

HIDDEN_UNITS = (2048, 2048, 2048)  # with 784 inputs, 10 M parameters
MONITOR = "score"
PATIENCE = 5

BASELINE = "no early stopping"
KERAS_STOPPING = "keras EarlyStopping"
REGKIT_STOPPING = "regkit EarlyStopping"

# Project targets: keras_regkit's callback may cost at most 1.00x (+-2%)
# relative to Keras's (the harness's TWIN_LIMIT) ...
# ... and hold at most one extra copy of the weights, plus one weight.


def stopping_arguments():
    return {
        "monitor": MONITOR,
        "mode": "min",
        "patience": PATIENCE,
        "restore_best_weights": True,
    }


@dataclass(frozen=True)
class Variant:
    """One model to time: its early-stopping callback, if any."""

    name: str
    make_callback: Callable[[], keras.callbacks.Callback] | None = None
    twin: str | None = None  # the variant this one is compared to


VARIANTS = (
    Variant(BASELINE),
    Variant(
        KERAS_STOPPING,
        lambda: keras.callbacks.EarlyStopping(**stopping_arguments()),
    ),
    Variant(
        REGKIT_STOPPING,
        lambda: keras_regkit.callbacks.EarlyStopping(**stopping_arguments()),
        twin=KERAS_STOPPING,
    ),
)


class FallingScore(keras.callbacks.Callback):
    """Writes `logs[MONITOR]`, lower at every epoch, across `fit` calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def on_epoch_end(self, epoch, logs=None):
        self.calls += 1
        logs[MONITOR] = float(-self.calls)


def build_model(seed):
    """The compiled MLP, with the same initial weights for all variants."""
    # Its last layer has no softmax: its outputs are logits. (Read as
    # probabilities, they get clipped, and training soon stops moving the
    # weights, which would hide TensorFlow's copy on write.)
    return build_mlp(seed, HIDDEN_UNITS)


def weight_sizes(model):
    """The bytes of each of `model.weights`, which a snapshot copies."""
    return [
        math.prod(weight.shape) * np.dtype(weight.dtype).itemsize
        for weight in model.weights
    ]


class Trainee(EpochTrainee):
    """A variant's model, its epoch count and its callbacks.

    Each run trains one epoch of `fit`.
    """

    def __init__(self, variant, x, y, seed):
        self.name = variant.name
        # The score must be in the logs before early stopping reads them.
        callbacks = [FallingScore()]
        self.stopping = None
        if variant.make_callback is not None:
            self.stopping = variant.make_callback()
            callbacks.append(self.stopping)
        super().__init__(build_model(seed), x, y, callbacks)

    def finish(self, history):
        self._check_snapshot()  # of the epoch just trained
        return super().finish(history)

    def _check_snapshot(self):
        """Stops unless the callback took the best weights of this epoch."""
        stopping = self.stopping
        if stopping is None:
            return
        weights = stopping.best_weights
        if (
            weights is None
            or len(weights) != len(self.model.weights)
            or stopping.best_epoch != self.epochs
            or self.model.stop_training
        ):
            raise RuntimeError(
                f"{self.name}: after epoch {self.epochs}, best_epoch "
                f"{stopping.best_epoch}, best_weights "
                f"{'None' if weights is None else len(weights)}, "
                f"stop_training {self.model.stop_training}"
            )


def time_training(steps, rounds, seed):
    """Per-round CPU seconds of every variant, {name: [seconds, ...]}, and
    the model's size, {"parameters", "weights_mb"}."""
    x, y = make_data(steps, seed)
    trainees = {
        variant.name: Trainee(variant, x, y, seed) for variant in VARIANTS
    }
    # Warmed up with one epoch each (traces and compiles the train step).
    seconds = interleaved_rounds(trainees, rounds, seed, baseline=BASELINE).cpu
    model = trainees[BASELINE].model
    shape = {
        "parameters": model.count_params(),
        "weights_mb": sum(weight_sizes(model)) / 1e6,
    }
    return seconds, shape


# Memory, measured in a fresh process per implementation (`--memory-probe`).

SNAPSHOTS = {
    # Keras's callback: `self.best_weights = self.model.get_weights()`, the
    # old list alive until the new one is built.
    KERAS_STOPPING: lambda model, previous: model.get_weights(),
    REGKIT_STOPPING: lambda model, previous: copy_values(
        model.weights, previous
    ),
}

RESIDENT = "resident memory"
TF_ALLOCATOR = "TensorFlow allocator"

# glibc serves allocations of at least this many bytes with their own
# mappings, given back to the system when freed. Setting it turns off
# glibc's moving threshold, which otherwise rises after the first large
# free, so that later buffers come from the heap and stay resident freed.
MMAP_THRESHOLD = 1 << 20


def process_memory():
    """VmRSS and VmHWM of this process, in MB (None where unreadable)."""
    values = {"VmRSS": None, "VmHWM": None}
    try:
        with open("/proc/self/status") as file:
            for line in file:
                key, _, rest = line.partition(":")
                if key in values:
                    values[key] = int(rest.split()[0]) * 1024 / 1e6
    except OSError:
        pass
    return values["VmRSS"], values["VmHWM"]


def reset_peak():
    """Resets VmHWM to the current VmRSS; False where Linux does not."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError:
        return False
    return True


def release_free_memory():
    """Collects garbage and gives freed heap memory back to the system.

    glibc's `malloc_trim(0)`, where there is one: without it a buffer freed
    by one step (a gradient, an old copy) stays resident and the next
    allocation reuses it unseen, so that resident memory would miss what a
    snapshot holds.
    """
    gc.collect()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def memory_gauges():
    """{name: (read, reset)}: read() gives the current and peak MB, reset()
    restarts the peak from the current value (False if it cannot)."""
    gauges = {RESIDENT: (process_memory, reset_peak)}
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        def read_allocator():
            info = tf.config.experimental.get_memory_info("CPU:0")
            return info["current"] / 1e6, info["peak"] / 1e6

        def reset_allocator():
            tf.config.experimental.reset_memory_stats("CPU:0")
            return True

        gauges[TF_ALLOCATOR] = (read_allocator, reset_allocator)
    return gauges


def _difference(value, reference):
    if value is None or reference is None:
        return None
    return value - reference


def memory_probe(name, seed):
    """Extra MB of two snapshots by `name`'s implementation, per gauge."""
    take = SNAPSHOTS[name]
    gauges = memory_gauges()
    x, y = make_data(2, seed)
    model = build_model(seed)

    def train():
        model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, verbose=0)
        release_free_memory()

    def read():
        return {gauge: get() for gauge, (get, _) in gauges.items()}

    def reset():
        return {gauge: restart() for gauge, (_, restart) in gauges.items()}

    for _ in range(2):
        train()  # warm-up: compile, and let the allocators settle
    before = read()
    train()  # control: no snapshot
    reference = read()

    first_reset = reset()
    snapshot = take(model, None)
    first = read()
    train()
    first_held = read()

    second_reset = reset()
    snapshot = take(model, snapshot)
    second = read()
    train()
    second_held = read()
    if snapshot is None or len(snapshot) != len(model.weights):
        raise RuntimeError(f"{name}: no snapshot of the weights")

    measured = {}
    for gauge in gauges:
        start = reference[gauge][0]  # current MB after the control epoch
        first_peak, second_peak = first[gauge][1], second[gauge][1]
        if not (first_reset[gauge] and second_reset[gauge]):
            first_peak = second_peak = None
        measured[gauge] = {
            "control_epoch_mb": _difference(start, before[gauge][0]),
            "first_peak_mb": _difference(first_peak, start),
            "first_held_mb": _difference(first_held[gauge][0], start),
            "second_peak_mb": _difference(second_peak, start),
            "second_held_mb": _difference(second_held[gauge][0], start),
        }
    return {
        "implementation": name,
        "parameters": model.count_params(),
        "weights_mb": sum(weight_sizes(model)) / 1e6,
        "largest_weight_mb": max(weight_sizes(model)) / 1e6,
        "gauges": measured,
    }


def measure_memory(seed):
    """One fresh process per implementation: [memory_probe's dict, ...]."""
    results = []
    for name in SNAPSHOTS:
        output = subprocess.run(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--memory-probe",
                name,
                "--seed",
                str(seed),
            ],
            check=True,
            capture_output=True,
            text=True,
            env=dict(
                os.environ,
                KERAS_BACKEND=keras.backend.backend(),
                MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD),
            ),
        ).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
        print(f"  memory: {name} measured", file=sys.stderr, flush=True)
    return results


def memory_limit_mb(memory):
    """One copy of the weights and one weight more."""
    return memory["weights_mb"] + memory["largest_weight_mb"]


MEMORY_KEYS = (
    "first_peak_mb",
    "first_held_mb",
    "second_peak_mb",
    "second_held_mb",
)


def check_targets(rows, memories):
    """The project's targets as (description, measured, met) triples."""
    checks = twin_checks(rows)
    for memory in memories:
        if memory["implementation"] != REGKIT_STOPPING:
            continue
        limit = memory_limit_mb(memory)
        # The worst reading of every gauge: each one misses some memory
        # (resident memory what TensorFlow's allocator reuses, that
        # allocator numpy's arrays).
        worst = max(
            value
            for gauge in memory["gauges"].values()
            for key in MEMORY_KEYS
            if (value := gauge[key]) is not None
        )
        checks.append(
            (
                f"{REGKIT_STOPPING} holds at most one extra copy of the "
                f"weights ({memory['weights_mb']:.1f} MB) and one weight "
                f"more: <= {limit:.1f} MB (approximate)",
                f"{worst:.1f} MB",
                worst <= limit,
            )
        )
    return checks


def _mb_cell(value):
    return "n/a" if value is None else f"{value:.1f}"


def memory_table(memories):
    return markdown_table(
        (
            "snapshot of",
            "measured by",
            "weights MB",
            "peak, 1st snapshot",
            "held after it and an epoch",
            "peak, 2nd (replacing)",
            "held after it and an epoch",
            "control epoch",
        ),
        "llrrrrrr",
        (
            (
                memory["implementation"],
                gauge,
                f"{memory['weights_mb']:.1f}",
                *(_mb_cell(values[key]) for key in MEMORY_KEYS),
                _mb_cell(values["control_epoch_mb"]),
            )
            for memory in memories
            for gauge, values in memory["gauges"].items()
        ),
    )


def parse_args(argv=None):
    parser = ArgumentParser(__doc__)
    parser.add_epoch_settings(rounds=(20, 3), steps=(5, 2))
    # Internal: the memory measurement of one implementation, in the fresh
    # process that main() starts for it.
    parser.add_argument(
        "--memory-probe", choices=list(SNAPSHOTS), help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.memory_probe is not None:
        print(json.dumps(memory_probe(args.memory_probe, args.seed)))
        return
    run = Run(
        f"{len(VARIANTS)} variants, {args.rounds} rounds of {args.steps} "
        "steps, then the memory of each snapshot",
        args.quick,
    )
    seconds, shape = time_training(args.steps, args.rounds, args.seed)
    rows = summarize(
        seconds,
        BASELINE,
        {variant.name: variant.twin for variant in VARIANTS},
        extra_ms=True,
    )
    memories = measure_memory(args.seed)
    checks = check_targets(rows, memories)
    run.stop()

    print(
        f"\n### {run.backend}: epoch time ({run.quick_note}{args.rounds} "
        f"rounds x {args.steps} steps of {BATCH_SIZE}; MLP {INPUT_DIM}-"
        f"{'-'.join(map(str, HIDDEN_UNITS))}-{NUM_CLASSES}, "
        f"{shape['parameters']:,} parameters, {shape['weights_mb']:.1f} MB; "
        f"one restore and Keras's two snapshots or our one per epoch; "
        f"median of per-round ratios; {run.stamp})\n"
    )
    print(variant_table(rows, BASELINE))
    print(
        f"\n### {run.backend}: memory of the snapshots (MB over each gauge's "
        "reading after a control epoch; a fresh process per implementation; "
        "approximate)\n"
    )
    print(memory_table(memories))
    run.report(
        checks,
        args.json,
        settings={
            **epoch_settings(args),
            "hidden_units": HIDDEN_UNITS,
            "patience": PATIENCE,
            "seed": args.seed,
        },
        model=shape,
        seconds_per_epoch=seconds,
        summary=rows,
        memory=memories,
    )


if __name__ == "__main__":
    main()
