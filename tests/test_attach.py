"""Tests for keras_regkit._attach: `regularize` and `penalties`.

Penalties are compared with numpy references computed from the weights, and
every model is tiny so that the file runs in seconds on each backend.
"""

import contextlib
import json
import warnings

import keras
import numpy as np
import pytest
from serialization import assert_loads_in_fresh_process

from keras_regkit import L1, L2, GroupLasso, penalties, regularize, selectors


def _l1(c):
    return lambda w: c * np.sum(np.abs(w))


def _l2(c):
    return lambda w: c * np.sum(np.square(w))


def _numpy(variable):
    return keras.ops.convert_to_numpy(variable)


def _layer(model, path):
    return dict(selectors.walk(model))[path]


def _losses_sum(model):
    return sum(float(_numpy(loss)) for loss in model.losses)


def _weights(model):
    return [np.array(w, copy=True) for w in model.get_weights()]


def _assert_penalties(found, expected):
    """`penalties()` output equals `expected`, keys in order, up to rounding."""
    assert list(found) == list(expected)
    for path, weights in expected.items():
        assert list(found[path]) == list(weights), path
        for name, value in weights.items():
            assert isinstance(found[path][name], float)
            np.testing.assert_allclose(found[path][name], value, rtol=1e-6)


def _config_text(model):
    return json.dumps(keras.saving.serialize_keras_object(model))


def _dense(units, name):
    # Non-zero biases, so that a bias penalty is not trivially 0.
    return keras.layers.Dense(
        units, bias_initializer="glorot_uniform", name=name
    )


def _mlp():
    return keras.Sequential(
        [
            keras.Input((3,)),
            _dense(4, "dense_in"),
            _dense(4, "dense_hidden"),
            _dense(1, "dense_out"),
        ],
        name="mlp",
    )


MLP_LAYERS = ("dense_in", "dense_hidden", "dense_out")


def _sequential():
    return _mlp()


def _functional():
    inputs = keras.Input((3,))
    hidden = _dense(4, "dense_in")(inputs)
    hidden = _dense(4, "dense_hidden")(hidden)
    outputs = _dense(1, "dense_out")(hidden)
    return keras.Model(inputs, outputs, name="functional")


