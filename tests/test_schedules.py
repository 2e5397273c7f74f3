"""Tests for keras_regkit.schedules.

`CASES` drives one conformance suite over every schedule: adding one means
adding a line there, with a numpy reference of its formula.
"""

import copy

import numpy as np
import pytest
from serialization import assert_config_round_trip

from keras_regkit import schedules

# Arguments and numpy: nothing here depends on the Keras backend.
pytestmark = pytest.mark.backend_independent

EPOCHS = np.arange(0, 60)

# (schedule, numpy reference of rate(epoch) over an array of epochs)
CASES = [
    (schedules.Constant(0.3), lambda t: np.full(t.shape, 0.3)),
    (
        schedules.LinearRamp(0.1, 0.5, epochs=8),
        lambda t: 0.1 + 0.4 * np.minimum(t, 8) / 8,
    ),
    (
        schedules.LinearRamp(0.5, 0.0, epochs=3),
        lambda t: 0.5 - 0.5 * np.minimum(t, 3) / 3,
    ),
    (
        schedules.Curriculum(0.5, gamma=0.2),
        lambda t: 0.5 * (1 - np.exp(-0.2 * t)),
    ),
]
IDS = [repr(schedule) for schedule, _ in CASES]


@pytest.mark.parametrize("schedule, reference", CASES, ids=IDS)
def test_matches_its_formula(schedule, reference):
    rates = np.array([schedule(int(t)) for t in EPOCHS])
    np.testing.assert_allclose(rates, reference(EPOCHS), rtol=1e-12, atol=0)
    assert all(type(schedule(int(t))) is float for t in EPOCHS[:3])


@pytest.mark.parametrize("schedule, reference", CASES, ids=IDS)
def test_always_a_valid_rate(schedule, reference):
    rates = np.array([schedule(t) for t in range(10_000)])
    assert np.all((rates >= 0) & (rates < 1))


@pytest.mark.parametrize("schedule, reference", CASES, ids=IDS)
def test_config_round_trip_deepcopy_and_equality(schedule, reference):
    rebuilt = assert_config_round_trip(schedule)
    assert rebuilt == schedule and hash(rebuilt) == hash(schedule)
    assert copy.deepcopy(schedule) == schedule
    assert eval(repr(schedule), vars(schedules)) == schedule


def test_curriculum_starts_at_zero_and_approaches_max_rate():
    schedule = schedules.Curriculum(0.4, gamma=1.0)
    assert schedule(0) == 0.0
    assert schedule(5) == pytest.approx(0.4, rel=0.01)  # log(100) < 5
    assert all(schedule(t) < schedule(t + 1) < 0.4 for t in range(30))


@pytest.mark.parametrize("schedule, reference", CASES, ids=IDS)
@pytest.mark.parametrize(
    "epoch, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_bad_epoch(schedule, reference, epoch, error):
    with pytest.raises(error, match=rf"`epoch`.*Received: epoch={epoch}"):
        schedule(epoch)
