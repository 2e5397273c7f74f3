"""Tests for keras_regkit.shrink."""

import json

import keras
import numpy as np
import pytest
from keras import ops

from keras_regkit import L1, L2, shrink


def _numpy(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


def _regression(seed=0, rows=40, inputs=30, noise=1.0):
    """Few rows, many inputs: a linear model overfits, shrinking helps."""
    rng = np.random.default_rng(seed)
    beta = np.zeros((inputs, 1))
    beta[:3, 0] = [1.5, -2.0, 1.0]
    x = rng.normal(size=(rows + 400, inputs)).astype("float32")
    y = (x @ beta + rng.normal(0, noise, (rows + 400, 1))).astype("float32")
    return (x[:rows], y[:rows]), (x[rows:], y[rows:])


def _fitted_linear(train, regularizer=None):
    """A linear model at the least-squares fit of `train`: overfit."""
    x, y = train
    model = keras.Sequential(
        [
            keras.Input((x.shape[1],)),
            keras.layers.Dense(1, kernel_regularizer=regularizer, name="dense"),
        ]
    )
    model.compile(keras.optimizers.SGD(0.02), "mse")
    design = np.hstack([x, np.ones((len(x), 1))]).astype("float64")
    solution = np.linalg.lstsq(design, y.astype("float64"), rcond=None)[0]
    model.set_weights([solution[:-1], solution[-1]])
    return model


def _weights(model):
    return [np.array(_numpy(w)) for w in model.weights]


def _mse(kernel, bias, data):
    x, y = data
    return float(np.mean((x @ kernel + bias - y) ** 2))


def _soft_threshold(v, t):
    return np.sign(v) * np.maximum(np.abs(v) - t, 0.0)


def _prune(v, fraction):
    flat = np.abs(v).ravel()
    order = np.argsort(flat, kind="stable")
    result = v.ravel().copy()
    result[order[: int(np.floor(fraction * flat.size))]] = 0.0
    return result.reshape(v.shape)


TRANSFORMS = {
    "scale": (lambda w, level: w / (1 + level), [0.05, 0.5, 2.0]),
    "soft_threshold": (_soft_threshold, [0.01, 0.1, 0.3]),
    "prune": (_prune, [0.2, 0.5, 0.9]),
}


@pytest.mark.parametrize("method", list(TRANSFORMS))
def test_each_level_matches_a_numpy_reference(method):
    train, validation = _regression()
    model = _fitted_linear(train)
    kernel, bias = _weights(model)
    transform, levels = TRANSFORMS[method]
    report = shrink(model, validation, method=method, levels=levels)
    assert [row.level for row in report.rows] == [None, *levels]
    for row in report.rows:
        shrunk = kernel if row.level is None else transform(kernel, row.level)
        assert row.metric == pytest.approx(
            _mse(shrunk, bias, validation), rel=1e-5
        )
        assert row.l2_norm == pytest.approx(np.linalg.norm(shrunk), rel=1e-5)
        assert row.zero_fraction == pytest.approx(np.mean(shrunk == 0.0))
        assert row.nonzero == np.count_nonzero(shrunk)
        assert row.parameters == kernel.size
    # The model is left at the chosen level, and the bias was not touched.
    chosen = report.after
    expected = (
        kernel if chosen.level is None else transform(kernel, chosen.level)
    )
    new_kernel, new_bias = _weights(model)
    np.testing.assert_allclose(new_kernel, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(new_bias, bias)


def test_shrinking_an_overfit_model_improves_validation_and_sticks():
    train, validation = _regression()
    model = _fitted_linear(train)
    report = shrink(model, validation, method="scale")
    assert report.chosen > 0
    assert report.after.metric < 0.95 * report.before.metric
    assert report.after.l2_norm < report.before.l2_norm
    evaluated = model.evaluate(*validation, verbose=0)
    assert evaluated == pytest.approx(report.after.metric, rel=1e-5)


def test_when_no_level_helps_the_original_weights_stay_bit_for_bit():
    train, validation = _regression(noise=0.0, rows=200)
    model = _fitted_linear(train)
    before = _weights(model)
    report = shrink(model, validation, method="scale", levels=[0.1, 1.0])
    assert report.chosen == 0
    assert report.chosen_level is None
    for old, new in zip(before, _weights(model), strict=True):
        np.testing.assert_array_equal(old, new)


def test_sparsest_within_prefers_the_simplest_model_nearly_as_good():
    train, validation = _regression()
    model = _fitted_linear(train)
    levels = [0.1, 0.3, 0.5, 0.7, 0.8, 0.9]
    best = shrink(model, validation, method="prune", levels=levels)
    model = _fitted_linear(train)
    simplest = shrink(
        model,
        validation,
        method="prune",
        levels=levels,
        select="sparsest_within",
        tolerance=0.25,
    )
    rows = simplest.rows
    assert simplest.after.zero_fraction >= best.after.zero_fraction
    best_metric = min(row.metric for row in rows)
    assert simplest.after.metric <= 1.25 * best_metric
    assert simplest.after.metric <= rows[0].metric  # never worse
    # Nothing sparser was within the tolerance.
    for row in rows:
        if row.zero_fraction > simplest.after.zero_fraction:
            assert (
                row.metric > 1.25 * best_metric or row.metric > rows[0].metric
            )


def test_global_pruning_counts_all_selected_weights_together():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(10, name="wide"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    model.compile("sgd", "mse")
    model.get_layer("head").kernel.assign(
        100.0 * np.ones((10, 1), dtype="float32")
    )
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    data = (x, _numpy(model(x)))
    report = shrink(
        model,
        data,
        method="prune",
        levels=[0.5],
        prune_scope="global",
        mode="max",  # forces the pruned model to be kept
    )
    assert report.rows[1].nonzero == 35  # 70 weights, the largest 35 stay
    # The head's large weights all survive; the wide layer lost 35.
    assert np.count_nonzero(_numpy(model.get_layer("head").kernel)) == 10
    assert np.count_nonzero(_numpy(model.get_layer("wide").kernel)) == 25


def test_biases_are_shrunk_only_when_asked():
    train, validation = _regression()
    model = _fitted_linear(train)
    kernel, bias = _weights(model)
    shrink(
        model, validation, method="scale", levels=[1.0], bias=True, mode="max"
    )
    new_kernel, new_bias = _weights(model)
    np.testing.assert_allclose(new_bias, bias / 2, rtol=1e-6)
    np.testing.assert_allclose(new_kernel, kernel / 2, rtol=1e-6)


def test_the_loss_monitored_is_the_data_loss_without_penalties():
    train, validation = _regression()
    model = _fitted_linear(train, regularizer=L2(0.5))
    kernel, bias = _weights(model)
    report = shrink(model, validation, method="scale", levels=[0.1])
    assert report.before.metric == pytest.approx(
        _mse(kernel, bias, validation), rel=1e-5
    )
    assert model.get_layer("dense").kernel.regularizer == L2(0.5)


def test_an_accuracy_metric_is_maximised():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")[:, None]
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(1, activation="sigmoid")]
    )
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    model.fit(x[:200], y[:200], epochs=20, verbose=0)
    report = shrink(
        model,
        (x[200:], y[200:]),
        method="soft_threshold",
        monitor="val_accuracy",
    )
    assert report.mode == "max"
    assert report.after.metric >= report.before.metric
    assert len(report.rows) == 11  # the default: 10 thresholds


def test_without_finetuning_the_optimizer_state_is_untouched():
    train, validation = _regression()
    model = _fitted_linear(train)
    before = [np.array(_numpy(v)) for v in model.optimizer.variables]
    shrink(model, validation, method="prune")
    after = [np.array(_numpy(v)) for v in model.optimizer.variables]
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)


