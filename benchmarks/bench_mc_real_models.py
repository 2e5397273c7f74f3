"""Speed of mc_predict on real models: a KerasHub BERT and MobileNetV3.

What is measured
----------------
`keras_regkit.mc_predict(model, x, samples=30)` against the loop a user
would otherwise write, on two models that come from Keras's own libraries
rather than from this project, both with random weights (no preset or
ImageNet weights are downloaded), for 256 rows of synthetic inputs (numpy,
fixed seed):

- BERT: a tiny KerasHub classifier,
  `keras_hub.models.BertTextClassifier(backbone=keras_hub.models.
  BertBackbone(vocabulary_size=1000, num_layers=2, num_heads=2,
  hidden_dim=64, intermediate_dim=128, max_sequence_length=64),
  num_classes=2, preprocessor=None)`. Its inputs are `{"token_ids": int32
  (256, 64) random ids, "segment_ids": int32 zeros, "padding_mask": int32
  ones}`. It holds eight Keras dropout layers of rate 0.1 (the embeddings',
  two per transformer layer, the attention dropout inside each
  `MultiHeadAttention`, and the classifier's): the first one comes right
  after the embeddings, so almost the whole model is sampled.
- MobileNetV3: `keras.applications.MobileNetV3Small(weights=None,
  input_shape=(64, 64, 3), classes=10, include_preprocessing=False)` on
  inputs drawn uniformly from [-1, 1]. Its only dropout layer (rate 0.2)
  sits in the classification head, after the convolutional trunk and its
  batch normalizations. With random weights and fresh moving statistics its
  activations vanish (logits of about 1e-10, every softmax output 0.1 to
  float32 precision, dropout invisible), so after building, the moving
  statistics of its batch normalizations are set from one forward pass in
  training mode with momentum 0 over 256 other rows of the same kind
  (`calibrate_batch_norm`); its logits then spread by about 0.25. This only
  makes the outputs, and the statistics check, meaningful: the operations
  timed are the same.

The contenders, 30 stochastic predictions each, reduced to a mean and a
standard deviation:

- `keras_regkit.mc_predict(model, x, samples=30)` on the model as Keras
  builds it: mc_predict samples Keras's own dropout layers itself and runs
  everything before the first one (MobileNetV3's trunk) once per row;
- the loop: the same model built a second time, with
  `keras_regkit.layers.convert_dropout(model, mc=True)` applied (every Keras
  `Dropout` becomes a keras_regkit `Dropout` that drops at inference too),
  then 30 calls of `model.predict(x, verbose=0)` and `np.mean` / `np.std`
  over axis 0: once with `predict`'s default batch of 32 rows, once with
  `batch_size=256` (one batch a call, the fair comparison).

`model(x, training=True)` is not a baseline: it would also put batch
normalization in training mode (batch statistics), a different model.

Both copies of a model are built (and calibrated) after
`keras.utils.set_random_seed(seed)`, so their weights are the same; the
script asserts it (after the conversion), checks that the conversion turned
every Keras `Dropout` of the copy into a keras_regkit one, and that two
`predict` calls of the converted copy differ while those of the plain copy
do not.

The statistics check is `bench_dropout.py`'s (its functions are imported):
mc_predict's and the loop's results are independent random draws, so they
are compared statistically. The mean absolute difference of the two means,
divided by the loop's average standard deviation (the "mean gap"), should
be close to `sqrt(2 / pi) * sqrt(2 / 30)`, about 0.21, and may be at most
1.5 times that; the ratio of mc_predict's average standard deviation to the
loop's must be within 10% of 1. The averages run over every output value
(256 rows times 2 classes for BERT, 10 classes for MobileNetV3). The check
runs in every round; the worst round is reported.

Method
------
As in the other benchmarks:

1. For each model in turn, both copies are built, then every contender is
   warmed up once: one `mc_predict` call (its eager or jitted passes at
   every chunk size), one `predict` call at each batch size (which traces
   and compiles `predict`'s step).
2. For `--repeats` rounds, every contender runs once, in an order shuffled
   every round (seeded), so that contenders alternate under the same
   conditions. Each run is timed in process CPU time
   (`time.process_time()`, all threads together, which counts the work done
   rather than the time spent waiting for a CPU another process holds) and
   in wall time (`time.perf_counter()`).
3. Within each round, each loop's time is divided by mc_predict's (the
   speedup). The tables give the median of these ratios over the rounds,
   with the 25th and 75th percentiles, and the median seconds.

Target: mc_predict at least 3x faster (CPU time) than the loop with
`batch_size=256`, on every model and backend.

Usage
-----
The backend is Keras's usual environment variable; run once per backend::

    KERAS_BACKEND=tensorflow python benchmarks/bench_mc_real_models.py
    KERAS_BACKEND=jax python benchmarks/bench_mc_real_models.py --repeats 7
    KERAS_BACKEND=torch python benchmarks/bench_mc_real_models.py --quick

`--quick` makes 1 round (a smoke test of the whole script; the statistics
check still runs). `--models bert` or `--models mobilenet` times one model.
It prints a markdown table per model and which targets are met. With the
defaults (3 rounds) one backend takes about 1.5 minutes on TensorFlow, 2.5
on PyTorch and 3 to 4.5 on JAX on two CPU cores (measured on 2026-12-03:
88-91 s, 129-153 s, 182-258 s), mostly the MobileNetV3 loops (about 27 s a
loop on JAX, whose CPU convolutions are slow). Each round's times go to
stderr: if they vary by more than about 20% from round to round, something
else was competing for the CPU, and the run is best repeated.
"""

