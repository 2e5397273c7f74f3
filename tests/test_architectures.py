"""Every tool on the architectures people train and fine-tune.

keras.applications' ResNet50 and MobileNetV3Small, a tiny KerasHub BERT
classifier, an LSTM and a small ViT-style Functional model with
`MultiHeadAttention`, all with random weights and small inputs. For each:
`regularize` with per-layer rules, `fit` with `EarlyStopping(
restore_best_weights=True)` and `RegularizationMonitor`, a `.keras` save
loaded in a fresh process (predictions and penalties identical to the bit),
`mc_predict`, and `shrink(method="prune")`; and `GradualPruning` of every
kernel, of every kind, and `SharpnessAware` training with
`WeightAveraging`, on all but ResNet50. The heaviest (ResNet50, BERT)
run on TensorFlow and JAX only, to keep CI within its time.
"""

import json
import pickle
import warnings

import keras
import numpy as np
import pytest
from processes import run_in_fresh_process

import keras_regkit
from keras_regkit import L1, L2, GroupLasso, PenaltyPlan
from keras_regkit.callbacks import (
    EarlyStopping,
    GradualPruning,
    RegularizationMonitor,
    WeightAveraging,
)
from keras_regkit.pruning import ConstantSparsity

ROWS = 8


def _images(shape, classes, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (ROWS, *shape)).astype("float32")
    return x, rng.integers(0, classes, ROWS)


def _resnet50():
    model = keras.applications.ResNet50(
        weights=None,
        input_shape=(32, 32, 3),
        classes=4,
        classifier_activation=None,
    )
    rules = {"conv1_conv": L1(1e-5), "*": L2(1e-4)}
    return model, *_images((32, 32, 3), 4), rules


def _mobilenet():
    model = keras.applications.MobileNetV3Small(
        weights=None,
        input_shape=(32, 32, 3),
        classes=4,
        include_preprocessing=False,
        classifier_activation=None,
    )
    rules = {"logits": GroupLasso(1e-4), "*": L2(1e-4)}
    return model, *_images((32, 32, 3), 4), rules


def _bert():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=64,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=12,
    )
    model = keras_hub.models.BertTextClassifier(
        backbone=backbone, num_classes=2, preprocessor=None
    )
    rng = np.random.default_rng(0)
    x = {
        "token_ids": rng.integers(1, 64, (ROWS, 12)).astype("int32"),
        "segment_ids": np.zeros((ROWS, 12), "int32"),
        "padding_mask": np.ones((ROWS, 12), "int32"),
    }
    rules = {"*embedding*": {"embeddings": L2(1e-5)}, "*": L2(1e-4)}
    return model, x, rng.integers(0, 2, ROWS), rules