class _Block(keras.layers.Layer):
    """A custom layer that owns a Dense layer."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = _dense(4, "dense_hidden")

    def call(self, inputs):
        return self.dense(inputs)


class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense_in = _dense(4, "dense_in")
        self.block = _Block(name="block")
        self.dense_out = _dense(1, "dense_out")

    def call(self, inputs):
        return self.dense_out(self.block(self.dense_in(inputs)))


def _subclassed():
    model = _Subclassed(name="subclassed")
    model(np.zeros((1, 3), "float32"))
    return model


def _sequential_in_functional():
    encoder = keras.Sequential(
        [
            keras.Input((3,)),
            _dense(4, "dense_in"),
            _dense(4, "dense_hidden"),
        ],
        name="encoder",
    )
    inputs = keras.Input((3,))
    outputs = _dense(1, "dense_out")(encoder(inputs))
    return keras.Model(inputs, outputs, name="outer")


def _functional_in_sequential():
    inputs = keras.Input((3,))
    hidden = _dense(4, "dense_in")(inputs)
    hidden = _dense(4, "dense_hidden")(hidden)
    encoder = keras.Model(inputs, hidden, name="encoder")
    return keras.Sequential(
        [keras.Input((3,)), encoder, _dense(1, "dense_out")],
        name="outer",
    )


# builder, paths of its three Dense layers (in, hidden, out)
MODEL_KINDS = {
    "sequential": (_sequential, MLP_LAYERS),
    "functional": (_functional, MLP_LAYERS),
    "subclassed": (
        _subclassed,
        ("dense_in", "block/dense_hidden", "dense_out"),
    ),
    "sequential_in_functional": (
        _sequential_in_functional,
        ("encoder/dense_in", "encoder/dense_hidden", "dense_out"),
    ),
    "functional_in_sequential": (
        _functional_in_sequential,
        ("encoder/dense_in", "encoder/dense_hidden", "dense_out"),
    ),
}


def _unsaved_warning_if(condition):
    """A subclassed model builds its layers itself: Keras saves no penalty."""
    if condition:
        return pytest.warns(UserWarning, match="will not be saved")
    return contextlib.nullcontext()


# --- what `regularize` changes ------------------------------------------


def test_returns_the_model_and_keeps_weights_bit_identical():
    model = _mlp()
    before = _weights(model)
    assert regularize(model, kernel=L2(0.5), bias=L1(0.5)) is model
    after = _weights(model)
    assert len(after) == len(before) == 6
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(new, old)


def test_kernel_penalty_matches_numpy_and_leaves_biases_alone():
    model = _mlp()
    regularize(model, kernel=L2(0.3))
    expected = {
        name: {"kernel": _l2(0.3)(_numpy(model.get_layer(name).kernel))}
        for name in MLP_LAYERS
    }
    found = penalties(model)
    assert list(found) == list(MLP_LAYERS)
    for name in MLP_LAYERS:
        layer = model.get_layer(name)
        assert layer.kernel_regularizer == L2(0.3)
        assert layer.kernel.regularizer == L2(0.3)
        assert layer.bias_regularizer is None
        assert layer.bias.regularizer is None
        assert list(found[name]) == ["kernel"]
        np.testing.assert_allclose(
            found[name]["kernel"], expected[name]["kernel"], rtol=1e-6
        )
    assert len(model.losses) == 3
    np.testing.assert_allclose(
        _losses_sum(model),
        sum(v["kernel"] for v in expected.values()),
        rtol=1e-6,
    )


def test_bias_penalty_only_when_asked_and_kernels_unchanged():
    model = _mlp()
    regularize(model, kernel=L2(0.1))
    regularize(model, bias=L1(0.7))
    found = penalties(model)
    for name in MLP_LAYERS:
        layer = model.get_layer(name)
        # The earlier kernel penalty is left as it was.
        assert layer.kernel.regularizer == L2(0.1)
        assert layer.bias.regularizer == L1(0.7)
        np.testing.assert_allclose(
            found[name]["bias"], _l1(0.7)(_numpy(layer.bias)), rtol=1e-6
        )
    assert len(model.losses) == 6


@pytest.mark.parametrize(
    "identifier, expected",
    [
        (L1(0.2), L1(0.2)),
        ("l2", L2()),
        ({"class_name": "l1", "config": {"l1": 0.4}}, L1(0.4)),
        (keras.saving.serialize_keras_object(L2(0.6)), L2(0.6)),
    ],
    ids=["instance", "name", "short_config", "saved_config"],
)
def test_penalty_identifiers_are_resolved(identifier, expected):
    model = _mlp()
    regularize(model, kernel=identifier, layers="dense_out")
    layer = model.get_layer("dense_out")
    assert layer.kernel_regularizer == expected
    assert layer.kernel.regularizer == expected
    assert model.get_layer("dense_in").kernel.regularizer is None


def test_keras_regularizer_instance_is_accepted():
    model = _mlp()
    regularize(model, kernel=keras.regularizers.L2(0.25), layers="dense_in")
    kernel = _numpy(model.get_layer("dense_in").kernel)
    np.testing.assert_allclose(
        penalties(model)["dense_in"]["kernel"], _l2(0.25)(kernel), rtol=1e-6
    )


def _conv_mlp():
    return keras.Sequential(
        [
            keras.Input((6, 2)),
            keras.layers.Conv1D(2, 3, name="conv"),
            keras.layers.Flatten(name="flatten"),
            _dense(4, "dense_in"),
            _dense(1, "dense_out"),
        ]
    )


@pytest.mark.parametrize(
    "selector, expected",
    [
        ("dense_in", ["dense_in"]),
        ("dense_*", ["dense_in", "dense_out"]),
        ("*_out", ["dense_out"]),
        (keras.layers.Conv1D, ["conv"]),
        (keras.layers.Dense, ["dense_in", "dense_out"]),
        (lambda layer: layer.name.endswith("_in"), ["dense_in"]),
        (["conv", "dense_out"], ["conv", "dense_out"]),
        ((keras.layers.Conv1D, "dense_in"), ["conv", "dense_in"]),
        (None, ["conv", "dense_in", "dense_out"]),
    ],
    ids=[
        "name",
        "glob",
        "glob_suffix",
        "class",
        "class_two",
        "predicate",
        "list",
        "tuple",
        "everything",
    ],
)
def test_layers_selector(selector, expected):
    model = _conv_mlp()
    regularize(model, kernel=L1(0.1), layers=selector)
    assert list(penalties(model)) == expected
    for path, layer in selectors.walk(model):
        wanted = L1(0.1) if path in expected else None
        if path != "flatten":
            assert layer.kernel.regularizer == wanted, path


def test_rules_first_matching_rule_wins():
    model = _mlp()
    regularize(model, rules={"dense_in": L1(0.5), "*": L2(0.25)})
    found = penalties(model)
    for name in MLP_LAYERS:
        layer = model.get_layer(name)
        kernel = _numpy(layer.kernel)
        if name == "dense_in":
            assert layer.kernel_regularizer == L1(0.5)
            reference = _l1(0.5)(kernel)
        else:
            assert layer.kernel_regularizer == L2(0.25)
            reference = _l2(0.25)(kernel)
        assert layer.kernel.regularizer == layer.kernel_regularizer
        np.testing.assert_allclose(found[name]["kernel"], reference, rtol=1e-6)
        assert layer.bias.regularizer is None


def test_rules_in_the_other_order_give_other_penalties():
    model = _mlp()
    regularize(model, rules={"dense_out": L2(0.2), "dense_*": L1(0.3)})
    assert model.get_layer("dense_out").kernel.regularizer == L2(0.2)
    assert model.get_layer("dense_in").kernel.regularizer == L1(0.3)
    assert model.get_layer("dense_hidden").kernel.regularizer == L1(0.3)


def test_rule_value_may_be_a_dict_of_roles():
    model = _mlp()
    regularize(
        model,
        rules={
            "dense_out": {"kernel": L1(0.1), "bias": L2(0.2)},
            keras.layers.Dense: {"bias": L1(0.3)},
        },
    )
    out = model.get_layer("dense_out")
    assert out.kernel.regularizer == L1(0.1)
    assert out.bias.regularizer == L2(0.2)
    for name in ("dense_in", "dense_hidden"):
        layer = model.get_layer(name)
        assert layer.kernel.regularizer is None
        assert layer.bias.regularizer == L1(0.3)
    expected = {
        name: {"bias": _l1(0.3)(_numpy(model.get_layer(name).bias))}
        for name in ("dense_in", "dense_hidden")
    }
    expected["dense_out"] = {
        "kernel": _l1(0.1)(_numpy(out.kernel)),
        "bias": _l2(0.2)(_numpy(out.bias)),
    }
    _assert_penalties(penalties(model), expected)


def test_rules_changing_a_penalty_replaces_it():
    model = _mlp()
    regularize(model, kernel=L2(0.1))
    regularize(model, rules={"dense_hidden": L1(2.0)})
    assert model.get_layer("dense_hidden").kernel.regularizer == L1(2.0)
    assert model.get_layer("dense_in").kernel.regularizer == L2(0.1)
    assert len(model.losses) == 3


# --- recurrent, embedding and convolution kernels ------------------------


def _recurrent_model():
    return keras.Sequential(
        [
            keras.Input((5, 2)),
            keras.layers.Bidirectional(
                keras.layers.LSTM(2, return_sequences=True, name="lstm"),
                name="bidirectional",
            ),
            keras.layers.GRU(2, name="gru"),
            keras.layers.Dense(1, name="dense"),
        ]
    )


RECURRENT_CELLS = (
    "bidirectional/forward_lstm/lstm_cell",
    "bidirectional/backward_lstm/lstm_cell",
    "gru/gru_cell",
)


def test_recurrent_kernels_get_their_own_penalty():
    model = _recurrent_model()
    regularize(model, recurrent=L2(0.4))
    found = penalties(model)
    assert list(found) == list(RECURRENT_CELLS)
    for path in RECURRENT_CELLS:
        cell = _layer(model, path)
        assert list(found[path]) == ["recurrent_kernel"]
        np.testing.assert_allclose(
            found[path]["recurrent_kernel"],
            _l2(0.4)(_numpy(cell.recurrent_kernel)),
            rtol=1e-6,
        )
        assert cell.kernel.regularizer is None
    np.testing.assert_allclose(
        _losses_sum(model),
        sum(v["recurrent_kernel"] for v in found.values()),
        rtol=1e-6,
    )
    # The saved configs carry it, the Bidirectional's both directions too.
    config = model.get_layer("bidirectional").get_config()
    for key in ("layer", "backward_layer"):
        saved = config[key]["config"]["recurrent_regularizer"]
        assert saved["config"] == {"l2": 0.4}
    assert model.get_layer("gru").recurrent_regularizer == L2(0.4)


def test_kernel_covers_rnn_input_kernels_but_not_recurrent_ones():
    model = _recurrent_model()
    regularize(model, kernel=L1(0.1))
    found = penalties(model)
    assert list(found) == [*RECURRENT_CELLS, "dense"]
    assert all(list(weights) == ["kernel"] for weights in found.values())


def test_embeddings_are_left_alone_unless_asked():
    model = keras.Sequential(
        [
            keras.Input((4,), dtype="int32"),
            keras.layers.Embedding(10, 3, name="embedding"),
            keras.layers.GlobalAveragePooling1D(name="pool"),
            keras.layers.Dense(1, name="dense"),
        ]
    )
    regularize(model, kernel=L2(0.1))
    assert list(penalties(model)) == ["dense"]
    regularize(model, embeddings=L1(0.2))
    embedding = model.get_layer("embedding")
    assert embedding.embeddings_regularizer == L1(0.2)
    np.testing.assert_allclose(
        penalties(model)["embedding"]["embeddings"],
        _l1(0.2)(_numpy(embedding.embeddings)),
        rtol=1e-6,
    )
    assert model.get_layer("dense").kernel.regularizer == L2(0.1)


def _convolutions():
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.SeparableConv2D(2, 3, name="separable"),
            keras.layers.DepthwiseConv2D(3, name="depthwise"),
            keras.layers.Conv2D(1, 1, name="conv"),
        ]
    )


def test_kernel_covers_depthwise_and_pointwise_kernels():
    model = _convolutions()
    regularize(model, kernel=L1(0.3))
    separable = model.get_layer("separable")
    depthwise = model.get_layer("depthwise")
    conv = model.get_layer("conv")
    expected = {
        "separable": {
            "depthwise_kernel": _l1(0.3)(_numpy(separable.depthwise_kernel)),
            "pointwise_kernel": _l1(0.3)(_numpy(separable.pointwise_kernel)),
        },
        # DepthwiseConv2D names its depthwise kernel "kernel".
        "depthwise": {"kernel": _l1(0.3)(_numpy(depthwise.kernel))},
        "conv": {"kernel": _l1(0.3)(_numpy(conv.kernel))},
    }
    _assert_penalties(penalties(model), expected)
    assert separable.depthwise_regularizer == L1(0.3)
    assert separable.pointwise_regularizer == L1(0.3)
    assert depthwise.depthwise_regularizer == L1(0.3)
    np.testing.assert_allclose(
        _losses_sum(model),
        sum(sum(v.values()) for v in expected.values()),
        rtol=1e-6,
    )


def test_depthwise_and_pointwise_given_separately_override_kernel():
    model = _convolutions()
    regularize(model, kernel=L1(0.3), depthwise=L2(0.5))
    separable = model.get_layer("separable")
    depthwise = model.get_layer("depthwise")
    assert separable.depthwise_kernel.regularizer == L2(0.5)
    assert separable.pointwise_kernel.regularizer == L1(0.3)
    assert depthwise.kernel.regularizer == L2(0.5)
    assert model.get_layer("conv").kernel.regularizer == L1(0.3)
    regularize(model, pointwise=L2(0.7))
    assert separable.pointwise_kernel.regularizer == L2(0.7)
    assert separable.depthwise_kernel.regularizer == L2(0.5)
    _assert_penalties(
        penalties(model),
        {
            "separable": {
                "depthwise_kernel": _l2(0.5)(
                    _numpy(separable.depthwise_kernel)
                ),
                "pointwise_kernel": _l2(0.7)(
                    _numpy(separable.pointwise_kernel)
                ),
            },
            "depthwise": {"kernel": _l2(0.5)(_numpy(depthwise.kernel))},
            "conv": {
                "kernel": _l1(0.3)(_numpy(model.get_layer("conv").kernel))
            },
        },
    )


def test_kernel_alone_on_separable_convolutions_is_not_an_error():
    model = _convolutions()
    regularize(model, kernel=L2(0.1), layers=["separable", "depthwise"])
    assert list(penalties(model)) == ["separable", "depthwise"]
    assert model.get_layer("conv").kernel.regularizer is None


# --- model kinds, compiled models -------------------------------------


@pytest.mark.parametrize("kind", list(MODEL_KINDS))
def test_model_kinds(kind):
    build, paths = MODEL_KINDS[kind]
    model = build()
    before = _weights(model)
    with _unsaved_warning_if(kind == "subclassed"):
        regularize(
            model,
            rules={
                paths[0]: L1(0.5),
                "*": {"kernel": L2(0.25), "bias": L1(0.1)},
            },
        )
    found = penalties(model)
    assert list(found) == list(paths)
    first = _layer(model, paths[0])
    _assert_penalties(
        {paths[0]: found[paths[0]]},
        {paths[0]: {"kernel": _l1(0.5)(_numpy(first.kernel))}},
    )
    for path in paths[1:]:
        layer = _layer(model, path)
        _assert_penalties(
            {path: found[path]},
            {
                path: {
                    "kernel": _l2(0.25)(_numpy(layer.kernel)),
                    "bias": _l1(0.1)(_numpy(layer.bias)),
                }
            },
        )
    np.testing.assert_allclose(
        _losses_sum(model),
        sum(sum(v.values()) for v in found.values()),
        rtol=1e-6,
    )
    for old, new in zip(before, _weights(model), strict=True):
        np.testing.assert_array_equal(new, old)


def test_unbuilt_model_gets_the_penalty_when_built():
    model = keras.Sequential(
        [
            _dense(4, "dense_in"),
            _dense(1, "dense_out"),
        ]
    )
    assert not model.built
    regularize(model, rules={"dense_in": L1(0.5), "*": L2(0.25)})
    assert model.get_layer("dense_in").kernel_regularizer == L1(0.5)
    model.build((None, 3))
    dense_in, dense_out = (
        model.get_layer("dense_in"),
        model.get_layer("dense_out"),
    )
    _assert_penalties(
        penalties(model),
        {
            "dense_in": {"kernel": _l1(0.5)(_numpy(dense_in.kernel))},
            "dense_out": {"kernel": _l2(0.25)(_numpy(dense_out.kernel))},
        },
    )
    assert len(model.losses) == 2


@pytest.mark.parametrize(
    "kind", ["sequential", "sequential_in_functional", "subclassed"]
)
def test_penalty_counts_in_the_next_evaluate_and_fit(kind):
    build, paths = MODEL_KINDS[kind]
    model = build()
    learning_rate, strength = 0.1, 2.0
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    # Zero inputs: the data loss gives the first kernel no gradient, so
    # only a penalty can move it.
    x = np.zeros((4, 3), "float32")
    y = np.ones((4, 1), "float32")
    first = _layer(model, paths[0])
    kernel = _numpy(first.kernel).copy()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    np.testing.assert_array_equal(_numpy(first.kernel), kernel)
    loss_before = model.evaluate(x, y, batch_size=4, verbose=0)

    with _unsaved_warning_if(kind == "subclassed"):
        regularize(model, kernel=L2(strength), layers=paths[0])
    loss_after = model.evaluate(x, y, batch_size=4, verbose=0)
    np.testing.assert_allclose(
        loss_after - loss_before, _l2(strength)(kernel), rtol=1e-5
    )
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    # One SGD step on strength * sum(w**2): w <- w - lr * 2 * strength * w.
    np.testing.assert_allclose(
        _numpy(first.kernel),
        kernel * (1.0 - 2.0 * learning_rate * strength),
        rtol=1e-5,
        atol=1e-7,
    )


def test_none_removes_a_penalty_from_losses_and_config(tmp_path):
    model = _sequential_in_functional()
    regularize(model, kernel=L2(0.5), bias=L1(0.5))
    model.compile(optimizer="sgd", loss="mse")
    x = np.linspace(-1.0, 1.0, 12, dtype="float32").reshape(4, 3)
    y = np.ones((4, 1), "float32")
    with_penalty = model.evaluate(x, y, batch_size=4, verbose=0)
    expected = _losses_sum(model)
    assert "keras_regkit" in _config_text(model)

    regularize(model, kernel=None, bias=None)
    without = model.evaluate(x, y, batch_size=4, verbose=0)
    np.testing.assert_allclose(with_penalty - without, expected, rtol=1e-5)
    assert model.losses == []
    assert penalties(model) == {}
    assert "keras_regkit" not in _config_text(model)
    path = str(tmp_path / "model.keras")
    model.save(path)
    assert keras.saving.load_model(path).losses == []


def test_removing_one_penalty_keeps_the_others():
    model = _mlp()
    regularize(model, kernel=L2(0.5))
    regularize(model, kernel=None, layers="dense_hidden")
    assert list(penalties(model)) == ["dense_in", "dense_out"]
    assert model.get_layer("dense_hidden").kernel_regularizer is None
    assert len(model.losses) == 2


def test_penalty_is_in_the_saved_config():
    model = _functional_in_sequential()
    regularize(model, rules={"dense_in": L1(0.5), "*": L2(0.25)})
    rebuilt = keras.Sequential.from_config(model.get_config())
    for path, layer in selectors.walk(rebuilt):
        if path == "encoder":
            continue
        expected = L1(0.5) if path.endswith("dense_in") else L2(0.25)
        assert layer.kernel_regularizer == expected, path


@pytest.mark.slow
def test_penalties_survive_a_keras_save_and_load(tmp_path):
    model = _sequential_in_functional()
    regularize(
        model,
        rules={
            "encoder/dense_in": {"kernel": L1(0.5), "bias": L2(0.3)},
            "*": L2(0.25),
        },
    )
    x = np.linspace(-1.0, 1.0, 6, dtype="float32").reshape(2, 3)
    assert len(model.losses) == 4
    assert_loads_in_fresh_process(model, x, tmp_path)


# --- frozen weights ------------------------------------------------------


def test_frozen_weights_warn_and_stay_out_of_losses():
    model = _mlp()
    model.get_layer("dense_in").trainable = False
    with pytest.warns(UserWarning, match=r"frozen.*mlp/dense_in/kernel") as w:
        regularize(model, kernel=L2(0.5))
    assert len(w) == 1
    assert w[0].filename == __file__  # points at the caller
    # The penalty is set (and saved), but Keras does not count it.
    assert model.get_layer("dense_in").kernel.regularizer == L2(0.5)
    assert list(penalties(model)) == ["dense_hidden", "dense_out"]
    assert len(model.losses) == 2


def test_removing_a_penalty_from_frozen_weights_does_not_warn():
    model = _mlp()
    regularize(model, kernel=L2(0.5))
    model.get_layer("dense_in").trainable = False
    # filterwarnings=error turns any warning into a failure here.
    regularize(model, kernel=None)
    assert model.get_layer("dense_in").kernel.regularizer is None


# --- penalties ----------------------------------------------------------


def test_penalties_is_empty_without_penalties():
    assert penalties(_mlp()) == {}


def test_penalties_nested_paths_match_losses():
    model = _sequential_in_functional()
    regularize(model, rules={"encoder": L1(0.2), "*": L2(0.3)})
    regularize(model, bias=L2(0.1), layers="dense_in")
    dense_in = _layer(model, "encoder/dense_in")
    hidden = _layer(model, "encoder/dense_hidden")
    out = model.get_layer("dense_out")
    expected = {
        "encoder/dense_in": {
            "kernel": _l1(0.2)(_numpy(dense_in.kernel)),
            "bias": _l2(0.1)(_numpy(dense_in.bias)),
        },
        "encoder/dense_hidden": {"kernel": _l1(0.2)(_numpy(hidden.kernel))},
        "dense_out": {"kernel": _l2(0.3)(_numpy(out.kernel))},
    }
    found = penalties(model)
    _assert_penalties(found, expected)
    np.testing.assert_allclose(
        _losses_sum(model),
        sum(sum(v.values()) for v in found.values()),
        rtol=1e-6,
    )


def test_penalties_of_a_single_layer():
    layer = keras.layers.Dense(
        2, kernel_initializer="ones", kernel_regularizer=L1(0.5), name="d"
    )
    layer.build((3,))
    assert penalties(layer) == {"d": {"kernel": 3.0}}


def test_penalties_credits_a_shared_layer_once():
    shared = keras.layers.Dense(3, name="shared")
    inputs = keras.Input((3,))
    outputs = shared(shared(inputs))
    model = keras.Model(inputs, outputs)
    regularize(model, kernel=L1(0.5))
    kernel = _numpy(shared.kernel)
    _assert_penalties(
        penalties(model), {"shared": {"kernel": _l1(0.5)(kernel)}}
    )
    assert len(model.losses) == 1


def _head_norms(kernel, head_axis):
    """numpy reference: the L2 norm of each head's slice of `kernel`."""
    moved = np.moveaxis(kernel, head_axis, 0)
    return np.sqrt((moved.reshape(moved.shape[0], -1) ** 2).sum(axis=1))


