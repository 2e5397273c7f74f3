"""Tests for keras_regkit.callbacks.RegularizationMonitor.

Every logged number is checked against numpy, computed from the weights the
model had at the end of that epoch, and read from `fit(...).history`: the
logs dict the callback fills is the one `History` records.
"""

import copy
import csv
import pathlib

import keras
import numpy as np
import pytest

from keras_regkit import L1, L2, ElasticNet, penalties
from keras_regkit.callbacks import RegularizationMonitor


def _numpy(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype="float64")


class _Snapshot(keras.callbacks.Callback):
    """Copies every weight, by path, at the end of every epoch."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append({w.path: _numpy(w) for w in self.model.weights})


def _sequence_model():
    """Embedding -> LSTM -> nested Sequential head, penalties on each."""
    inputs = keras.Input((6,), dtype="int32")
    hidden = keras.layers.Embedding(
        10, 3, embeddings_regularizer=L2(0.02), name="embed"
    )(inputs)
    hidden = keras.layers.LSTM(
        2,
        kernel_regularizer=L1(0.01),
        recurrent_regularizer=L2(0.03),
        name="lstm",
    )(hidden)
    head = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(
                1,
                kernel_regularizer=ElasticNet(0.01, 0.02),
                bias_regularizer=L2(0.5),
                bias_initializer="ones",
                name="out",
            ),
        ],
        name="head",
    )
    model = keras.Model(inputs, head(hidden))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def _sequence_data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 10, size=(32, 6)).astype("int32")
    y = rng.normal(size=(32, 1)).astype("float32")
    return x, y


def _dense_model(*penalised, frozen=()):
    """Input(4) -> Dense(3, name) for each name; Dense(1, "out") last."""
    layers = [keras.Input((4,))]
    for name in ("a", "b", "c"):
        layers.append(
            keras.layers.Dense(
                3,
                kernel_regularizer=L2(0.1) if name in penalised else None,
                name=name,
            )
        )
    layers.append(keras.layers.Dense(1, name="out"))
    model = keras.Sequential(layers)
    for name in frozen:
        model.get_layer(name).trainable = False
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


def _fit(model, callbacks, epochs=2, x=None, y=None, **kwargs):
    if x is None:
        rng = np.random.default_rng(1)
        x = rng.normal(size=(16, 4)).astype("float32")
        y = rng.normal(size=(16, 1)).astype("float32")
    return model.fit(
        x,
        y,
        batch_size=8,
        epochs=epochs,
        verbose=0,
        callbacks=callbacks,
        **kwargs,
    )


def _norm(w):
    return float(np.sqrt(np.sum(w**2)))


def test_every_number_matches_numpy_at_the_end_of_every_epoch():
    model = _sequence_model()
    snapshot = _Snapshot()
    x, y = _sequence_data()
    history = _fit(
        model, [RegularizationMonitor(), snapshot], epochs=2, x=x, y=y
    )
    logged = history.history
    assert set(logged) == {
        "loss",
        "penalty",
        "penalty/embed",
        "penalty/lstm/lstm_cell",
        "penalty/head/out",
        "kernel_norm/embed",
        "kernel_norm/lstm/lstm_cell/kernel",
        "kernel_norm/lstm/lstm_cell/recurrent_kernel",
        "kernel_norm/head/out",
        "zero_fraction/embed",
        "zero_fraction/lstm/lstm_cell/kernel",
        "zero_fraction/lstm/lstm_cell/recurrent_kernel",
        "zero_fraction/head/out",
    }
    for epoch, weights in enumerate(snapshot.epochs):
        embed = weights["embed/embeddings"]
        kernel = weights["lstm/lstm_cell/kernel"]
        recurrent = weights["lstm/lstm_cell/recurrent_kernel"]
        out, bias = weights["head/out/kernel"], weights["head/out/bias"]
        expected = {
            "penalty/embed": 0.02 * np.sum(embed**2),
            "penalty/lstm/lstm_cell": 0.01 * np.sum(np.abs(kernel))
            + 0.03 * np.sum(recurrent**2),
            "penalty/head/out": 0.01 * np.sum(np.abs(out))
            + 0.02 * np.sum(out**2)
            + 0.5 * np.sum(bias**2),
            "kernel_norm/embed": _norm(embed),
            "kernel_norm/lstm/lstm_cell/kernel": _norm(kernel),
            "kernel_norm/lstm/lstm_cell/recurrent_kernel": _norm(recurrent),
            "kernel_norm/head/out": _norm(out),
        }
        expected["penalty"] = sum(
            value for key, value in expected.items() if "penalty/" in key
        )
        for key, value in expected.items():
            assert logged[key][epoch] == pytest.approx(value, rel=1e-5), key
        assert logged["zero_fraction/embed"][epoch] == 0.0
    # The last epoch's numbers are those of the weights `fit` leaves (on
    # JAX, fit's state was written back before the callback read it).
    assert logged["kernel_norm/embed"][-1] == pytest.approx(
        _norm(_numpy(model.get_layer("embed").embeddings)), rel=1e-6
    )
    found = penalties(model)
    assert logged["penalty"][-1] == pytest.approx(
        sum(sum(weights.values()) for weights in found.values()), rel=1e-6
    )
    for path, weights in found.items():
        assert logged[f"penalty/{path}"][-1] == pytest.approx(
            sum(weights.values()), rel=1e-6
        )


def test_penalty_is_what_keras_adds_to_the_loss():
    # Frozen weights carry a penalty Keras leaves out, and so does the log;
    # their kernel is still reported.
    model = _dense_model("a", "b", frozen=("b",))
    history = _fit(model, [RegularizationMonitor()], epochs=1)
    logged = history.history
    keras_total = sum(
        float(keras.ops.convert_to_numpy(loss)) for loss in model.losses
    )
    assert logged["penalty"] == [pytest.approx(keras_total, rel=1e-6)]
    assert "penalty/a" in logged and "penalty/b" not in logged
    assert logged["kernel_norm/b"] == [
        pytest.approx(_norm(_numpy(model.get_layer("b").kernel)), rel=1e-6)
    ]


def test_without_penalties_the_total_is_zero():
    history = _fit(_dense_model(), [RegularizationMonitor()], epochs=1)
    assert history.history["penalty"] == [0.0]
    assert not [key for key in history.history if key.startswith("penalty/")]
    assert {key for key in history.history if "kernel_norm" in key} == {
        "kernel_norm/a",
        "kernel_norm/b",
        "kernel_norm/c",
        "kernel_norm/out",
    }


@pytest.mark.parametrize("zero_tol", [0.0, 0.1, 0.25])
def test_zero_fraction_counts_entries_within_the_tolerance(zero_tol):
    model = _dense_model()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    kernel = np.array(
        [
            [0.0, 0.05, -0.1],
            [0.2, -0.25, 0.3],
            [0.0, -0.0, 1.0],
            [-0.099, 0.5, 2.0],
        ],
        "float32",
    )
    model.get_layer("a").kernel.assign(kernel)
    history = _fit(model, [RegularizationMonitor(zero_tol=zero_tol)], 1)
    expected = np.mean(np.abs(kernel) <= np.float32(zero_tol))
    assert history.history["zero_fraction/a"] == [pytest.approx(expected)]
    assert history.history["kernel_norm/a"] == [
        pytest.approx(_norm(kernel.astype("float64")), rel=1e-6)
    ]


@pytest.mark.parametrize(
    "selector, expected",
    [
        ("a", ["a"]),
        (["a", "c*"], ["a", "c"]),
        (keras.layers.Dense, ["a", "b", "c", "out"]),
        (lambda layer: layer.name == "out", ["out"]),
    ],
    ids=["name", "list", "class", "predicate"],
)
def test_layers_chooses_the_kernels_but_not_the_penalties(selector, expected):
    model = _dense_model("a", "b")
    history = _fit(model, [RegularizationMonitor(layers=selector)], epochs=1)
    norms = sorted(
        key.split("/", 1)[1] for key in history.history if "kernel_norm" in key
    )
    assert norms == expected
    assert "penalty/a" in history.history and "penalty/b" in history.history


def test_a_selector_matching_no_layer_fails_naming_the_layers():
    model = _dense_model()
    with pytest.raises(
        ValueError,
        match=r"selector 'dense' \(argument `layers`\) matches no layer of "
        r"model .*Layers available: 'a', 'b', 'c', 'out'",
    ):
        _fit(model, [RegularizationMonitor(layers="dense")], epochs=1)


def test_a_selector_matching_only_layers_without_kernel_fails():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dropout(0.1, name="drop"),
            keras.layers.Dense(1, name="out"),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(
        ValueError, match=r"matches no layer with a kernel.*kernels: 'out'$"
    ):
        _fit(model, [RegularizationMonitor(layers="drop")], epochs=1)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"zero_tol": -0.1}, ValueError, r"zero_tol=-0\.1$"),
        ({"zero_tol": float("nan")}, ValueError, "zero_tol=nan"),
        ({"zero_tol": float("inf")}, ValueError, "zero_tol=inf"),
        ({"zero_tol": True}, TypeError, "zero_tol=True"),
        ({"zero_tol": "0"}, TypeError, "zero_tol='0'"),
        ({"layers": 3}, TypeError, "layers=3"),
        ({"layers": []}, ValueError, r"non-empty list.*layers=\[\]"),
        ({"log_dir": 3}, TypeError, r"folder path\. Received: log_dir=3$"),
        ({"histogram_freq": 0}, ValueError, "histogram_freq=0$"),
        ({"histogram_freq": 1.5}, TypeError, r"histogram_freq=1\.5$"),
    ],
)
def test_arguments_are_checked_when_built(kwargs, error, match):
    with pytest.raises(
        error, match=r"Invalid value received for argument `\w+`\..*" + match
    ):
        RegularizationMonitor(**kwargs)


def test_reuse_across_fit_calls_and_deep_copies():
    monitor = RegularizationMonitor(layers="a", zero_tol=0.5)
    first = _dense_model("a")
    copied_before = copy.deepcopy(monitor)
    _fit(first, [monitor], epochs=1)
    copied_after = copy.deepcopy(monitor)
    assert copied_after.layers == "a" and copied_after.zero_tol == 0.5
    assert copied_after.model is None  # the model is not copied along
    second = _dense_model("b")
    for callback in (monitor, copied_before, copied_after):
        history = _fit(second, [callback], epochs=1)
        assert {key for key in history.history if "/" in key} == {
            "penalty/b",
            "kernel_norm/a",
            "zero_fraction/a",
        }
        assert history.history["kernel_norm/a"] == [
            pytest.approx(_norm(_numpy(second.get_layer("a").kernel)), rel=1e-6)
        ]


def test_csv_logger_after_the_monitor_records_its_keys(tmp_path):
    path = tmp_path / "log.csv"
    model = _dense_model("a")
    _fit(
        model,
        [RegularizationMonitor(layers="a"), keras.callbacks.CSVLogger(path)],
        epochs=2,
    )
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2
    assert {"penalty", "penalty/a", "kernel_norm/a"} <= set(rows[0])
    assert float(rows[-1]["kernel_norm/a"]) == pytest.approx(
        _norm(_numpy(model.get_layer("a").kernel)), rel=1e-6
    )


def test_values_outside_fit():
    model = _dense_model("a", "c")
    monitor = RegularizationMonitor(layers="c")
    monitor.set_model(model)
    values = monitor.values()
    found = penalties(model)
    assert values["penalty/a"] == pytest.approx(found["a"]["kernel"])
    assert values["penalty"] == pytest.approx(
        found["a"]["kernel"] + found["c"]["kernel"]
    )
    assert values["kernel_norm/c"] == pytest.approx(
        _norm(_numpy(model.get_layer("c").kernel)), rel=1e-6
    )


def test_head_norms_of_attention_kernels_under_group_lasso_heads():
    from keras_regkit import GroupLasso, regularize

    tokens = keras.Input((4, 8))
    attention = keras.layers.MultiHeadAttention(2, 4, name="attention")
    model = keras.Model(tokens, attention(tokens, tokens))
    regularize(model, kernel=GroupLasso(0.1, heads=2))
    monitor = RegularizationMonitor()
    monitor.set_model(model)
    values = monitor.values()
    for name, head_axis in [("query", 1), ("key", 1), ("attention_output", 0)]:
        kernel = keras.ops.convert_to_numpy(
            getattr(attention, f"{name.split('_')[-1]}_dense").kernel
        )
        heads = np.moveaxis(kernel, head_axis, 0).reshape(2, -1)
        expected = np.sqrt((heads**2).sum(axis=1))
        found = [values[f"head_norm/attention/{name}/{h}"] for h in (0, 1)]
        np.testing.assert_allclose(found, expected, rtol=1e-5)
    assert not any(key.startswith("head_norm/") for key in _plain_keys())


def _plain_keys():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.get_layer(index=0).kernel.regularizer = L2(0.1)
    monitor = RegularizationMonitor()
    monitor.set_model(model)
    return monitor.values()


def _events(folder):
    """`{tag: {step: array}}` of the TensorBoard event files in `folder`."""
    import tensorflow as tf

    found = {}
    for path in sorted(pathlib.Path(folder).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor)
                found.setdefault(value.tag, {})[event.step] = array
    return found


def test_tensorboard_records_every_logged_number_as_a_scalar(tmp_path):
    model = _dense_model("a", "c")
    board = keras.callbacks.TensorBoard(tmp_path, write_graph=False)
    history = _fit(model, [RegularizationMonitor(), board], epochs=3)
    events = _events(tmp_path / "train")
    logged = [key for key in history.history if key != "loss"]
    assert {"penalty", "penalty/a", "kernel_norm/c", "zero_fraction/out"} <= (
        set(logged)
    )
    for key in logged:
        steps = events[f"epoch_{key}"]
        assert sorted(steps) == [0, 1, 2]
        np.testing.assert_allclose(
            [float(steps[step]) for step in range(3)],
            history.history[key],
            rtol=1e-6,
        )


def test_log_dir_writes_kernel_histograms_and_sparsity(tmp_path):
    model = _dense_model()
    kernel = _numpy(model.get_layer("a").kernel)
    kernel[0] = 0.0  # 3 of its 12 entries
    model.get_layer("a").kernel.assign(kernel)
    snapshots = _Snapshot()
    monitor = RegularizationMonitor(
        layers=["a", "out"], log_dir=tmp_path, histogram_freq=2
    )
    board = keras.callbacks.TensorBoard(tmp_path, write_graph=False)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 4)).astype("float32")
    x[:, 0] = 0.0  # no gradient reaches the zeroed row: it stays zero
    y = rng.normal(size=(16, 1)).astype("float32")
    _fit(model, [monitor, board, snapshots], epochs=4, x=x, y=y)
    events = _events(tmp_path / "train")
    assert {"weights/a", "weights/out", "sparsity/a", "epoch_penalty"} <= set(
        events
    )
    for key in ("a", "out"):
        path = model.get_layer(key).kernel.path
        assert sorted(events[f"weights/{key}"]) == [1, 3]  # epochs 2 and 4
        for step in (1, 3):
            weights = snapshots.epochs[step][path]
            # TensorBoard's histogram: rows of (left edge, right edge, count)
            buckets = events[f"weights/{key}"][step]
            assert buckets[:, 2].sum() == weights.size
            assert buckets[0, 0] == pytest.approx(weights.min(), abs=1e-6)
            assert buckets[-1, 1] == pytest.approx(weights.max(), abs=1e-6)
            assert float(events[f"sparsity/{key}"][step]) == pytest.approx(
                np.mean(weights == 0.0)
            )
    assert float(events["sparsity/a"][3]) == 0.25
    assert float(events["sparsity/out"][3]) == 0.0


def test_write_histograms_outside_fit_and_without_log_dir(tmp_path):
    model = _dense_model()
    monitor = RegularizationMonitor(layers="b", log_dir=tmp_path / "run")
    monitor.set_model(model)
    monitor.write_histograms(step=7)
    events = _events(tmp_path / "run" / "train")
    assert sorted(events) == ["sparsity/b", "weights/b"]
    assert list(events["weights/b"]) == [7]
    plain = RegularizationMonitor()
    plain.set_model(model)
    with pytest.raises(ValueError, match=r"needs a `log_dir`"):
        plain.write_histograms(step=0)
