"""Callbacks for `fit`: dropout, stopping, penalties, pruning, averaging."""

from keras_regkit.callbacks._dropout_scheduler import DropoutScheduler
from keras_regkit.callbacks._early_stopping import EarlyStopping
from keras_regkit.callbacks._gradual_pruning import GradualPruning
from keras_regkit.callbacks._penalty_scheduler import PenaltyScheduler
from keras_regkit.callbacks._proximal_step import ProximalStep
from keras_regkit.callbacks._regularization_monitor import (
    RegularizationMonitor,
)
from keras_regkit.callbacks._weight_averaging import WeightAveraging
from keras_regkit.callbacks._weight_shrinkage import WeightShrinkage

__all__ = [
    "DropoutScheduler",
    "EarlyStopping",
    "GradualPruning",
    "PenaltyScheduler",
    "ProximalStep",
    "RegularizationMonitor",
    "WeightAveraging",
    "WeightShrinkage",
]