def test_penalties_head_norms_match_numpy_per_attention_projection():
    inputs = keras.Input((5, 6))
    attention = keras.layers.MultiHeadAttention(
        num_heads=3, key_dim=4, name="attention"
    )
    outputs = keras.layers.Dense(2, name="dense")(attention(inputs, inputs))
    model = keras.Model(inputs, outputs)
    regularize(
        model, rules={"attention": GroupLasso(0.1, heads=3), "*": L2(0.2)}
    )
    value = attention.value_dense.kernel
    switched_off = _numpy(value).copy()
    switched_off[:, 1, :] = 0.0  # head 1 of the value projection
    value.assign(switched_off)

    found = penalties(model, head_norms=True)

    for path, projection, head_axis in [
        ("attention/query", attention.query_dense, 1),
        ("attention/key", attention.key_dense, 1),
        ("attention/value", attention.value_dense, 1),
        ("attention/attention_output", attention.output_dense, 0),
    ]:
        kernel = _numpy(projection.kernel)
        entry = found[path]["kernel"]
        expected = _head_norms(kernel, head_axis)
        np.testing.assert_allclose(entry["head_norms"], expected, rtol=1e-6)
        np.testing.assert_allclose(
            entry["penalty"],
            0.1 * np.sqrt(kernel.size / 3) * expected.sum(),
            rtol=1e-5,
        )
    assert found["attention/value"]["kernel"]["head_norms"][1] == 0.0
    # Weights without head groups keep only their penalty.
    dense = found["dense"]["kernel"]
    assert set(dense) == {"penalty"}
    np.testing.assert_allclose(
        dense["penalty"],
        _l2(0.2)(_numpy(model.get_layer("dense").kernel)),
        rtol=1e-6,
    )
    # The same penalties as without head norms.
    plain = penalties(model)
    assert {
        p: {w: e["penalty"] for w, e in ws.items()} for p, ws in found.items()
    } == plain


