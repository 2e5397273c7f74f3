"""Tests for keras_regkit.tuning (keras-tuner integration)."""

import json
import pathlib

import keras
import keras_tuner
import numpy as np
import pytest
from keras import ops
from processes import run_in_fresh_process, run_together
from serialization import assert_loads_in_fresh_process

from keras_regkit import L1, L2, ElasticNet, ExpAbs, GroupLasso, callbacks
from keras_regkit.layers import Dropout
from keras_regkit.schedules import LinearRamp
from keras_regkit.tuning import (
    RegularizedHyperModel,
    hp_dropout,
    hp_regularizer,
)


def _data(seed=0, rows=96):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 8)).astype("float32")
    y = (x[:, :2].sum(axis=1, keepdims=True) > 0).astype("float32")
    return x, y


def _build(hp=None):
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            Dropout(0.1, name="dropout"),
            keras.layers.Dense(1, activation="sigmoid", name="out"),
        ]
    )
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    return model


def _chosen(hp, values):
    """`hp` set to `values` (as an oracle would), then read again."""
    hp.values.update(values)
    return hp


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("none", None),
        ("l1", L1(0.01)),
        ("l2", L2(0.01)),
        ("exp_abs", ExpAbs(0.01)),
        ("group_lasso", GroupLasso(0.01)),
        ("elastic_net", ElasticNet.from_ratio(0.01, 0.25)),
    ],
)
def test_hp_regularizer_builds_the_chosen_kind(kind, expected):
    hp = keras_tuner.HyperParameters()
    kinds = ["none", "l1", "l2", "elastic_net", "exp_abs", "group_lasso"]
    hp_regularizer(hp, kinds=kinds)
    _chosen(
        hp,
        {
            "regularizer": kind,
            f"regularizer_{kind}_strength": 0.01,
            "regularizer_elastic_net_l1_ratio": 0.25,
        },
    )
    assert hp_regularizer(hp, kinds=kinds) == expected


def test_strengths_exist_only_for_the_kind_chosen():
    hp = keras_tuner.HyperParameters()
    hp_regularizer(hp, name="reg")
    names = {p.name for p in hp.space}
    assert names == {
        "reg",
        "reg_l1_strength",
        "reg_l2_strength",
        "reg_elastic_net_strength",
        "reg_elastic_net_l1_ratio",
        "reg_exp_abs_strength",
    }
    _chosen(hp, {"reg": "l2"})
    assert hp.is_active("reg_l2_strength")
    assert not hp.is_active("reg_l1_strength")
    assert not hp.is_active("reg_elastic_net_l1_ratio")
    strength = next(p for p in hp.space if p.name == "reg_l1_strength")
    assert strength.sampling == "log"
    assert (strength.min_value, strength.max_value) == (1e-6, 1e-1)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"kinds": ["l1", "l3"]}, ValueError, "Unknown kinds: 'l3'"),
        ({"kinds": []}, ValueError, "at least one kind"),
        ({"kinds": "l1"}, TypeError, "argument `kinds`"),
        ({"kinds": ["l1", "l1"]}, ValueError, "listed twice"),
        ({"min_value": 0.0}, ValueError, "argument `min_value`"),
        ({"min_value": -1e-3}, ValueError, "argument `min_value`"),
        ({"min_value": 0.1, "max_value": 0.01}, ValueError, "min_value <="),
        ({"name": ""}, ValueError, "argument `name`"),
    ],
)
def test_hp_regularizer_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        hp_regularizer(keras_tuner.HyperParameters(), **kwargs)


def test_hp_dropout():
    hp = keras_tuner.HyperParameters()
    assert hp_dropout(hp) == 0.0
    rate = next(p for p in hp.space if p.name == "dropout")
    assert (rate.min_value, rate.max_value, rate.step) == (0.0, 0.5, 0.1)
    with pytest.raises(ValueError, match="argument `max_value`"):
        hp_dropout(hp, name="other", max_value=1.0)
    with pytest.raises(ValueError, match="min_value <="):
        hp_dropout(hp, name="other", min_value=0.4, max_value=0.2)