import argparse
import gc
import json
import random
import sys
import time
import warnings
from dataclasses import dataclass

import keras
import numpy as np

# The statistics check of the dropout benchmark, and the helpers shared by
# every benchmark, found next to this script (Python puts the script's
# folder on sys.path).
from bench_dropout import (
    MEAN_GAP_FACTOR,
    SAMPLES,
    STD_TOLERANCE,
    compare_statistics,
    expected_mean_gap,
)
from bench_regularizers import (
    print_targets,
    quartiles,
    ratio_cell,
    run_record,
    source_revision,
)

import keras_regkit

ROWS = 256
FAIR_BATCH_SIZE = 256
SPEEDUP_TARGET = 3.0
DEFAULT_REPEATS = 3
QUICK_REPEATS = 1

MC_PREDICT = "mc_predict"
LOOP_DEFAULT = "predict loop, batch 32 (default)"
LOOP_FAIR = f"predict loop, batch {FAIR_BATCH_SIZE}"

BERT_SEQUENCE_LENGTH = 64
BERT_VOCABULARY = 1000
MOBILENET_SHAPE = (64, 64, 3)
MOBILENET_CLASSES = 10


def build_bert():
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=BERT_VOCABULARY,
        num_layers=2,
        num_heads=2,
        hidden_dim=64,
        intermediate_dim=128,
        max_sequence_length=BERT_SEQUENCE_LENGTH,
    )
    return keras_hub.models.BertTextClassifier(
        backbone=backbone, num_classes=2, preprocessor=None
    )


def bert_inputs(rows, seed):
    rng = np.random.default_rng(seed)
    shape = (rows, BERT_SEQUENCE_LENGTH)
    return {
        "token_ids": rng.integers(0, BERT_VOCABULARY, shape, dtype=np.int32),
        "segment_ids": np.zeros(shape, np.int32),
        "padding_mask": np.ones(shape, np.int32),
    }


def build_mobilenet():
    return keras.applications.MobileNetV3Small(
        weights=None,
        input_shape=MOBILENET_SHAPE,
        classes=MOBILENET_CLASSES,
        include_preprocessing=False,
    )


def mobilenet_inputs(rows, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (rows, *MOBILENET_SHAPE)).astype(np.float32)


