"""Tests for keras_regkit._shrink_options: `shrink`'s checked options."""

import dataclasses
import inspect

import pytest

from keras_regkit import L2, shrink
from keras_regkit._shrink_options import ShrinkOptions
from keras_regkit.callbacks import WeightShrinkage

# Arguments and numpy: nothing here depends on the Keras backend.
pytestmark = pytest.mark.backend_independent


def test_shrink_signature_defaults_are_the_options_defaults():
    # Each default is written once, in ShrinkOptions.
    fields = {f.name: f for f in dataclasses.fields(ShrinkOptions)}
    parameters = inspect.signature(shrink).parameters
    assert parameters["method"].default is inspect.Parameter.empty
    assert fields["method"].default is dataclasses.MISSING
    for name, field in fields.items():
        if name != "method":
            assert parameters[name].default == field.default, name
    assert set(parameters) == {"model", "validation_data", *fields}


def test_values_are_stored_in_plain_form():
    options = ShrinkOptions(
        method="prune", levels=[0.5, 0.1, 0.5], tolerance=1, verbose=1
    )
    assert options.levels == (0.1, 0.5)
    assert options.tolerance == 1.0 and isinstance(options.tolerance, float)
    assert options.metric_key == "loss"
    assert not options.finetuning
    assert options.finetune_arguments is None


def test_options_are_frozen():
    options = ShrinkOptions(method="scale")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.method = "prune"


def test_derived_values():
    data = ([1.0], [2.0])
    options = ShrinkOptions(
        method="penalty",
        finetune_data=data,
        regularizer="l2",
        monitor="val_mae",
    )
    assert options.finetuning
    assert options.finetune_arguments == {"x": [1.0], "y": [2.0]}
    assert options.metric_key == "mae"
    assert options.penalty(0.5) == L2(0.5)
    custom = ShrinkOptions(
        method="penalty", finetune_data=data, regularizer=lambda s: L2(2 * s)
    )
    assert custom.penalty(0.5) == L2(1.0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"method": "shrink"}, ValueError, "argument `method`"),
        ({"method": "prune", "levels": [1.0]}, ValueError, r"in \(0, 1\)"),
        ({"method": "scale", "levels": "0.1"}, TypeError, "`levels`"),
        ({"method": "scale", "tolerance": -1}, ValueError, "`tolerance`"),
        ({"method": "scale", "bias": "no"}, TypeError, "`bias`"),
        ({"method": "scale", "batch_size": 0}, ValueError, "`batch_size`"),
        ({"method": "scale", "monitor": 3}, TypeError, "`monitor`"),
        ({"method": "penalty"}, ValueError, "pass `finetune_data`"),
        (
            {"method": "penalty", "finetune_data": (1,), "regularizer": "l3"},
            ValueError,
            "`regularizer`",
        ),
        (
            {"method": "scale", "finetune_data": (1, 2, 3, 4)},
            ValueError,
            "`finetune_data`",
        ),
        ({"method": "prune", "structure": "rows"}, ValueError, "`structure`"),
        (
            {"method": "scale", "structure": "units"},
            ValueError,
            "method='prune' only. Received: method='scale'",
        ),
        (
            {"method": "prune", "structure": "2:4"},
            ValueError,
            "fixed sparsity.*GradualPruning",
        ),
        (
            {"method": "prune", "structure": "units", "bias": True},
            ValueError,
            "leave `bias` False",
        ),
    ],
)
def test_bad_options_are_refused_by_shrink_and_weight_shrinkage(
    kwargs, error, match
):
    with pytest.raises(error, match=match):
        ShrinkOptions(**kwargs)
    with pytest.raises(error, match=match):
        WeightShrinkage(**kwargs)