def test_hypermodel_shares_one_choice_or_makes_one_per_layer():
    hp = keras_tuner.HyperParameters()
    model = RegularizedHyperModel(_build, kinds=["l1"]).build(hp)
    assert model.get_layer("hidden").kernel_regularizer == L1(1e-6)
    assert model.get_layer("out").kernel_regularizer == L1(1e-6)
    assert model.get_layer("hidden").bias_regularizer is None
    assert model.optimizer.name == "adam"  # the user's compile settings

    hp = keras_tuner.HyperParameters()
    hypermodel = RegularizedHyperModel(_build, per_layer=True, kinds=["l2"])
    hypermodel.build(hp)
    assert {"regularizer/hidden", "regularizer/out"} <= set(hp.values)
    _chosen(
        hp,
        {
            "regularizer/hidden_l2_strength": 0.03,
            "regularizer/out_l2_strength": 0.001,
        },
    )
    model = hypermodel.build(hp)
    assert model.get_layer("hidden").kernel_regularizer == L2(0.03)
    assert model.get_layer("out").kernel_regularizer == L2(0.001)


def test_hypermodel_layers_selector_and_hp_of_the_build_function():
    def build(hp):
        hp.Int("units", 4, 8, default=4)
        return _build()

    hp = keras_tuner.HyperParameters()
    model = RegularizedHyperModel(build, layers="out", kinds=["l2"]).build(hp)
    assert "units" in hp.values
    assert model.get_layer("hidden").kernel_regularizer is None
    assert model.get_layer("out").kernel_regularizer == L2(1e-6)


def test_bad_hypermodels_fail_before_any_trial(tmp_path):
    def not_a_model():
        return "model"

    with pytest.raises(TypeError, match="must return a keras.Model"):
        keras_tuner.RandomSearch(
            RegularizedHyperModel(not_a_model),
            objective="val_loss",
            max_trials=1,
            directory=str(tmp_path),
        )
    with pytest.raises(ValueError, match="matches no layer"):
        keras_tuner.RandomSearch(
            RegularizedHyperModel(_build, layers="nope"),
            objective="val_loss",
            max_trials=1,
            directory=str(tmp_path),
            project_name="other",
        )
    with pytest.raises(TypeError, match="argument `build_model`"):
        RegularizedHyperModel("build")
    with pytest.raises(ValueError, match="Unknown kinds"):
        RegularizedHyperModel(_build, kinds=["dropout"])
    with pytest.raises(TypeError, match="argument `shrinkage`"):
        RegularizedHyperModel(_build, shrinkage="prune")


def _search(tuner_class, tmp_path, **kwargs):
    x, y = _data()
    x_val, y_val = _data(seed=1, rows=64)
    tuner = tuner_class(
        RegularizedHyperModel(_build),
        objective="val_loss",
        directory=str(tmp_path),
        project_name="search",
        seed=0,
        **kwargs,
    )
    tuner.search(
        x,
        y,
        validation_data=(x_val, y_val),
        epochs=2,
        batch_size=32,
        verbose=0,
    )
    return tuner, x_val


