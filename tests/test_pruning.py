"""Tests for keras_regkit.pruning: TF-MOT's pruning schedules, on Keras 3."""

import keras
import numpy as np
import pytest

from keras_regkit.pruning import ConstantSparsity, PolynomialDecay

# Arguments and numpy: nothing here depends on the Keras backend.
pytestmark = pytest.mark.backend_independent

STEPS = range(0, 1300, 7)


def _tfmot_polynomial(step, initial, final, begin, end, power, frequency):
    """numpy reference: TF-MOT's PolynomialDecay.__call__, in float64."""
    p = np.clip((step - begin) / (end - begin), 0.0, 1.0)
    sparsity = final + (initial - final) * (1.0 - p) ** power
    prune = begin <= step <= end and (step - begin) % frequency == 0
    return prune, sparsity


@pytest.mark.parametrize(
    "arguments",
    [
        (0.5, 0.8, 0, 1000, 3, 100),
        (0.0, 0.9, 100, 1100, 3, 50),
        (0.2, 0.6, 30, 400, 1, 1),
        (0.9, 0.1, 0, 10, 2.5, 3),  # a falling sparsity is allowed too
    ],
)
def test_polynomial_decay_matches_the_formula_at_every_step(arguments):
    schedule = PolynomialDecay(*arguments)
    for step in STEPS:
        prune, sparsity = schedule(step)
        expected_prune, expected = _tfmot_polynomial(step, *arguments)
        assert prune is expected_prune, step
        np.testing.assert_allclose(sparsity, expected, rtol=1e-12, atol=0)


def test_zhu_and_gupta_cubic_schedule_rises_fast_then_levels_off():
    schedule = PolynomialDecay(0.5, 0.9, begin_step=0, end_step=1000)
    quarter, half, three_quarters = (
        schedule.sparsity(s) for s in (250, 500, 750)
    )
    # 0.9 - 0.4 * (1 - p)**3
    assert quarter == pytest.approx(0.9 - 0.4 * 0.75**3)
    assert half == pytest.approx(0.85)
    assert three_quarters == pytest.approx(0.9 - 0.4 * 0.25**3)
    assert half - quarter > three_quarters - half  # fast, then slower
    assert schedule.sparsity(0) == 0.5
    assert schedule.sparsity(10**9) == 0.9


def test_polynomial_decay_with_end_equal_to_begin_steps_at_once():
    schedule = PolynomialDecay(0.1, 0.7, begin_step=20, end_step=20)
    assert schedule(19) == (False, pytest.approx(0.1))
    assert schedule(20) == (True, pytest.approx(0.7))
    assert schedule(21) == (False, pytest.approx(0.7))


def test_constant_sparsity_prunes_every_frequency_steps_in_range():
    endless = ConstantSparsity(0.75, begin_step=10, frequency=4)
    pruned = [step for step in range(40) if endless.should_prune(step)]
    assert pruned == [10, 14, 18, 22, 26, 30, 34, 38]
    assert endless(10**7 + 2) == (True, 0.75)
    assert all(endless(step)[1] == 0.75 for step in range(40))
    bounded = ConstantSparsity(0.75, begin_step=10, end_step=22, frequency=4)
    pruned = [step for step in range(40) if bounded.should_prune(step)]
    assert pruned == [10, 14, 18, 22]


def test_defaults_are_tfmots():
    schedule = PolynomialDecay(0.0, 0.5, begin_step=0, end_step=10)
    assert schedule.power == 3.0 and schedule.frequency == 100
    constant = ConstantSparsity(0.5, begin_step=0)
    assert constant.end_step == -1 and constant.frequency == 100


@pytest.mark.parametrize(
    "schedule",
    [
        PolynomialDecay(0.1, 0.8, begin_step=5, end_step=500, power=2),
        ConstantSparsity(0.4, begin_step=3, end_step=90, frequency=7),
        ConstantSparsity(0.4, begin_step=0),
    ],
    ids=repr,
)
def test_schedules_round_trip_through_keras_serialization(schedule):
    config = keras.saving.serialize_keras_object(schedule)
    assert config["registered_name"].startswith("keras_regkit>")
    restored = keras.saving.deserialize_keras_object(config)
    assert restored == schedule
    assert [restored(s) for s in STEPS] == [schedule(s) for s in STEPS]
    assert type(schedule).from_config(schedule.get_config()) == schedule


@pytest.mark.parametrize(
    "build, error, match",
    [
        (
            lambda: PolynomialDecay(1.0, 0.5, 0, 10),
            ValueError,
            r"`initial_sparsity`.*\[0, 1\).*initial_sparsity=1\.0",
        ),
        (
            lambda: PolynomialDecay(0.0, -0.1, 0, 10),
            ValueError,
            "final_sparsity=-0.1",
        ),
        (
            lambda: PolynomialDecay(0.0, 0.5, -1, 10),
            ValueError,
            "begin_step=-1",
        ),
        (
            lambda: PolynomialDecay(0.0, 0.5, 10, 5),
            ValueError,
            r"`end_step`.*>= begin_step \(10\).*end_step=5",
        ),
        (lambda: PolynomialDecay(0.0, 0.5, 0, -1), ValueError, "end_step=-1"),
        (
            lambda: PolynomialDecay(0.0, 0.5, 0, 10.0),
            TypeError,
            r"end_step=10\.0",
        ),
        (
            lambda: PolynomialDecay(0.0, 0.5, 0, 10, power=0),
            ValueError,
            "power=0",
        ),
        (
            lambda: PolynomialDecay(0.0, 0.5, 0, 10, frequency=0),
            ValueError,
            "frequency=0",
        ),
        (
            lambda: ConstantSparsity(0.5, 0, end_step=-2),
            ValueError,
            r"or -1 to prune until training ends.*end_step=-2",
        ),
        (
            lambda: ConstantSparsity(0.5, 0, end_step=True),
            TypeError,
            "end_step=True",
        ),
        (
            lambda: ConstantSparsity("0.5", 0),
            TypeError,
            "target_sparsity='0.5'",
        ),
    ],
)
def test_bad_arguments_are_refused_naming_them(build, error, match):
    with pytest.raises(error, match=match):
        build()


@pytest.mark.parametrize("step, error", [(-1, ValueError), (1.5, TypeError)])
def test_bad_steps_are_refused(step, error):
    with pytest.raises(error, match=f"`step`.*step={step}"):
        ConstantSparsity(0.5, 0)(step)


def test_the_same_as_tensorflow_model_optimization():
    # Only where tensorflow-model-optimization (Keras 2) is installed: it is
    # never a dependency of keras-regkit.
    pytest.importorskip("tf_keras")
    sparsity = pytest.importorskip("tensorflow_model_optimization").sparsity
    pairs = [
        (
            PolynomialDecay(
                0.3, 0.9, begin_step=50, end_step=900, frequency=25
            ),
            sparsity.keras.PolynomialDecay(0.3, 0.9, 50, 900, frequency=25),
        ),
        (
            ConstantSparsity(0.6, begin_step=40, end_step=600, frequency=30),
            sparsity.keras.ConstantSparsity(0.6, 40, 600, frequency=30),
        ),
    ]
    for ours, theirs in pairs:
        for step in STEPS:
            prune, value = theirs(step)
            assert ours(step)[0] == bool(prune), step
            np.testing.assert_allclose(ours(step)[1], float(value), rtol=1e-6)