def test_penalties_head_norms_must_be_a_bool():
    with pytest.raises(
        TypeError,
        match="head_norms must be True or False"
        r".*head_norms='yes'",
    ):
        penalties(_mlp(), head_norms="yes")


# --- errors --------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"kernel": L2(), "layers": "nope*"},
            r"'nope\*' \(argument `layers`\) matches no layer\. Layers "
            r"available: 'dense_in', 'dense_hidden', 'dense_out'",
        ),
        (
            {"rules": {"dense_in": L1(), "decoder": L2()}},
            r"'decoder' \(argument `rules`\) matches no layer\. Layers "
            r"available: 'dense_in', 'dense_hidden', 'dense_out'",
        ),
        (
            {"rules": {"dense_*": L1(), "dense_in": L2()}},
            r"'dense_in' \(argument `rules`\) matches only layers that an "
            r"earlier rule already chooses",
        ),
        (
            {"kernel": L2(), "layers": lambda layer: False},
            r"matches no layer",
        ),
        ({"recurrent": L2()}, r"kind 'recurrent'\. Layers available"),
        ({"embeddings": L2()}, r"kind 'embeddings'"),
        ({"depthwise": L2(), "pointwise": L1()}, r"'depthwise', 'pointwise'"),
        ({"rules": {"*": {"recurrent": L2()}}}, r"kind 'recurrent'"),
        ({"rules": {"*": L2()}, "kernel": L1()}, r"either `rules`"),
        ({"rules": {"*": L2()}, "layers": "dense_in"}, r"either `rules`"),
        ({}, r"Nothing to change"),
        ({"layers": "dense_in"}, r"Nothing to change"),
        ({"kernel": L2(), "layers": []}, r"argument `layers`.*non-empty"),
        ({"kernel": "l3"}, r"argument `kernel`.*Unknown regularizer name"),
        ({"bias": "l3"}, r"argument `bias`.*'l1', 'l2'"),
        (
            {"rules": {"*": {"kernal": L2()}}},
            r"argument `rules\['\*'\]`.*roles .*'kernel'.*kernal",
        ),
        ({"rules": {"*": {}}}, r"argument `rules\['\*'\]`"),
        ({"rules": {}}, r"argument `rules`.*at least one rule"),
        (
            {"rules": {"*": {"kernel": "l3"}}},
            r"argument `rules\['\*'\]\['kernel'\]`.*'l3'",
        ),
    ],
)
def test_value_errors(kwargs, match):
    model = _mlp()
    with pytest.raises(ValueError, match=match):
        regularize(model, **kwargs)
    assert model.losses == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kernel": 3}, r"^Invalid value .* `kernel`\. Expected .* kernel=3$"),
        ({"bias": object()}, r"argument `bias`"),
        ({"recurrent": L2}, r"argument `recurrent`"),
        ({"kernel": L2(), "layers": 3}, r"argument `layers`.*layers=3"),
        ({"kernel": L2(), "layers": int}, r"argument `layers`"),
        ({"kernel": L2(), "layers": ["dense_in", 3.0]}, r"argument `layers`"),
        ({"rules": {3: L2()}}, r"argument `rules`.*rules=3"),
        ({"rules": [("*", L2())]}, r"argument `rules`.*dict"),
        ({"rules": {"*": 3}}, r"argument `rules\['\*'\]`"),
    ],
)
def test_type_errors(kwargs, match):
    model = _mlp()
    with pytest.raises(TypeError, match=match):
        regularize(model, **kwargs)
    assert model.losses == []


