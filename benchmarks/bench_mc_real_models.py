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

The statistics check is `bench_dropout.py`'s (both take it from
`_harness.py`):
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

`--quick` makes 1 round of 64 rows (a smoke test of the whole script, under
40 s on TensorFlow; the statistics check still runs, its numbers mean
nothing). `--models bert` or `--models mobilenet` times one model.
It prints a markdown table per model and which targets are met. With the
defaults (3 rounds) one backend takes about 1.5 minutes on TensorFlow, 2.5
on PyTorch and 3 to 4.5 on JAX on two CPU cores (measured on 2026-12-03:
88-91 s, 129-153 s, 182-258 s), mostly the MobileNetV3 loops (about 27 s a
loop on JAX, whose CPU convolutions are slow). Each round's times go to
stderr: if they vary by more than about 20% from round to round, something
else was competing for the CPU, and the run is best repeated.
"""

import argparse
import os
import sys
import warnings
from dataclasses import dataclass

# The harness shared by every benchmark lies next to this script.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras
import numpy as np
from _harness import (
    LOOP_DEFAULT,
    MC_PREDICT,
    SAMPLES,
    ArgumentParser,
    Run,
    cell,
    expected_mean_gap,
    interleaved_rounds,
    loop_name,
    markdown_table,
    mc_contenders,
    ratio_cell,
    ratios,
    round_statistics,
    speedup_check,
    statistics_check,
    warm_up_mc,
    worst_statistics,
)

import keras_regkit

ROWS = 256
QUICK_ROWS = 64
FAIR_BATCH_SIZE = 256
DEFAULT_REPEATS = 3
QUICK_REPEATS = 1

LOOP_FAIR = loop_name(FAIR_BATCH_SIZE)

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


def time_model(spec, rows, repeats, seed):
    """Per-round seconds and statistics checks of every contender."""
    x = spec.inputs(rows, seed)
    plain, converted, paths = twin_models(spec, x, seed)
    # mc_predict on the plain model, the loops on the converted one.
    methods = mc_contenders(plain, converted, x, FAIR_BATCH_SIZE)
    warm_up = warm_up_mc(plain, converted, x, FAIR_BATCH_SIZE)
    measured = interleaved_rounds(
        methods,
        repeats,
        seed,
        warm_up=False,
        label=f"{spec.name}, ",
        progress=lambda measured: ", ".join(
            f"{name} {measured.cpu[name][-1]:.2f} s" for name in methods
        ),
    )
    return {
        "model": spec.name,
        "rows": rows,
        "converted_layers": paths,
        "parameters": plain.count_params(),
        "warm_up_wall_s": warm_up,
        "cpu_s": measured.cpu,
        "wall_s": measured.wall,
        "statistics": round_statistics(measured.results),
    }


def summarize(result):
    """One row per contender: medians, speedups and worst statistics."""
    rows = []
    for name, cpu in result["cpu_s"].items():
        wall = result["wall_s"][name]
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
            row["speedup_cpu"] = ratios(cpu, result["cpu_s"][MC_PREDICT])
            row["speedup_wall"] = ratios(wall, result["wall_s"][MC_PREDICT])
            row.update(worst_statistics(result["statistics"][name]))
        rows.append(row)
    return rows


def check_targets(results):
    """The targets as (description, measured, met) triples."""
    checks = []
    for result in results:
        by_method = {row["method"]: row for row in result["summary"]}
        before = f"{result['model']}: "
        checks.append(
            speedup_check(
                by_method[LOOP_FAIR]["speedup_cpu"][1],
                LOOP_FAIR,
                before=before,
                after=" (CPU time)",
            )
        )
        for name in (LOOP_DEFAULT, LOOP_FAIR):
            checks.append(
                statistics_check(by_method[name], name, before=before)
            )
    return checks


def _median_cell(values):
    return "" if values is None else f"{values[1]:.2f}x"


def model_table(summary):
    return markdown_table(
        (
            "method",
            f"CPU s / {SAMPLES} samples",
            "wall s",
            "speedup of mc_predict, CPU (p25-p75)",
            "speedup, wall",
            "worst mean gap (std)",
            "worst std ratio",
        ),
        "lrrrrrr",
        (
            (
                row["method"],
                f"{row['median_cpu_s']:.3f}",
                f"{row['median_wall_s']:.3f}",
                ratio_cell(row["speedup_cpu"]),
                _median_cell(row["speedup_wall"]),
                cell(row["worst_mean_gap"]),
                cell(row["worst_std_ratio"]),
            )
            for row in summary
        ),
    )


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
    parser = ArgumentParser(
        __doc__,
        quick_help=f"{QUICK_REPEATS} round of {QUICK_ROWS} rows: a smoke "
        "test of the whole script",
    )
    parser.add_setting(
        "--repeats",
        default=DEFAULT_REPEATS,
        quick=QUICK_REPEATS,
        help="timed rounds of every contender per model",
    )
    parser.add_argument(
        "--models",
        type=parse_models,
        default=list(MODELS),
        metavar="NAME[,NAME...]",
        help=f"models to time (default: {','.join(MODELS)})",
    )
    parser.add_setting(
        "--rows", default=ROWS, quick=QUICK_ROWS, help="rows of inputs"
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    run = Run(
        f"{', '.join(args.models)}, {args.repeats} rounds of {SAMPLES} "
        f"samples of {args.rows} rows",
        args.quick,
    )
    results = []
    for name in args.models:
        result = time_model(MODELS[name], args.rows, args.repeats, args.seed)
        result["summary"] = summarize(result)
        results.append(result)
    checks = check_targets(results)
    run.stop()

    for result in results:
        print(
            f"\n### {run.backend}: {result['model']} ({run.quick_note}"
            f"{result['parameters']:,} parameters, "
            f"{len(result['converted_layers'])} dropout layers; "
            f"{args.repeats} rounds of {SAMPLES} samples of {result['rows']} "
            f"rows; speedup = loop time / mc_predict time, median of "
            f"per-round ratios; mean gap about {expected_mean_gap():.2f} "
            f"expected; {run.stamp})\n"
        )
        print(model_table(result["summary"]))
    run.report(
        checks,
        args.json,
        settings={
            "repeats": args.repeats,
            "rows": args.rows,
            "samples": SAMPLES,
            "fair_batch_size": FAIR_BATCH_SIZE,
            "seed": args.seed,
        },
        keras_hub=_keras_hub_version(),
        models=results,
    )


if __name__ == "__main__":
    main()
