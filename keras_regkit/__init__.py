"""keras-regkit: regularization tools that plug into standard Keras 3 models.

Weight penalties for the ordinary `kernel_regularizer=` arguments, and
`regularize()` to add, change or remove penalties on models that already
exist, pretrained ones included. `layers.Dropout` and `layers.DropPath`
follow Keras's `training` flag, can stay on for Monte-Carlo inference
(`mc_predict`) and change their rates during training
(`callbacks.DropoutScheduler`, `schedules`). `shrink` makes a trained
model's weights smaller, as far as its validation data allows, and
`callbacks.ProximalStep` trains L1-type penalties to exact zeros;
`callbacks.GradualPruning` prunes during training, and `compact` removes
the units that pruning or group penalties zeroed from the model.
`callbacks.WeightAveraging` ends training with averaged weights (SWA,
EMA), and `SharpnessAware` wraps a model so that `fit` takes
sharpness-aware (SAM, ASAM) steps.

Example:

>>> import keras
>>> import keras_regkit
>>> model = keras.Sequential([
...     keras.Input((8,)),
...     keras.layers.Dense(16, activation="relu", name="hidden"),
...     keras.layers.Dense(1, name="output"),
... ])
>>> model = keras_regkit.regularize(model, kernel=keras_regkit.L2(1e-3))
>>> sorted(keras_regkit.penalties(model))
['hidden', 'output']
"""

__version__ = "0.1.0.dev0"

import importlib

from keras_regkit import (
    callbacks,
    layers,
    pruning,
    regularizers,
    schedules,
    selectors,
)
from keras_regkit._attach import penalties, regularize
from keras_regkit._compaction import compact, dead_units
from keras_regkit._monte_carlo import mc_predict
from keras_regkit._penalty_plan import PenaltyPlan
from keras_regkit._sharpness_aware import SharpnessAware
from keras_regkit._shrinkage import shrink
from keras_regkit._shrinkage_report import ShrinkageReport, ShrinkageRow
from keras_regkit.regularizers import L1, L2, ElasticNet, ExpAbs, GroupLasso

# Public modules that need an optional package (keras-tuner, matplotlib):
# imported on first use, so that `import keras_regkit` needs neither.
_LAZY_MODULES = ("plot", "tuning")

__all__ = [
    "ElasticNet",
    "ExpAbs",
    "GroupLasso",
    "L1",
    "L2",
    "PenaltyPlan",
    "SharpnessAware",
    "ShrinkageReport",
    "ShrinkageRow",
    "__version__",
    "callbacks",
    "compact",
    "dead_units",
    "layers",
    "mc_predict",
    "penalties",
    "plot",
    "pruning",
    "regularize",
    "regularizers",
    "schedules",
    "selectors",
    "shrink",
    "tuning",
]


def __getattr__(name):
    """Imports `keras_regkit.plot` and `keras_regkit.tuning` when first used."""
    if name in _LAZY_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