def test_a_layer_instance_is_not_a_selector():
    model = _mlp()
    with pytest.raises(TypeError, match=r"argument `layers`.*dense_in"):
        regularize(model, kernel=L2(), layers=model.get_layer("dense_in"))


@pytest.mark.parametrize("function", [regularize, penalties])
def test_model_must_be_a_layer(function):
    with pytest.raises(TypeError, match=r"argument `model`.*type list"):
        function([keras.layers.Dense(1)])


def test_missing_bias_weight_is_an_error():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, use_bias=False, name="d")]
    )
    with pytest.raises(ValueError, match=r"kind 'bias'.*Layers available: 'd'"):
        regularize(model, bias=L1())
    assert model.get_layer("d").bias_regularizer is None


def test_an_error_leaves_the_model_unchanged():
    model = _mlp()
    model.compile(optimizer="sgd", loss="mse")
    config = _config_text(model)
    with pytest.raises(ValueError, match=r"kind 'recurrent'"):
        regularize(model, kernel=L2(0.5), recurrent=L2(0.5))
    assert model.losses == []
    assert _config_text(model) == config
    assert model.get_layer("dense_in").kernel_regularizer is None


# --- what model.save() keeps ---------------------------------------------


def _attention_model():
    tokens = keras.Input((4, 8))
    attention = keras.layers.MultiHeadAttention(2, 4, name="attention")
    outputs = keras.layers.Dense(1, name="head")(attention(tokens, tokens))
    return keras.Model(tokens, outputs)


