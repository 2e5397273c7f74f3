"""Tests for keras_regkit.selectors: `walk`, `select`, `first_match`."""

import keras
import numpy as np
import pytest

from keras_regkit import selectors


def _paths(pairs):
    return [pair[0] for pair in pairs]


def _nested():
    """A Functional model holding a Sequential `encoder` and a Dense head."""
    encoder = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, name="dense"),
            keras.layers.Dropout(0.1, name="dropout"),
            keras.layers.Dense(4, name="dense_2"),
        ],
        name="encoder",
    )
    inputs = keras.Input((3,), name="features")
    hidden = encoder(inputs)
    outputs = keras.layers.Dense(1, name="head")(hidden)
    return keras.Model(inputs, outputs, name="outer")


NESTED_PATHS = [
    "encoder",
    "encoder/dense",
    "encoder/dropout",
    "encoder/dense_2",
    "head",
]


class _MyDense(keras.layers.Dense):
    pass


class _Block(keras.layers.Layer):
    """A custom layer holding sublayers directly, in a list and in a dict."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = keras.layers.Dense(2, name="first")
        self.stack = [keras.layers.Dense(2, name="stacked")]
        self.heads = {"a": _MyDense(2, name="head_a")}

    def call(self, inputs):
        x = self.stack[0](self.first(inputs))
        return self.heads["a"](x)


class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.block = _Block(name="block")
        self.out = keras.layers.Dense(1, name="out")

    def call(self, inputs):
        return self.out(self.block(inputs))


# --- walk ---------------------------------------------------------------


def test_walk_nested_functional_and_sequential():
    model = _nested()
    pairs = selectors.walk(model)
    assert _paths(pairs) == NESTED_PATHS
    # The path names the very layer object.
    assert dict(pairs)["encoder/dense_2"] is (
        model.get_layer("encoder").get_layer("dense_2")
    )


def test_walk_functional_inside_sequential():
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2, name="dense")(inputs)
    inner = keras.Model(inputs, outputs, name="inner")
    model = keras.Sequential(
        [keras.Input((3,)), inner, keras.layers.Dense(1, name="dense_out")]
    )
    assert _paths(selectors.walk(model)) == [
        "inner",
        "inner/dense",
        "dense_out",
    ]


def test_walk_leaves_out_input_layers_and_the_model_itself():
    model = _nested()
    layers = [layer for _, layer in selectors.walk(model)]
    assert model not in layers
    assert not any(isinstance(x, keras.layers.InputLayer) for x in layers)


def test_walk_rnn_cells():
    model = keras.Sequential(
        [
            keras.Input((4, 2)),
            keras.layers.LSTM(2, return_sequences=True, name="lstm"),
            keras.layers.SimpleRNN(2, name="rnn"),
        ]
    )
    pairs = selectors.walk(model)
    assert _paths(pairs) == [
        "lstm",
        "lstm/lstm_cell",
        "rnn",
        "rnn/simple_rnn_cell",
    ]
    assert dict(pairs)["lstm/lstm_cell"] is model.get_layer("lstm").cell


def test_walk_bidirectional():
    model = keras.Sequential(
        [
            keras.Input((4, 2)),
            keras.layers.Bidirectional(
                keras.layers.GRU(2, name="gru"), name="bidirectional"
            ),
        ]
    )
    pairs = dict(selectors.walk(model))
    assert list(pairs) == [
        "bidirectional",
        "bidirectional/forward_gru",
        "bidirectional/forward_gru/gru_cell",
        "bidirectional/backward_gru",
        "bidirectional/backward_gru/gru_cell",
    ]
    wrapper = model.get_layer("bidirectional")
    assert pairs["bidirectional/backward_gru"] is wrapper.backward_layer


def test_walk_shared_layer_appears_once():
    shared = keras.layers.Dense(3, name="shared")
    inputs = keras.Input((3,))
    branch = keras.Sequential([keras.Input((3,)), shared], name="branch")
    outputs = keras.layers.Add(name="add")([shared(inputs), branch(inputs)])
    model = keras.Model(inputs, outputs)
    paths = _paths(selectors.walk(model))
    assert paths == ["shared", "branch", "add"]


def test_walk_subclassed_model_and_custom_layer():
    model = _Subclassed()
    model(np.zeros((1, 3), "float32"))
    assert _paths(selectors.walk(model)) == [
        "block",
        "block/first",
        "block/stacked",
        "block/head_a",
        "out",
    ]


@pytest.mark.parametrize(
    "make_layer, expected",
    [
        (lambda: keras.layers.Dense(2, name="solo"), ["solo"]),
        (
            lambda: keras.layers.LSTM(2, name="solo"),
            ["solo", "solo/lstm_cell"],
        ),
    ],
    ids=["dense", "lstm"],
)
def test_walk_a_layer_lists_the_layer_itself(make_layer, expected):
    assert _paths(selectors.walk(make_layer())) == expected


def test_walk_an_unbuilt_sequential():
    model = keras.Sequential(
        [keras.layers.Dense(2, name="a"), keras.layers.Dense(1, name="b")]
    )
    assert _paths(selectors.walk(model)) == ["a", "b"]


# --- select ---------------------------------------------------------------


@pytest.mark.parametrize(
    "selector, expected",
    [
        ("head", ["head"]),
        ("dense", ["encoder/dense"]),
        ("dense*", ["encoder/dense", "encoder/dense_2"]),
        ("encoder/dense_?", ["encoder/dense_2"]),
        ("*/drop*", ["encoder/dropout"]),
        (keras.layers.Dropout, ["encoder/dropout"]),
        (keras.layers.Dense, ["encoder/dense", "encoder/dense_2", "head"]),
        (lambda layer: layer.name.endswith("_2"), ["encoder/dense_2"]),
        (["head", keras.layers.Dropout], ["encoder/dropout", "head"]),
        (("dense_2", "head"), ["encoder/dense_2", "head"]),
        ("decoder*", []),
        (lambda layer: False, []),
    ],
    ids=[
        "name",
        "name_of_nested_layer",
        "glob",
        "path_glob",
        "path_glob_prefix",
        "class",
        "class_many",
        "predicate",
        "list",
        "tuple",
        "nothing",
        "predicate_nothing",
    ],
)
def test_select(selector, expected):
    assert _paths(selectors.select(_nested(), selector)) == expected


def test_select_a_class_picks_subclasses():
    model = _Subclassed()
    model(np.zeros((1, 3), "float32"))
    assert _paths(selectors.select(model, _MyDense)) == ["block/head_a"]
    assert _paths(selectors.select(model, keras.layers.Dense)) == [
        "block/first",
        "block/stacked",
        "block/head_a",
        "out",
    ]


@pytest.mark.parametrize(
    "selector",
    ["encoder", keras.Sequential, lambda layer: layer.name == "encoder"],
    ids=["name", "class", "predicate"],
)
def test_a_container_match_selects_everything_inside(selector):
    assert _paths(selectors.select(_nested(), selector)) == NESTED_PATHS[:4]


def test_selecting_a_wrapper_selects_its_cells():
    model = keras.Sequential(
        [
            keras.Input((4, 2)),
            keras.layers.Bidirectional(
                keras.layers.LSTM(2, name="lstm"), name="bidirectional"
            ),
            keras.layers.Dense(1, name="dense"),
        ]
    )
    expected = [
        "bidirectional",
        "bidirectional/forward_lstm",
        "bidirectional/forward_lstm/lstm_cell",
        "bidirectional/backward_lstm",
        "bidirectional/backward_lstm/lstm_cell",
    ]
    by_class = selectors.select(model, keras.layers.Bidirectional)
    assert _paths(by_class) == expected
    assert _paths(selectors.select(model, "forward_*")) == expected[1:3]
    assert _paths(selectors.select(model, "*lstm_cell")) == [
        expected[2],
        expected[4],
    ]


def test_predicate_sees_layers_and_its_result_is_used_as_a_bool():
    seen = []

    def predicate(layer):
        seen.append(layer)
        return 1 if layer.name == "head" else 0

    assert _paths(selectors.select(_nested(), predicate)) == ["head"]
    assert all(isinstance(layer, keras.layers.Layer) for layer in seen)
    assert [layer.name for layer in seen][:2] == ["encoder", "dense"]


# --- first_match ----------------------------------------------------------


def _shared_encoders():
    """Two encoders, `enc1` and `enc2`, that share one Dense, `shared`."""
    shared = keras.layers.Dense(4, name="shared")

    def encoder(name):
        inputs = keras.Input((4,))
        own = keras.layers.Dense(4, name=f"{name}_own")(inputs)
        return keras.Model(inputs, shared(own), name=name)

    enc1, enc2 = encoder("enc1"), encoder("enc2")
    inputs = keras.Input((4,))
    outputs = keras.layers.Add(name="add")([enc1(inputs), enc2(inputs)])
    return keras.Model(inputs, outputs), shared


def test_a_shared_layer_is_listed_once_and_matched_by_every_path():
    model, shared = _shared_encoders()
    assert _paths(selectors.walk(model)) == [
        "enc1",
        "enc1/enc1_own",
        "enc1/shared",
        "enc2",
        "enc2/enc2_own",
        "add",
    ]
    # Reached through enc2 too: selecting enc2 selects it, listed once
    # under its first path.
    for selector in ("enc2", "enc2/shared", ["add", "enc2/*"]):
        chosen = selectors.select(model, selector)
        assert [layer for _, layer in chosen].count(shared) == 1, selector
        assert ("enc1/shared", shared) in chosen, selector
    assert _paths(selectors.select(model, "enc2")) == [
        "enc1/shared",
        "enc2",
        "enc2/enc2_own",
    ]
    assert selectors.select(model, "enc1/enc2_own") == []


def test_first_match_takes_the_first_selector_on_any_path():
    model, _ = _shared_encoders()
    matched = selectors._first_match(["enc2", "*"], model)
    assert [(path, index) for path, _, index in matched] == [
        ("enc1", 1),
        ("enc1/enc1_own", 1),
        ("enc1/shared", 0),  # through enc2
        ("enc2", 0),
        ("enc2/enc2_own", 0),
        ("add", 1),
    ]


def test_a_layer_holding_a_reference_to_its_parent_is_walked_once():
    class Parent(keras.layers.Layer):
        def __init__(self):
            super().__init__(name="parent")
            self.child = keras.layers.Dense(2, name="child")
            self.child.owner = self  # a reference back up

    assert _paths(selectors.walk(Parent())) == ["parent", "parent/child"]


def test_first_match_gives_each_layer_the_first_selector_that_picks_it():
    matched = selectors._first_match(["head", "dense*", "*"], _nested())
    assert [(path, index) for path, _, index in matched] == [
        ("encoder", 2),
        ("encoder/dense", 1),
        ("encoder/dropout", 2),
        ("encoder/dense_2", 1),
        ("head", 0),
    ]


def test_first_match_counts_enclosing_layers():
    # "encoder" is listed first, so it wins for everything inside it, even
    # where a later selector names the layer itself.
    matched = selectors._first_match(["encoder", "dense"], _nested())
    assert [(path, index) for path, _, index in matched] == [
        ("encoder", 0),
        ("encoder/dense", 0),
        ("encoder/dropout", 0),
        ("encoder/dense_2", 0),
    ]


def test_first_match_leaves_out_layers_no_selector_picks():
    matched = selectors._first_match([keras.layers.Dropout], _nested())
    assert [(path, index) for path, _, index in matched] == [
        ("encoder/dropout", 0)
    ]
    assert selectors._first_match(["nothing"], _nested()) == []


# --- argument checks ------------------------------------------------------


@pytest.mark.parametrize(
    "selector",
    [
        "dense",
        "*",
        keras.layers.Dense,
        lambda layer: True,
        ["dense", keras.layers.Dense, callable],
        ("dense",),
    ],
    ids=["name", "glob", "class", "predicate", "list", "tuple"],
)
def test_check_selector_accepts_valid_selectors(selector):
    selectors._check_selector(selector)


@pytest.mark.parametrize(
    "selector, error, match",
    [
        (3, TypeError, r"argument `layers`.*Received: layers=3$"),
        (None, TypeError, r"argument `layers`.*layers=None"),
        (b"dense", TypeError, r"argument `layers`"),
        (int, TypeError, r"argument `layers`.*a layer class"),
        ({"dense": 1}, TypeError, r"argument `layers`"),
        (["dense", 3.5], TypeError, r"layers=\['dense', 3\.5\]"),
        ([], ValueError, r"argument `layers`.*non-empty list"),
        ((), ValueError, r"argument `layers`.*non-empty list"),
    ],
)
def test_check_selector_errors(selector, error, match):
    with pytest.raises(error, match=match):
        selectors._check_selector(selector)


def test_check_selector_rejects_a_layer_instance():
    with pytest.raises(TypeError, match=r"argument `layers`.*name=dense"):
        selectors._check_selector(keras.layers.Dense(1, name="dense"))


def test_check_selector_names_the_argument():
    with pytest.raises(TypeError, match=r"argument `rules`.*rules=3"):
        selectors._check_selector(3, name="rules")


@pytest.mark.parametrize(
    "function",
    [
        selectors.walk,
        lambda model: selectors.select(model, "*"),
        selectors._check_model,
    ],
    ids=["walk", "select", "check_model"],
)
def test_model_must_be_a_layer(function):
    with pytest.raises(
        TypeError, match=r"argument `model`.*Received: model='m' of type str"
    ):
        function("m")


def test_select_checks_its_selector():
    with pytest.raises(TypeError, match=r"argument `layers`"):
        selectors.select(_nested(), 3)


def _compiled_shared_encoders(penalty=None):
    from keras_regkit import regularize

    model, shared = _shared_encoders()
    if penalty is not None:
        regularize(model, kernel=penalty)
    model.compile(keras.optimizers.SGD(0.01), "mse")
    return model, shared


def _data():
    rng = np.random.default_rng(0)
    return (
        rng.normal(size=(32, 4)).astype("float32"),
        rng.normal(size=(32, 4)).astype("float32"),
    )


def _zero_fraction(variable):
    return float(np.mean(keras.ops.convert_to_numpy(variable) == 0.0))


def _regularize_reaches():
    from keras_regkit import L2, regularize

    model, shared = _shared_encoders()
    regularize(model, kernel=L2(0.1), layers="enc2")
    assert shared.kernel.regularizer == L2(0.1)
    assert (
        model.get_layer("enc1").get_layer("enc1_own").kernel_regularizer is None
    )


def _shrink_reaches():
    from keras_regkit import shrink

    model, _ = _compiled_shared_encoders()
    report = shrink(model, _data(), method="prune", levels=[0.5], layers="enc2")
    # The kernels it prunes: enc2's own and the shared one, 16 entries each.
    assert report.rows[-1].parameters == 32


def _monitor_reaches():
    from keras_regkit.callbacks import RegularizationMonitor

    model, _ = _compiled_shared_encoders()
    monitor = RegularizationMonitor(layers="enc2")
    history = model.fit(*_data(), epochs=1, verbose=0, callbacks=[monitor])
    assert "kernel_norm/enc1/shared" in history.history


def _pruning_reaches():
    from keras_regkit.callbacks import GradualPruning
    from keras_regkit.pruning import ConstantSparsity

    model, shared = _compiled_shared_encoders()
    pruning = GradualPruning(ConstantSparsity(0.5, 0), layers="enc2")
    model.fit(*_data(), epochs=1, verbose=0, callbacks=[pruning])
    assert _zero_fraction(shared.kernel) == 0.5


def _proximal_step_reaches():
    from keras_regkit import L1
    from keras_regkit.callbacks import ProximalStep

    model, shared = _compiled_shared_encoders(penalty=L1(100.0))
    model.fit(
        *_data(), epochs=1, verbose=0, callbacks=[ProximalStep(layers="enc2")]
    )
    assert _zero_fraction(shared.kernel) == 1.0  # a strong L1 prox


def _penalty_scheduler_reaches():
    from keras_regkit import L2, penalties
    from keras_regkit.callbacks import PenaltyScheduler

    model, _ = _compiled_shared_encoders(penalty=L2(0.1))
    seen = []
    probe = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: seen.append(penalties(model))
    )
    scheduler = PenaltyScheduler(lambda epoch: 0.0, layers="enc2")
    model.fit(*_data(), epochs=1, verbose=0, callbacks=[scheduler, probe])
    assert seen[0]["enc1/shared"]["kernel"] == 0.0
    assert seen[0]["enc1/enc1_own"]["kernel"] > 0.0


@pytest.mark.parametrize(
    "check",
    [
        _regularize_reaches,
        _shrink_reaches,
        _monitor_reaches,
        _pruning_reaches,
        _proximal_step_reaches,
        _penalty_scheduler_reaches,
    ],
    ids=lambda check: check.__name__.strip("_"),
)
def test_a_layers_argument_reaches_a_shared_layer_through_any_path(check):
    check()