def calibrate_batch_norm(model, x):
    """Sets every batch normalization's moving statistics from `x`.

    With random weights and fresh moving statistics (mean 0, variance 1),
    MobileNetV3Small's activations shrink layer after layer: its logits are
    about 1e-10, every softmax output is 0.1 to float32 precision, and
    dropout changes nothing visible. One forward pass in training mode with
    momentum 0 stores each layer's batch statistics, computed on inputs
    that the earlier layers already normalized, as its moving statistics:
    the network then passes on activations of a usual size (logits of
    about 0.25 std). The momenta are put back afterwards.
    """
    layers = [
        layer
        for _, layer in keras_regkit.selectors.walk(model)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        model(x, training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


@dataclass(frozen=True)
class RealModel:
    name: str
    build: object  # () -> keras.Model
    inputs: object  # (rows, seed) -> inputs for predict
    # (model, inputs) -> None: readies the random weights, or None
    prepare: object = None


MODELS = {
    "bert": RealModel("BERT (KerasHub, tiny)", build_bert, bert_inputs),
    "mobilenet": RealModel(
        "MobileNetV3Small",
        build_mobilenet,
        mobilenet_inputs,
        calibrate_batch_norm,
    ),
}


def keras_dropout_paths(model):
    """Paths of the Keras `Dropout` layers (not subclasses) in `model`."""
    return [
        path
        for path, layer in keras_regkit.selectors.walk(model)
        if type(layer) is keras.layers.Dropout
    ]


def twin_models(spec, x, seed):
    """The plain model and its converted twin, with the same weights.

    Returns `(plain, converted, converted_paths)`.
    """
    calibration = spec.inputs(len(x), seed + 1)  # other rows than `x`
    models = []
    for _ in range(2):
        keras.utils.set_random_seed(seed)
        model = spec.build()
        if spec.prepare is not None:
            spec.prepare(model, calibration)
        models.append(model)
    plain, converted = models
    expected = keras_dropout_paths(converted)
    with warnings.catch_warnings():
        # KerasHub's layers rebuild their dropouts from their own arguments
        # when loaded, which convert_dropout says; nothing is saved here.
        warnings.filterwarnings(
            "ignore", "These converted layers", category=UserWarning
        )
        paths = keras_regkit.layers.convert_dropout(converted, mc=True)

    plain_weights = plain.get_weights()
    converted_weights = converted.get_weights()
    if len(plain_weights) != len(converted_weights) or not all(
        a.shape == b.shape and np.array_equal(a, b)
        for a, b in zip(plain_weights, converted_weights, strict=True)
    ):
        raise RuntimeError(f"{spec.name}: the two copies' weights differ")
    if not paths or sorted(paths) != sorted(expected):
        raise RuntimeError(
            f"{spec.name}: convert_dropout converted {paths}, "
            f"expected {expected}"
        )
    if keras_dropout_paths(converted):
        raise RuntimeError(f"{spec.name}: Keras Dropout layers left over")

    first, second = (plain.predict(x, verbose=0) for _ in range(2))
    if not np.array_equal(first, second):
        raise RuntimeError(f"{spec.name}: the plain model is not deterministic")
    first, second = (converted.predict(x, verbose=0) for _ in range(2))
    if np.array_equal(first, second):
        raise RuntimeError(f"{spec.name}: the converted model does not drop")
    return plain, converted, paths


def predict_loop(model, x, batch_size):
    """Mean and std over `SAMPLES` calls of `predict`."""
    outputs = np.stack(
        [
            model.predict(x, batch_size=batch_size, verbose=0)
            for _ in range(SAMPLES)
        ]
    )
    return outputs.mean(axis=0), outputs.std(axis=0)


def contenders(plain, converted):
    """{name: function of x returning (mean, std)}, mc_predict first."""
    return {
        MC_PREDICT: lambda x: keras_regkit.mc_predict(plain, x, SAMPLES),
        LOOP_DEFAULT: lambda x: predict_loop(converted, x, None),
        LOOP_FAIR: lambda x: predict_loop(converted, x, FAIR_BATCH_SIZE),
    }


def time_model(spec, rows, repeats, seed):
    """Per-round seconds and statistics checks of every contender."""
    x = spec.inputs(rows, seed)
    plain, converted, paths = twin_models(spec, x, seed)
    methods = contenders(plain, converted)

    started = time.perf_counter()
    methods[MC_PREDICT](x)
    warm_up = {MC_PREDICT: time.perf_counter() - started}
    for name, batch_size in (
        (LOOP_DEFAULT, None),
        (LOOP_FAIR, FAIR_BATCH_SIZE),
    ):
        started = time.perf_counter()
        converted.predict(x, batch_size=batch_size, verbose=0)
        warm_up[name] = time.perf_counter() - started

    order = list(methods)
    shuffler = random.Random(seed)
    cpu = {name: [] for name in methods}
    wall = {name: [] for name in methods}
    statistics = {name: [] for name in methods if name != MC_PREDICT}
    for round_index in range(repeats):
        shuffler.shuffle(order)
        results = {}
        for name in order:
            gc.collect()
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            results[name] = methods[name](x)
            cpu[name].append(time.process_time() - cpu_start)
            wall[name].append(time.perf_counter() - wall_start)
        for name in statistics:
            statistics[name].append(
                compare_statistics(results[name], results[MC_PREDICT])
            )
        print(
            f"  {spec.name}, round {round_index + 1}/{repeats}: "
            + ", ".join(f"{name} {cpu[name][-1]:.2f} s" for name in methods),
            file=sys.stderr,
            flush=True,
        )
    return {
        "model": spec.name,
        "rows": rows,
        "converted_layers": paths,
        "parameters": plain.count_params(),
        "warm_up_wall_s": warm_up,
        "cpu_s": cpu,
        "wall_s": wall,
        "statistics": statistics,
    }


def summarize(result):
    """One row per contender: medians, speedups and worst statistics."""
    cpu_reference = np.asarray(result["cpu_s"][MC_PREDICT])
    wall_reference = np.asarray(result["wall_s"][MC_PREDICT])
    rows = []
    for name in result["cpu_s"]:
        cpu = np.asarray(result["cpu_s"][name])
        wall = np.asarray(result["wall_s"][name])
        row = {
            "method": name,
            "median_cpu_s": float(np.median(cpu)),
            "median_wall_s": float(np.median(wall)),
            "speedup_cpu": None,
            "speedup_wall": None,
            "worst_mean_gap": None,
            "worst_std_ratio": None,
        }
        if name != MC_PREDICT:
            row["speedup_cpu"] = quartiles(cpu / cpu_reference)
            row["speedup_wall"] = quartiles(wall / wall_reference)
            checks = result["statistics"][name]
            row["worst_mean_gap"] = max(c["mean_gap"] for c in checks)
            row["worst_std_ratio"] = max(
                (c["std_ratio"] for c in checks), key=lambda r: abs(r - 1)
            )
        rows.append(row)
    return rows


def check_targets(results):
    """The targets as (description, measured, met) triples."""
    checks = []
    gap_limit = MEAN_GAP_FACTOR * expected_mean_gap()
    for result in results:
        by_method = {row["method"]: row for row in result["summary"]}
        speedup = by_method[LOOP_FAIR]["speedup_cpu"][1]
        checks.append(
            (
                f"{result['model']}: mc_predict speedup vs {LOOP_FAIR} >= "
                f"{SPEEDUP_TARGET:.0f}x (CPU time)",
                f"{speedup:.2f}x",
                speedup >= SPEEDUP_TARGET,
            )
        )
        for name in (LOOP_DEFAULT, LOOP_FAIR):
            gap = by_method[name]["worst_mean_gap"]
            ratio = by_method[name]["worst_std_ratio"]
            checks.append(
                (
                    f"{result['model']}: mc_predict statistics equal "
                    f"{name}'s: mean gap <= {gap_limit:.2f} std, std ratio "
                    f"within {STD_TOLERANCE:.0%}",
                    f"{gap:.3f} std, {ratio:.3f}",
                    gap <= gap_limit and abs(ratio - 1) <= STD_TOLERANCE,
                )
            )
    return checks


def markdown_table(summary):
    lines = [
        f"| method | CPU s / {SAMPLES} samples | wall s "
        "| speedup of mc_predict, CPU (p25-p75) | speedup, wall "
        "| worst mean gap (std) | worst std ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary:
        gap, ratio = row["worst_mean_gap"], row["worst_std_ratio"]
        wall = row["speedup_wall"]
        lines.append(
            f"| {row['method']} | {row['median_cpu_s']:.3f} "
            f"| {row['median_wall_s']:.3f} "
            f"| {ratio_cell(row['speedup_cpu'])} "
            f"| {'' if wall is None else f'{wall[1]:.2f}x'} "
            f"| {'' if gap is None else f'{gap:.3f}'} "
            f"| {'' if ratio is None else f'{ratio:.3f}'} |"
        )
    return "\n".join(lines)


def _keras_hub_version():
    import keras_hub

    return keras_hub.__version__


def parse_models(text):
    names = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [name for name in names if name not in MODELS]
    if not names or unknown or len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(
            f"expected distinct names among {', '.join(MODELS)}, got {text!r}"
        )
    return names


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="The backend is chosen with the KERAS_BACKEND variable.",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed rounds of every contender per model (default: "
        f"{DEFAULT_REPEATS}, {QUICK_REPEATS} with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_REPEATS} rounds: a smoke test of the whole script",
    )
    parser.add_argument(
        "--models",
        type=parse_models,
        default=list(MODELS),
        metavar="NAME[,NAME...]",
        help=f"models to time (default: {','.join(MODELS)})",
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=ROWS,
        help="rows of inputs (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="data, weights and order seed"
    )
    parser.add_argument(
        "--json", metavar="PATH", help="also write the results to PATH"
    )
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else DEFAULT_REPEATS
    for option in ("repeats", "rows"):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    backend = keras.backend.backend()
    revision = source_revision()
    print(
        f"Backend {backend}: {', '.join(args.models)}, {args.repeats} rounds "
        f"of {SAMPLES} samples of {args.rows} rows; keras_regkit at "
        f"{revision}",
        file=sys.stderr,
        flush=True,
    )
    started = time.perf_counter()
    results = []
    for name in args.models:
        result = time_model(MODELS[name], args.rows, args.repeats, args.seed)
        result["summary"] = summarize(result)
        results.append(result)
    checks = check_targets(results)
    elapsed = time.perf_counter() - started

    for result in results:
        print(
            f"\n### {backend}: {result['model']} ({result['parameters']:,} "
            f"parameters, {len(result['converted_layers'])} dropout layers; "
            f"{args.repeats} rounds of {SAMPLES} samples of {result['rows']} "
            f"rows; speedup = loop time / mc_predict time, median of "
            f"per-round ratios; mean gap about {expected_mean_gap():.2f} "
            f"expected; keras_regkit {keras_regkit.__version__} at "
            f"{revision})\n"
        )
        print(markdown_table(result["summary"]))
    print()
    print_targets(checks)
    print(f"\n({elapsed:.0f} s)", file=sys.stderr)

    if args.json:
        record = {
            **run_record(backend, revision, checks),
            "settings": {
                "repeats": args.repeats,
                "rows": args.rows,
                "samples": SAMPLES,
                "fair_batch_size": FAIR_BATCH_SIZE,
                "seed": args.seed,
            },
            "keras_hub": _keras_hub_version(),
            "models": results,
            "elapsed_s": elapsed,
        }
        with open(args.json, "w") as file:
            json.dump(record, file, indent=2)


if __name__ == "__main__":
    main()