def test_finetuning_holds_the_zeros_of_each_level():
    train, validation = _regression()
    model = _fitted_linear(train)
    report = shrink(
        model,
        validation,
        method="prune",
        levels=[0.5, 0.8],
        finetune_data=train,
        finetune_epochs=3,
        mode="max",
    )
    for row in report.rows[1:]:
        assert row.nonzero == 30 - int(np.floor(row.level * 30))
    assert model.get_layer("dense").kernel.constraint is None


def _classifier(units=12):
    """A trained two-class MLP: hidden (Dense), then head (Dense)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype("float32")
    y = (x[:, :2].sum(axis=1) > 0).astype("int32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(units, activation="relu", name="hidden"),
            keras.layers.Dense(2, name="head"),
        ]
    )
    model.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x[:200], y[:200], epochs=5, verbose=0)
    return model, (x[200:], y[200:])


def test_unit_pruning_removes_the_units_of_least_rms_with_their_biases():
    model, validation = _classifier()
    kernel = _numpy(model.get_layer("hidden").kernel)
    rms = np.sqrt((kernel**2).mean(axis=0))
    report = shrink(
        model,
        validation,
        method="prune",
        structure="units",
        layers="hidden",
        levels=[0.25, 0.5, 0.75],
        mode="max",  # on the loss: the worst level wins, a pruned one
    )
    for row in report.rows[1:]:
        pruned_units = round(row.level * 12)
        # the kernel (6 x 12) and bias (12) of every pruned unit
        assert row.parameters == 6 * 12 + 12
        assert row.nonzero == (12 - pruned_units) * 7
    chosen = report.rows[report.chosen]
    dead = round((chosen.level or 0.0) * 12)
    after = _numpy(model.get_layer("hidden").kernel)
    bias = _numpy(model.get_layer("hidden").bias)
    zero_units = [j for j in range(12) if np.all(after[:, j] == 0.0)]
    assert sorted(zero_units) == sorted(np.argsort(rms)[:dead])
    assert all(bias[j] == 0.0 for j in zero_units)


def test_block_pruning_prunes_the_blocks_of_least_mean_magnitude():
    model, validation = _classifier(units=8)
    kernel = _numpy(model.get_layer("hidden").kernel)  # 6 x 8: 3 x 2 blocks
    corners = [(i, j) for i in (0, 2, 4) for j in (0, 4)]
    means = [np.abs(kernel[i : i + 2, j : j + 4]).mean() for i, j in corners]
    expected = {corners[k] for k in np.argsort(means)[:3]}
    report = shrink(
        model,
        validation,
        method="prune",
        structure=(2, 4),
        layers="hidden",
        levels=[0.5],
        mode="max",  # on the loss: the pruned level wins
    )
    assert report.chosen == 1
    assert report.rows[1].nonzero == 48 - 3 * 8
    after = _numpy(model.get_layer("hidden").kernel)
    for i, j in corners:
        block = after[i : i + 2, j : j + 4]
        assert np.all(block == 0.0) == ((i, j) in expected)


def test_unit_pruning_refuses_layers_without_units():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((5, 3)),
            keras.layers.LSTM(4, name="lstm"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    model.compile("adam", "mse")
    x = np.ones((4, 5, 3), "float32")
    with pytest.raises(ValueError, match="'lstm/lstm_cell' \\(LSTMCell\\)"):
        shrink(model, (x, np.ones((4, 1))), method="prune", structure="units")


def test_penalty_path_with_proximal_steps_reaches_exact_zeros():
    train, validation = _regression()
    model = _fitted_linear(train, regularizer=L2(1e-4))
    iterations = int(_numpy(model.optimizer.iterations))
    report = shrink(
        model,
        validation,
        method="penalty",
        levels=[0.03, 0.3, 1.0],
        finetune_data=train,
        finetune_epochs=30,
        batch_size=40,
    )
    assert [row.level for row in report.rows[1:]] == [0.03, 0.3, 1.0]
    zeros = [row.zero_fraction for row in report.rows]
    assert zeros[-1] > 0.5  # the strongest L1 zeroes most inputs
    assert zeros == sorted(zeros)  # warm starts: a monotone path
    assert int(_numpy(model.optimizer.iterations)) == iterations + 90
    kernel = model.get_layer("dense").kernel
    assert kernel.regularizer == L2(1e-4)  # the user's penalty is back
    assert kernel.constraint is None
    assert report.after.metric <= report.before.metric


def test_penalty_regularizer_can_be_a_function():
    train, validation = _regression()
    model = _fitted_linear(train)
    made = []

    def make(strength):
        made.append(strength)
        return L1(strength)

    shrink(
        model,
        validation,
        method="penalty",
        levels=[0.01],
        finetune_data=train,
        regularizer=make,
    )
    assert made == [0.01]


class _FailingValidation(keras.utils.PyDataset):
    """Validation batches that raise on the `fail_on`-th batch served."""

    def __init__(self, data, fail_on, error):
        super().__init__()
        self.data, self.fail_on, self.error = data, fail_on, error
        self.served = 0

    def __len__(self):
        return 1

    def __getitem__(self, index):
        self.served += 1
        if self.served == self.fail_on:
            raise self.error
        return self.data


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt])
@pytest.mark.parametrize("finetune", [False, True])
def test_an_error_midway_restores_everything(error, finetune):
    train, validation = _regression()
    model = _fitted_linear(train, regularizer=L1(1e-3))
    before = _weights(model)
    data = _FailingValidation(validation, fail_on=3, error=error)
    expected = KeyboardInterrupt if error is KeyboardInterrupt else RuntimeError
    with pytest.raises(expected):
        shrink(
            model,
            data,
            method="penalty" if finetune else "soft_threshold",
            levels=[0.01, 0.1, 0.3],
            finetune_data=train if finetune else None,
        )
    for old, new in zip(before, _weights(model), strict=True):
        np.testing.assert_array_equal(old, new)
    kernel = model.get_layer("dense").kernel
    assert kernel.regularizer == L1(1e-3)
    assert kernel.constraint is None
    assert len(model.losses) == 1


def test_report_prints_and_serialises():
    train, validation = _regression()
    model = _fitted_linear(train)
    report = shrink(model, validation, method="scale", levels=[0.1, 1.0])
    table = report.as_table().splitlines()
    assert len(table) == 4 and table[0].startswith("level")
    assert table[1].startswith("(before)")
    document = json.loads(json.dumps(report.to_dict()))
    assert document["method"] == "scale"
    assert [row["level"] for row in document["rows"]] == [None, 0.1, 1.0]
    assert document["chosen_level"] == report.chosen_level


def test_verbose_1_shows_a_progress_bar_over_the_levels(capsys):
    train, validation = _regression()
    model = _fitted_linear(train)
    shrink(model, validation, method="scale", levels=[0.1, 1.0], verbose=1)
    out = capsys.readouterr().out
    # One bar, redrawn in place (Keras's Progbar), ending at 3 of 3 points.
    assert out.count("\n") == 1 and out.endswith("\n")
    final = out.split("\r")[-1]
    assert "3/3" in final and "level: 1.0000" in final and "zeros:" in final


def test_verbose_2_writes_one_line_per_level(capsys):
    train, validation = _regression()
    model = _fitted_linear(train)
    shrink(model, validation, method="scale", levels=[0.1, 1.0], verbose=2)
    lines = capsys.readouterr().out.strip().split("\n")
    assert len(lines) == 3 and "\r" not in "".join(lines)
    assert "1/3" in lines[0] and "2/3" in lines[1] and "3/3" in lines[2]
    assert "level: 0.1000" in lines[1] and "loss:" in lines[1]


def test_verbose_goes_where_keras_logs(capsys):
    train, validation = _regression()
    model = _fitted_linear(train)
    keras.config.disable_interactive_logging()
    try:
        shrink(model, validation, method="scale", levels=[0.1], verbose=1)
    finally:
        keras.config.enable_interactive_logging()
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"method": "sparsify"}, ValueError, "argument `method`"),
        (
            {"method": "prune", "levels": [0.5, 1.0]},
            ValueError,
            "in \\(0, 1\\)",
        ),
        (
            {"method": "prune", "levels": [-0.1]},
            ValueError,
            "argument `levels`",
        ),
        ({"method": "scale", "levels": []}, ValueError, "at least one level"),
        ({"method": "scale", "levels": [0.0]}, ValueError, "argument `levels`"),
        ({"method": "scale", "levels": "0.1"}, TypeError, "argument `levels`"),
        ({"method": "scale", "tolerance": -0.1}, ValueError, "`tolerance`"),
        ({"method": "scale", "select": "first"}, ValueError, "`select`"),
        ({"method": "penalty"}, ValueError, "pass `finetune_data`"),
        (
            {"method": "penalty", "finetune_data": "x", "regularizer": "l3"},
            ValueError,
            "argument `regularizer`",
        ),
        ({"method": "scale", "finetune_epochs": 0}, ValueError, "epochs"),
        ({"method": "scale", "monitor": "f1"}, ValueError, "cannot tell"),
        ({"method": "scale", "layers": "nope"}, ValueError, "matches no layer"),
        ({"method": "prune", "prune_scope": "all"}, ValueError, "prune_scope"),
    ],
)
def test_bad_arguments_fail_before_any_weight_changes(kwargs, error, match):
    train, validation = _regression()
    model = _fitted_linear(train)
    before = _weights(model)
    with pytest.raises(error, match=match):
        shrink(model, validation, **kwargs)
    for old, new in zip(before, _weights(model), strict=True):
        np.testing.assert_array_equal(old, new)


def test_missing_validation_data_and_unknown_monitor_are_clear_errors():
    train, validation = _regression()
    model = _fitted_linear(train)
    with pytest.raises(ValueError, match="argument `validation_data`"):
        shrink(model, None, method="scale")
    before = _weights(model)
    with pytest.raises(ValueError, match="Available: loss"):
        shrink(model, validation, method="scale", monitor="auc", mode="max")
    for old, new in zip(before, _weights(model), strict=True):
        np.testing.assert_array_equal(old, new)
    uncompiled = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="compiled model"):
        shrink(uncompiled, validation, method="scale")
    with pytest.raises(TypeError, match="argument `model`"):
        shrink("model", validation, method="scale")


class _Batches(keras.utils.PyDataset):
    """`(x, y)` in batches of 16; the `fail_on`-th batch served raises."""

    def __init__(self, x, y, fail_on=None, error=None):
        super().__init__()
        self.x, self.y, self.fail_on, self.error = x, y, fail_on, error
        self.served = 0

    def __len__(self):
        return len(self.x) // 16

    def __getitem__(self, index):
        self.served += 1
        if self.served == self.fail_on:
            raise self.error
        rows = slice(16 * index, 16 * (index + 1))
        return self.x[rows], self.y[rows]


def _stateful_model(x, y):
    """A trained model holding more than weights: seeds, BatchNorm, Adam."""
    from keras_regkit.layers import Dropout

    model = keras.Sequential(
        [
            keras.Input((x.shape[1],)),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.2, seed=1),
            Dropout(0.2, seed=2),
            keras.layers.Dense(1, name="out"),
        ]
    )
    model.compile(keras.optimizers.Adam(0.01), "mse", metrics=["mae"])
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    return model


def _state(model):
    variables = model.variables + model.metrics_variables
    variables += model.optimizer.variables
    return {v.path: np.array(_numpy(v)) for v in variables}


@pytest.mark.parametrize(
    "error, expected, match",
    [
        # TensorFlow reports what its data pipeline raised as its own
        # error, which quotes it.
        (
            KeyboardInterrupt("interrupted"),
            (KeyboardInterrupt, Exception),
            "interrupted",
        ),
        (RuntimeError("data broke"), Exception, "data broke"),
    ],
    ids=["keyboard_interrupt", "data_raises"],
)
@pytest.mark.parametrize("finetune", [False, True], ids=["evaluate", "fit"])
def test_an_interrupt_inside_a_level_restores_every_variable(
    error, expected, match, finetune
):
    # Levels 0.3 and 0.6: the failure comes in the middle of the second
    # level's `evaluate` (4 batches each) or of its fine-tuning `fit`. On
    # JAX, Keras leaves every variable of an interrupted `fit` or
    # `evaluate` without a value; dropout advances the seed states.
    (x, y), _ = _regression(rows=64, inputs=8)
    model = _stateful_model(x, y)
    before = _state(model)
    if finetune:
        validation = _Batches(x, y)
        finetune_data = _Batches(x, y, fail_on=4 + 2, error=error)
    else:
        validation = _Batches(x, y, fail_on=4 + 4 + 2, error=error)
        finetune_data = None
    with pytest.raises(expected, match=match):
        shrink(
            model,
            validation,
            method="prune",
            levels=[0.3, 0.6],
            finetune_data=finetune_data,
        )
    after = _state(model)
    assert list(after) == list(before)
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=path)
    # The model is whole: it predicts, evaluates and trains as before.
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(model.evaluate(x, y, verbose=0)[0])


def test_validation_data_as_a_list_as_fit_takes_it():
    train, validation = _regression()
    model = _fitted_linear(train)
    as_list = shrink(model, list(validation), method="scale", levels=[0.1, 1.0])
    model = _fitted_linear(train)
    as_tuple = shrink(model, validation, method="scale", levels=[0.1, 1.0])
    assert as_list.rows == as_tuple.rows