def _lstm():
    model = keras.Sequential(
        [
            keras.Input((6,), dtype="int32"),
            keras.layers.Embedding(32, 8, mask_zero=True, name="embedding"),
            keras.layers.Dropout(0.2),
            keras.layers.LSTM(8, name="lstm"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(3, name="head"),
        ]
    )
    rng = np.random.default_rng(0)
    x = rng.integers(1, 32, (ROWS, 6)).astype("int32")
    x[:, 4:] = 0  # padding
    rules = {
        "lstm": {"kernel": L2(1e-4), "recurrent": L1(1e-5)},
        "*": {"kernel": L2(1e-4), "embeddings": L2(1e-5)},
    }
    return model, x, rng.integers(0, 3, ROWS), rules


def _vit():
    images = keras.Input((16, 16, 3))
    patches = keras.layers.Conv2D(16, 4, strides=4, name="patches")(images)
    tokens = keras.layers.Reshape((16, 16))(patches)
    attention = keras.layers.MultiHeadAttention(
        2, 8, dropout=0.1, name="attention"
    )
    mixed = keras.layers.LayerNormalization()(
        tokens + attention(tokens, tokens)
    )
    hidden = keras.layers.Dense(32, activation="gelu", name="mlp")(mixed)
    hidden = keras.layers.Dropout(0.1)(hidden)
    pooled = keras.layers.GlobalAveragePooling1D()(hidden)
    outputs = keras.layers.Dense(4, name="head")(pooled)
    model = keras.Model(images, outputs)
    rules = {"patches": L1(1e-5), "*": L2(1e-4)}
    return model, *_images((16, 16, 3), 4), rules


# name -> (build, penalties saved by Keras, backends)
ARCHITECTURES = {
    "ResNet50": (_resnet50, True, ("tensorflow", "jax")),
    "MobileNetV3Small": (_mobilenet, True, ("tensorflow", "jax", "torch")),
    "BertTextClassifier": (_bert, False, ("tensorflow", "jax")),
    "LSTM": (_lstm, True, ("tensorflow", "jax", "torch")),
    "ViT": (_vit, True, ("tensorflow", "jax", "torch")),
}


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _skip_unless_on(name, backends):
    if keras.backend.backend() not in backends:
        pytest.skip(f"{name} runs on {', '.join(backends)} only (CI time)")


def _regularize(model, rules, saved):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keras_regkit.regularize(model, rules=rules)
    unsaved = [w for w in caught if "will not be saved" in str(w.message)]
    assert len(unsaved) == (0 if saved else 1), [str(w.message) for w in caught]
    assert [w for w in caught if w not in unsaved] == []


class _WeightsPerEpoch(keras.callbacks.Callback):
    """Keeps the first and last trainable weights at every epoch's end."""

    def __init__(self):
        super().__init__()
        self.kept = []

    def on_epoch_end(self, epoch, logs=None):
        variables = self.model.trainable_variables
        self.kept.append([_numpy(variables[0]), _numpy(variables[-1])])


def _fit_with_early_stopping(model, x, y):
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    recorder = _WeightsPerEpoch()
    history = model.fit(
        x,
        y,
        validation_data=(x, y),
        epochs=3,
        batch_size=ROWS,
        shuffle=False,
        verbose=0,
        callbacks=[
            EarlyStopping(patience=3, restore_best_weights=True),
            RegularizationMonitor(),
            recorder,
        ],
    )
    logs = history.history
    best = int(np.argmin(logs["val_loss"]))
    variables = model.trainable_variables
    for kept, now in zip(
        recorder.kept[best], (variables[0], variables[-1]), strict=True
    ):
        np.testing.assert_array_equal(_numpy(now), kept)
    assert logs["penalty"][-1] > 0
    assert any(key.startswith("kernel_norm/") for key in logs)


_FRESH_PROCESS = """
import json, pickle
import keras
import numpy as np
import keras_regkit

model = keras.saving.load_model({model_path!r})
plan = {plan_path!r}
if plan:
    keras_regkit.PenaltyPlan.load(plan).apply(model)
with open({inputs_path!r}, "rb") as file:
    x = pickle.load(file)
np.save({outputs_path!r}, keras.ops.convert_to_numpy(model(x)))
with open({penalties_path!r}, "w") as file:
    json.dump(keras_regkit.penalties(model), file)
"""


def _assert_fresh_process_loads_it(model, x, saved, tmp_path):
    paths = {
        name: str(tmp_path / name)
        for name in ("model.keras", "plan.json", "x.pkl", "y.npy", "p.json")
    }
    model.save(paths["model.keras"])
    plan_path = ""
    if not saved:
        plan_path = paths["plan.json"]
        PenaltyPlan.of(model).save(plan_path)
    with open(paths["x.pkl"], "wb") as file:
        pickle.dump(x, file)
    run_in_fresh_process(
        _FRESH_PROCESS.format(
            model_path=paths["model.keras"],
            plan_path=plan_path,
            inputs_path=paths["x.pkl"],
            outputs_path=paths["y.npy"],
            penalties_path=paths["p.json"],
        )
    )
    np.testing.assert_array_equal(np.load(paths["y.npy"]), _numpy(model(x)))
    with open(paths["p.json"]) as file:
        assert json.load(file) == keras_regkit.penalties(model)  # to the bit


def _assert_mc_predict(model, x):
    has_dropout = any(
        isinstance(layer, keras.layers.Dropout) and layer.rate > 0
        for _, layer in keras_regkit.selectors.walk(model)
    )
    if not has_dropout:
        with pytest.raises(ValueError, match="has none"):
            keras_regkit.mc_predict(model, x, samples=2)
        return
    predictions = _numpy(model.predict(x, verbose=0))
    mean, std = keras_regkit.mc_predict(model, x, samples=4, seed=0)
    assert mean.shape == std.shape == predictions.shape
    assert np.all(np.isfinite(mean)) and np.any(std > 0)
    # and nothing changed: predict is still deterministic and the same
    np.testing.assert_array_equal(
        _numpy(model.predict(x, verbose=0)), predictions
    )


def _assert_prune_never_worse(model, x, y):
    report = keras_regkit.shrink(
        model, (x, y), method="prune", levels=[0.3, 0.9], batch_size=ROWS
    )
    chosen = report.rows[report.chosen]
    assert chosen.metric <= report.rows[0].metric


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_tool_on(name, tmp_path):
    build, saved, backends = ARCHITECTURES[name]
    _skip_unless_on(name, backends)
    model, x, y, rules = build()
    _regularize(model, rules, saved)
    _fit_with_early_stopping(model, x, y)
    _assert_fresh_process_loads_it(model, x, saved, tmp_path)
    _assert_mc_predict(model, x)
    _assert_prune_never_worse(model, x, y)


@pytest.mark.parametrize(
    "build",
    [
        lambda: keras.applications.EfficientNetB0(
            weights=None,
            input_shape=(32, 32, 3),
            classes=4,
            classifier_activation=None,
        ),
        lambda: _mobilenet()[0],
        lambda: _bert()[0],
    ],
    ids=["EfficientNetB0", "MobileNetV3Small", "BertTextClassifier"],
)
def test_mc_predict_samples_the_keras_dropouts_of(build):
    model = build()
    if isinstance(model.input, dict):
        x = _bert()[1]
    else:
        x = _images((32, 32, 3), 4)[0]
    _assert_mc_predict(model, x)


ALL_BUT_RESNET50 = [name for name in ARCHITECTURES if name != "ResNet50"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_BUT_RESNET50)
def test_gradual_pruning_holds_every_kernel_of(name):
    build, _, backends = ARCHITECTURES[name]
    _skip_unless_on(name, backends)
    model, x, y, _ = build()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    classes = [type(layer) for _, layer in keras_regkit.selectors.walk(model)]
    # Pruned at step 0, then held through 3 more steps of Adam.
    pruning = GradualPruning(ConstantSparsity(0.5, begin_step=0, end_step=0))
    history = model.fit(
        x,
        y,
        epochs=4,
        batch_size=ROWS,
        shuffle=False,
        verbose=0,
        callbacks=[pruning],
    )
    kernels = keras_regkit._attach.selected_weights(model)
    assert len(kernels) >= 3
    for kernel_name, kernel in kernels:
        values = _numpy(kernel)
        assert (values == 0).sum() == round(0.5 * values.size), kernel_name
    zeros = sum(int((_numpy(k) == 0).sum()) for _, k in kernels)
    total = sum(int(np.prod(k.shape)) for _, k in kernels)
    assert history.history["sparsity"] == [zeros / total] * 4
    # nothing wrapped, nothing left on the weights
    assert [type(layer) for _, layer in keras_regkit.selectors.walk(model)] == (
        classes
    )
    assert GradualPruning.release(model) == 0


# On JAX, SAM's step holds two forward-backward passes to compile: too long
# for CI on these (the other backends run them).
_SLOW_TO_COMPILE_TWICE = ("MobileNetV3Small", "BertTextClassifier")


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_BUT_RESNET50)
def test_sharpness_aware_with_weight_averaging_on(name):
    build, saved, backends = ARCHITECTURES[name]
    _skip_unless_on(name, backends)
    if keras.backend.backend() == "jax" and name in _SLOW_TO_COMPILE_TWICE:
        pytest.skip(f"XLA compiles {name}'s two-pass step for a minute")
    model, x, y, rules = build()
    _regularize(model, rules, saved)
    sam = keras_regkit.SharpnessAware(model, rho=0.05)
    sam.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    recorder = _WeightsPerEpoch()
    averaging = WeightAveraging(
        start_epoch=1, batch_norm_data=x, batch_size=ROWS
    )
    history = sam.fit(
        x,
        y,
        epochs=3,
        batch_size=ROWS,
        shuffle=False,
        verbose=0,
        callbacks=[recorder, averaging],
    )
    assert np.all(np.isfinite(history.history["loss"]))
    # The model ends with the mean of epochs 1 and 2's weights ...
    variables = model.trainable_variables
    for index, now in ((0, variables[0]), (1, variables[-1])):
        mean = (recorder.kept[1][index] + recorder.kept[2][index]) / 2
        np.testing.assert_allclose(_numpy(now), mean, rtol=1e-5, atol=1e-6)
    # ... and BatchNorm statistics recomputed for it, where it has any.
    norms = keras_regkit._batch_norm.batch_norm_layers(model)
    assert bool(norms) == (name == "MobileNetV3Small")
    for layer in norms:
        assert np.all(np.isfinite(_numpy(layer.moving_variance)))
    np.testing.assert_allclose(
        _numpy(sam(x)), _numpy(model(x)), rtol=1e-6, atol=1e-6
    )