@pytest.mark.parametrize(
    "tuner_class, kwargs",
    [
        (keras_tuner.RandomSearch, {"max_trials": 3}),
        (keras_tuner.GridSearch, {"max_trials": 2}),
        (keras_tuner.BayesianOptimization, {"max_trials": 3}),
        (keras_tuner.Hyperband, {"max_epochs": 2, "hyperband_iterations": 1}),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_searches_with_every_stock_tuner(tuner_class, kwargs, tmp_path):
    tuner, x_val = _search(tuner_class, tmp_path, **kwargs)
    trials = tuner.oracle.trials.values()
    completed = [t for t in trials if t.status == "COMPLETED"]
    assert len(completed) >= 2
    kinds = {t.hyperparameters.values["regularizer"] for t in completed}
    assert kinds <= {"none", "l1", "l2", "elastic_net", "exp_abs"}
    (best,) = tuner.get_best_models(1)
    assert np.all(np.isfinite(ops.convert_to_numpy(best(x_val))))


@pytest.mark.slow
def test_best_model_reloads_in_a_new_process(tmp_path):
    tuner, x_val = _search(keras_tuner.RandomSearch, tmp_path, max_trials=3)
    (best,) = tuner.get_best_models(1)
    expected = ops.convert_to_numpy(best(x_val))
    best_hp = tuner.get_best_hyperparameters(1)[0].values
    np.save(tmp_path / "x.npy", x_val)
    output = run_in_fresh_process(
        f"""
        import json
        import numpy as np
        import keras_tuner
        from keras import ops
        from keras_regkit.tuning import RegularizedHyperModel

        import sys
        sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
        from test_tuning import _build

        tuner = keras_tuner.RandomSearch(
            RegularizedHyperModel(_build), objective="val_loss",
            max_trials=3, directory={str(tmp_path)!r},
            project_name="search", overwrite=False,
        )
        (best,) = tuner.get_best_models(1)
        x = np.load({str(tmp_path / "x.npy")!r})
        np.save({str(tmp_path / "y.npy")!r}, ops.convert_to_numpy(best(x)))
        print(json.dumps(tuner.get_best_hyperparameters(1)[0].values))
        """
    )
    assert json.loads(output.strip().splitlines()[-1]) == best_hp
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-6)
    assert_loads_in_fresh_process(best, x_val, tmp_path)


def test_every_keras_regkit_callback_survives_a_search(tmp_path):
    x, y = _data()
    every_callback = [
        callbacks.EarlyStopping(patience=1, restore_best_weights=True),
        callbacks.WeightShrinkage(method="scale", levels=[0.1]),
        callbacks.DropoutScheduler(LinearRamp(0.0, 0.2, 2)),
        callbacks.PenaltyScheduler(lambda epoch: 1.0 + epoch),
        callbacks.ProximalStep(),
        callbacks.RegularizationMonitor(),
    ]
    tuner = keras_tuner.RandomSearch(
        RegularizedHyperModel(_build, kinds=["l1", "elastic_net"]),
        objective="val_loss",
        max_trials=2,
        directory=str(tmp_path),
        seed=0,
    )
    tuner.search(
        x,
        y,
        validation_split=0.25,
        epochs=2,
        verbose=0,
        callbacks=every_callback,
    )
    trials = tuner.oracle.trials.values()
    assert sum(t.status == "COMPLETED" for t in trials) == 2
    for callback in every_callback:  # the originals were copied, not used
        assert callback.model is None


def test_hypermodel_fit_applies_early_stopping_and_shrinkage(tmp_path):
    x, y = _data()
    shrinkage = callbacks.WeightShrinkage(method="prune", levels=[0.5])
    hypermodel = RegularizedHyperModel(
        _build,
        kinds=["l2"],
        early_stopping=callbacks.EarlyStopping(patience=0, min_delta=1.0),
        shrinkage=shrinkage,
    )
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    history = hypermodel.fit(
        hp, model, x, y, validation_split=0.25, epochs=30, verbose=0
    )
    # Early stopping ended it early; the shrunk figures are the last entry.
    assert len(history.history["val_loss"]) == 3  # 2 epochs, then shrunk
    shrunk = model.evaluate(x[72:], y[72:], verbose=0, return_dict=True)
    assert history.history["val_loss"][-1] == pytest.approx(
        shrunk["loss"], rel=1e-5
    )
    assert shrinkage.report is None  # each fit used a copy


def test_without_keras_tuner_the_error_says_what_to_install():
    output = run_in_fresh_process(
        """
        import sys
        sys.modules["keras_tuner"] = None  # any import of it now fails
        import keras_regkit
        try:
            import keras_regkit.tuning
        except ImportError as error:
            print(error)
        """
    )
    assert 'pip install "keras-regkit[tuner]"' in output


@pytest.mark.tensorflow_only
def test_the_tuner_extra_is_enough_for_a_stock_search_on_tensorflow(tmp_path):
    """keras-tuner imports tensorboard in every trial on TensorFlow, and
    tensorflow-cpu does not install it: the extra must bring it."""
    import configparser

    config = configparser.ConfigParser()
    config.read(pathlib.Path(__file__).parents[1] / "setup.cfg")
    extra = config["options.extras_require"]["tuner"].split()
    assert any(r.startswith("keras-tuner") for r in extra)
    assert any(r.startswith("tensorboard") for r in extra)
    output = run_in_fresh_process(
        f"""
        import numpy as np
        import keras, keras_tuner
        from keras_regkit.tuning import RegularizedHyperModel

        def build():
            model = keras.Sequential(
                [keras.Input((4,)), keras.layers.Dense(1)]
            )
            model.compile("sgd", "mse")
            return model

        tuner = keras_tuner.RandomSearch(
            RegularizedHyperModel(build), objective="val_loss",
            max_trials=2, directory={str(tmp_path)!r},
        )
        x = np.random.default_rng(0).normal(size=(32, 4))
        tuner.search(x, x[:, :1], validation_split=0.25, epochs=1, verbose=0)
        trials = tuner.oracle.trials.values()
        print(sum(t.status == "COMPLETED" for t in trials))
        """
    )
    assert output.strip().splitlines()[-1] == "2"


_DISTRIBUTED_TUNER = """
import json
import os
import time

import keras
import keras_tuner
import numpy as np

from keras_regkit.tuning import RegularizedHyperModel

fits = []


class CountingHyperModel(RegularizedHyperModel):
    def fit(self, hp, model, *args, **kwargs):
        fits.append(hp.values["regularizer"])
        time.sleep(1.0)  # long enough trials that both workers get some
        return super().fit(hp, model, *args, **kwargs)


def build():
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)]
    )
    model.compile("sgd", "mse")
    return model


tuner = keras_tuner.RandomSearch(
    CountingHyperModel(build, kinds=["l1", "l2", "exp_abs"]),
    objective="val_loss",
    max_trials=6,
    directory=DIRECTORY,
    project_name="distributed",
    seed=0,
)
x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
tuner.search(x, x[:, :1], validation_split=0.25, epochs=1, verbose=0)
report = {"id": os.environ["KERASTUNER_TUNER_ID"], "fits": len(fits)}
if report["id"] == "chief":
    best = tuner.oracle.get_best_trials(1)[0]
    report["best"] = best.hyperparameters.values["regularizer"]
    report["best_score"] = best.score
    trials = tuner.oracle.trials.values()
    report["completed"] = sorted(
        (t.score, t.hyperparameters.values["regularizer"])
        for t in trials
        if t.status == "COMPLETED"
    )
print(json.dumps(report))
"""


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_distributed_search_splits_trials_between_workers(tmp_path):
    """keras-tuner's distributed mode: a chief oracle and two workers."""
    import os
    import sys

    script = tmp_path / "tuner.py"
    script.write_text(
        f"DIRECTORY = {str(tmp_path / 'search')!r}\n" + _DISTRIBUTED_TUNER
    )
    base = dict(
        os.environ,
        KERAS_BACKEND=keras.backend.backend(),
        TF_CPP_MIN_LOG_LEVEL="2",
        KERASTUNER_ORACLE_IP="127.0.0.1",
        KERASTUNER_ORACLE_PORT=str(_free_port()),
    )
    ids = ("chief", "tuner0", "tuner1")
    results = run_together(
        [
            ([sys.executable, str(script)], dict(base, KERASTUNER_TUNER_ID=i))
            for i in ids
        ],
        timeout=240,
    )
    reports = {}
    for tuner_id, (code, out, err) in zip(ids, results, strict=True):
        assert code == 0, f"{tuner_id} failed:\n{err}"
        reports[tuner_id] = json.loads(out.strip().splitlines()[-1])
    workers = [reports["tuner0"]["fits"], reports["tuner1"]["fits"]]
    assert sum(workers) == 6 and min(workers) >= 1  # both took trials
    chief = reports["chief"]
    assert chief["fits"] == 0  # the chief only runs the oracle
    assert len(chief["completed"]) == 6
    assert (chief["best_score"], chief["best"]) == tuple(chief["completed"][0])


def _overconfident():
    """A model whose weights are large and random, and stay so (SGD(0)):
    shrinking them lowers its validation loss, on every backend."""
    init = keras.initializers.RandomNormal(stddev=3.0, seed=0)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(
                16, activation="relu", kernel_initializer=init, name="hidden"
            ),
            keras.layers.Dense(
                1, activation="sigmoid", kernel_initializer=init, name="out"
            ),
        ]
    )
    model.compile(keras.optimizers.SGD(0.0), "binary_crossentropy")
    return model


def test_best_model_is_the_shrunk_model_the_search_scored(tmp_path):
    x, y = _data()
    hypermodel = RegularizedHyperModel(
        _overconfident,
        kinds=["none"],
        shrinkage=callbacks.WeightShrinkage(method="soft_threshold"),
    )
    tuner = keras_tuner.RandomSearch(
        hypermodel,
        objective="val_loss",
        max_trials=1,
        directory=tmp_path,
        project_name="shrunk",
        seed=0,
    )
    tuner.search(
        x[:72],
        y[:72],
        validation_data=(x[72:], y[72:]),
        epochs=2,
        verbose=0,
    )
    trial = tuner.oracle.get_best_trials(1)[0]
    best = tuner.get_best_models(1)[0]
    loss = best.evaluate(x[72:], y[72:], verbose=0, return_dict=True)["loss"]
    # The score is the shrunk model's (the History's last entry, the best),
    # and so is the model the search hands back: its zeros included.
    assert loss == pytest.approx(trial.score, rel=1e-5)
    kernels = [best.get_layer(name).kernel for name in ("hidden", "out")]
    assert any(np.any(ops.convert_to_numpy(k) == 0.0) for k in kernels)