def test_attention_projection_penalties_are_saved_in_the_attention_config():
    model = _attention_model()
    regularize(model, kernel=L2(1e-3), bias=L1(1e-2))
    assert len(model.losses) == 10  # 4 kernels and 4 biases, and the head
    config = model.get_layer("attention").get_config()
    assert config["kernel_regularizer"]["config"] == {"l2": 1e-3}
    assert config["bias_regularizer"]["config"] == {"l1": 1e-2}
    rebuilt = keras.Model.from_config(model.get_config())
    rebuilt.set_weights(model.get_weights())
    assert penalties(rebuilt) == penalties(model)


def test_attention_projections_with_different_penalties_warn():
    model = _attention_model()
    with pytest.warns(UserWarning, match=r"on 4 layers.*attention/query"):
        regularize(model, rules={"*query*": L1(1e-3), "*": L2(1e-3)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        regularize(model, kernel=L2(1e-3))  # one penalty again: saved


def test_layers_built_from_arguments_warn_once_naming_them():
    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = keras.layers.Dense(3, name="inner")

        def call(self, x):
            return self.inner(x)

    inputs = keras.Input((3,))
    model = keras.Model(
        inputs, keras.layers.Dense(1, name="head")(Block(name="block")(inputs))
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        regularize(model, kernel=L2(1e-3))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1
    assert "on 1 layers" in messages[0] and "block/inner" in messages[0]
    assert "PenaltyPlan" in messages[0] and "head" not in messages[0]
